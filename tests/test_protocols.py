"""Real dataset layouts, protocols, identity-safe splits, the index cache and `python -m datasets describe`."""
import json
import shutil

import cv2
import numpy as np
import pytest
import yaml

from conftest import command, train_and_evaluate
from datasets.protocols import describe, protocol_config, protocol_sets
from datasets.sources import build_source
from datasets.splits import identity_groups
from utils import UserError

METHODS = ("Real", "Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
FRAMES = 2


def img(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((8, 8, 3), value, np.uint8))


def ff_tree(root, train_pairs=4, test_pairs=2):
    """FF++ crops with FF++'s pairing: fake videos a_b and b_a for each pair of ids."""
    ids = {"train_set": range(0, 2 * train_pairs), "test_set": range(100, 100 + 2 * test_pairs)}
    for subset, rng in ids.items():
        rng = list(rng)
        for a, b in zip(rng[0::2], rng[1::2]):
            for t, s in ((a, b), (b, a)):
                for method in METHODS:
                    video = f"{t:03d}" if method == "Real" else f"{t:03d}_{s:03d}"
                    for f in range(FRAMES):
                        img(root / subset / method / video / f"{f:04d}.png")
    return root


def dfdc_tree(root):
    """DFDC crops + the parts' metadata; 'lost' has no metadata entry."""
    parts = {0: {"r0": ("REAL", None), "f0": ("FAKE", "r0"), "f1": ("FAKE", "r0"), "r1": ("REAL", None),
                 "f2": ("FAKE", "r1")},
             10: {"r9": ("REAL", None), "f9": ("FAKE", "r9")}}
    for part, videos in parts.items():
        meta = {f"{v}.mp4": {"label": lab, **({"original": f"{o}.mp4"} if o else {})} for v, (lab, o) in videos.items()}
        folder = root / "videos" / f"dfdc_train_part_{part}"
        folder.mkdir(parents=True)
        (folder / "metadata.json").write_text(json.dumps(meta))
        for v in videos:
            for f in range(FRAMES):
                img(root / "imgs" / v / f"{f}.png")
    for f in range(FRAMES):
        img(root / "imgs" / "lost" / f"{f}.png")
    return root


def celebdf_tree(root):
    for folder, videos in {"Celeb-real": ["id0_0000", "id1_0000", "id2_0000", "id3_0000"],
                           "Celeb-synthesis": ["id0_id1_0000", "id1_id0_0000", "id2_id3_0000", "id3_id2_0001"],
                           "YouTube-real": ["00000", "00001"]}.items():
        for v in videos:
            for f in range(FRAMES):
                img(root / folder / v / f"{f}.png")
    return root


@pytest.fixture
def trees(tmp_path):
    ff_tree(tmp_path / "FF")
    dfdc_tree(tmp_path / "DFDC")
    celebdf_tree(tmp_path / "CelebDF")
    for i in range(3):
        img(tmp_path / "StyleGAN" / f"{i}.png")
        img(tmp_path / "CelebA" / f"{i}.jpg")
    paths = {"ff": str(tmp_path / "FF"), "dfdc_imgs": str(tmp_path / "DFDC" / "imgs"),
             "dfdc_videos": str(tmp_path / "DFDC" / "videos"), "celebdf": str(tmp_path / "CelebDF"),
             "stylegan": str(tmp_path / "StyleGAN"), "celeba": str(tmp_path / "CelebA")}
    (tmp_path / "paths.yaml").write_text(yaml.safe_dump(paths))
    return tmp_path


def overrides(tmp_path):
    return [f"data.paths_file={tmp_path / 'paths.yaml'}", f"data.index_dir={tmp_path / 'index'}"]


@pytest.mark.parametrize("left_out", ["df", "f2f", "fs", "nt"])
def test_ff_protocols_count_exactly_what_the_tree_holds(trees, left_out):
    d = describe(protocol_config(f"ff_wo_{left_out}", overrides(trees)), f"ff_wo_{left_out}")
    name = {"df": "Deepfakes", "f2f": "Face2Face", "fs": "FaceSwap", "nt": "NeuralTextures"}[left_out]
    lab, unl = d["sets"]["labeled"], d["sets"]["unlabeled"]
    # 8 train ids in 4 pairs, half of the pairs labeled: 4 ids -> 4 real + 3 methods x 4 fake videos.
    assert (lab["videos"], lab["real"], lab["fake"]) == (16, 4 * FRAMES, 12 * FRAMES)
    assert name not in lab["domains"] and lab["domains"]["Real"] == 4 * FRAMES
    assert (unl["videos"], unl["real"], unl["fake"]) == (20, 4 * FRAMES, 16 * FRAMES)
    assert unl["domains"][name] == 4 * FRAMES
    test = d["sets"][name]
    assert (test["role"], test["split"], test["images"], test["videos"]) == ("test", "unknown", 8 * FRAMES, 8)
    assert all(d["sets"][m]["split"] == "known" for m in METHODS[1:] if m != name)
    pool = d["sets"]["Known"]  # Table 1's pooled known row: the three known methods and Real together
    assert (pool["split"], pool["real"], pool["fake"]) == ("known", 4 * FRAMES, 12 * FRAMES)
    assert name not in pool["domains"]
    assert d["overlapping_videos"] == 0


def test_sin_grouped_protocol_counts_and_no_overlap(trees, capsys):
    d = describe(protocol_config("sin_grouped", overrides(trees)), "sin_grouped")
    assert "1 DFDC video(s)" in capsys.readouterr().err  # 'lost' has no metadata: reported, left out
    sets = d["sets"]
    assert sets["DFDC"] == {"role": "test", "split": "known", "images": 2 * FRAMES, "videos": 2, "real": FRAMES,
                            "fake": FRAMES, "unknown": 0, "domains": {"DFDC-fake": FRAMES, "DFDC-real": FRAMES}}
    # DFDC part 0 holds 2 identity groups (r0 with f0, f1; r1 with f2): one labeled, one unlabeled.
    dfdc_lab = sets["labeled"]["domains"].get("DFDC-real", 0) + sets["labeled"]["domains"].get("DFDC-fake", 0)
    dfdc_unl = sets["unlabeled"]["domains"].get("DFDC-real", 0) + sets["unlabeled"]["domains"].get("DFDC-fake", 0)
    assert dfdc_lab + dfdc_unl == 5 * FRAMES and dfdc_lab and dfdc_unl
    # Celeb-DF: split by video (its identity groups collapse), half of each class labeled; all 10 videos used once.
    celeb_lab = sets["labeled"]["domains"].get("CelebDF-real", 0) + sets["labeled"]["domains"].get("CelebDF-fake", 0)
    assert celeb_lab + sets["CelebDF"]["images"] == 10 * FRAMES
    # The authors' post-generation pool: StyleGAN against FF++ test Original, every second image (of <= 51,200),
    # both classes capped at the smaller one's size.
    assert (sets["StyleGAN"]["fake"], sets["StyleGAN"]["real"]) == (2, 2)
    assert sets["StyleGAN-CelebA"]["real"] == 3 and sets["StyleGAN-CelebA"]["fake"] == 3
    # One known pool: FF++ test Real + DF, F2F, FS, DFDC part 10 and the second half of Celeb-DF.
    known = sets["Known"]
    assert known["images"] == 4 * 4 * FRAMES + sets["DFDC"]["images"] + sets["CelebDF"]["images"]
    assert known["split"] == "known" and "NeuralTextures" not in known["domains"]
    assert "NeuralTextures" not in sets["unlabeled"]["domains"]
    assert d["overlapping_videos"] == 0


def test_identity_groups_keep_pairs_and_originals_together(trees):
    data = {"labeled_fraction": 0.5, "index_dir": None, "paths_file": None}
    ff = build_source({"kind": "ff", "root": str(trees / "FF"), "subset": "train_set"}, data, 0)
    groups = identity_groups(ff)
    assert groups["ff:Deepfakes/000_001"] == groups["ff:Real/001"] == groups["ff:FaceSwap/001_000"]
    assert groups["ff:Real/000"] != groups["ff:Real/002"]
    celeb = build_source({"kind": "celebdf", "root": str(trees / "CelebDF")}, data, 0)
    groups = identity_groups(celeb)
    assert groups["celebdf:Celeb-synthesis/id0_id1_0000"] == groups["celebdf:Celeb-real/id1_0000"]


def test_describe_cli_json_and_exit_status(trees, tmp_path):
    out = tmp_path / "d.json"
    res = command(["-m", "datasets", "describe", "--protocol", "ff_wo_nt", "--paths", str(trees / "paths.yaml"),
               "--json", str(out), f"data.index_dir={tmp_path / 'index'}"])
    assert res.returncode == 0, res.stderr
    assert "overlap between labeled, unlabeled, val and test: none" in res.stdout
    d = json.loads(out.read_text())
    assert d["protocol"] == "ff_wo_nt" and set(d) == {"protocol", "sets", "groups", "overlapping_videos", "overlap"}
    assert set(d["sets"]["labeled"]) == {"role", "split", "images", "videos", "real", "fake", "unknown", "domains"}
    # A video copied from train into test is an overlap: exit status 1.
    import shutil
    shutil.copytree(trees / "FF" / "train_set" / "Real" / "000", trees / "FF" / "test_set" / "Real" / "000")
    res = command(["-m", "datasets", "describe", "--protocol", "ff_wo_nt", "--paths", str(trees / "paths.yaml"),
               f"data.index_dir={tmp_path / 'index'}"])
    assert res.returncode == 1 and "IN MORE THAN ONE ROLE" in res.stdout


def test_missing_root_names_the_key_and_layout(tmp_path):
    res = command(["-m", "datasets", "describe", "--protocol", "sin", "--paths", str(tmp_path / "none.yaml")])
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "dataset root 'ff' is not set" in res.stderr and "SUPCON_FF" in res.stderr and "train_set" in res.stderr


def test_env_and_cli_override_the_paths_file(trees, monkeypatch):
    cfg = protocol_config("ff_wo_nt", [f"data.index_dir={trees / 'index'}", "data.paths_file=none.yaml"])
    monkeypatch.setenv("SUPCON_FF", str(trees / "FF"))
    assert describe(cfg, "x")["sets"]["labeled"]["images"] > 0
    monkeypatch.setenv("SUPCON_FF", str(trees / "nowhere"))
    cfg["data"]["paths"] = {"ff": str(trees / "FF")}  # data.paths.ff=... wins over the environment
    assert describe(cfg, "x")["sets"]["labeled"]["images"] > 0


def test_index_cache_is_plain_csv_and_rebuilt_when_the_tree_changes(trees):
    data = {"labeled_fraction": 0.5, "index_dir": str(trees / "index"), "paths_file": None}
    spec = {"kind": "ff", "root": str(trees / "FF"), "subset": "train_set", "methods": ["Real"]}
    first = build_source(spec, data, 0)
    (index,) = [p for p in (trees / "index").glob("ff-*.csv") if not p.name.endswith(".dirs.csv")]
    assert index.read_text().splitlines()[0] == "path,label,source,domain,video"
    assert build_source(spec, data, 0) == first  # from the cache
    img(trees / "FF" / "train_set" / "Real" / "000" / "0009.png")
    assert len(build_source(spec, data, 0)) == len(first) + 1
    (trees / "FF" / "train_set" / "Real" / "000" / "0009.png").unlink()
    assert build_source(spec, data, 0) == first


@pytest.mark.slow
# The four ff_wo_* configs differ only in the left-out family, whose sets are counted exactly above
# (test_ff_protocols_count_exactly_what_the_tree_holds): one of them end to end, and sin.
@pytest.mark.parametrize("protocol", ["ff_wo_nt", "sin"])
def test_protocol_scripts_run_on_generated_trees(trees, tmp_path, protocol):
    res = train_and_evaluate("supconmpl", "--config", f"configs/{protocol}.yaml", *overrides(trees),
               f"out_dir={tmp_path / 'runs'}", "backbone=test_resnet", "pretrained=none", "img_size=16",
               "workers=0", "supcon.steps=2", "supcon.batch_size=4", "supcon.classifier_steps=1",
               "supcon.classifier_batch_size=4", "mpl.steps=2", "mpl.batch_labeled=4", "mpl.batch_unlabeled=4",
               "mpl.finetune_steps=1", "mpl.finetune_classifier_steps=1", "data.frames_scale=0.0001")
    assert res.returncode == 0, res.stderr
    (run_dir,) = (tmp_path / "runs").glob(f"{protocol}-*")  # named after the config and the overrides
    results = json.loads((run_dir / "supconmpl" / "results.json").read_text())
    expected = protocol_config(protocol, overrides(trees))["data"]["test"]
    assert list(results) == ["weights", "produced_by"] + [t["name"] for t in expected]
    assert [results[t["name"]]["split"] for t in expected] == [t["split"] for t in expected]
    assert results["NeuralTextures"]["video"]["n"] == 8 and results["NeuralTextures"]["n"] == 8 * FRAMES
    assert "vAUC" in res.stdout
    splits = (run_dir / "supconmpl" / "splits.csv").read_text().splitlines()
    assert splits[0] == "video,group,set,role,label,domain,source,frames"
    assert {row.split(",")[3] for row in splits[1:]} == {"labeled", "unlabeled", "test"}


def test_unknown_protocol_is_a_user_error():
    with pytest.raises(UserError, match="unknown protocol 'nope'"):
        protocol_config("nope")


def celebdf_v2_tree(root, frames=3):
    """Celeb-DF-v2's naming: celebrities' real videos id<i>_<n>, fakes id<a>_id<b>_<n> whose pairs chain
    celebrities 0-15 into one identity component (as the real list does), YouTube-real videos of no one."""
    pairs = [(i, i + 1) for i in range(15)] + [(16, 17), (18, 19)]
    videos = {"Celeb-real": [f"id{i}_{n:04d}" for i in range(20) for n in range(3)],
              "Celeb-synthesis": [f"id{a}_id{b}_{n:04d}" for a, b in pairs for n in range(3)],
              "YouTube-real": [f"{n:05d}" for n in range(10)]}
    for folder, names in videos.items():
        for v in names:
            for f in range(frames):
                img(root / folder / v / f"{f}.png")
    return {folder: len(names) for folder, names in videos.items()}


@pytest.mark.parametrize("seed", [777, 778, 779])
def test_the_authors_sin_frames_pools_and_celebdf_halves(trees, seed):
    """Issue 33: labeled = seeded random frames (the authors' counts, scaled to the tree), unlabeled = the other
    frames of the same FF++ and DFDC videos, Celeb-DF halves by video within 10 points of its real/fake
    proportion, the post-generation pool balanced, and no image, test video or test identity in training."""
    shutil.rmtree(trees / "CelebDF")
    counts = celebdf_v2_tree(trees / "CelebDF")
    cfg = protocol_config("sin", [*overrides(trees), f"seed={seed}", "data.frames_scale=0.0001"])
    sets = protocol_sets(cfg)
    lab, unl = sets["labeled"][2], sets["unlabeled"][2]
    ff_lab = [s for s in lab if s.source.startswith("ff")]
    ff_unl = [s for s in unl if s.source.startswith("ff")]
    ff_all = 4 * 4 * 2 * FRAMES  # 8 train ids: Real 8 videos + 3 methods x 8, FRAMES each
    assert len(ff_lab) == 26 and len(ff_lab) + len(ff_unl) == ff_all  # 256,000 x 0.0001 = 26 frames
    assert {s.path for s in ff_lab}.isdisjoint(s.path for s in ff_unl)
    assert {s.video for s in ff_unl} & {s.video for s in ff_lab}  # the same videos give frames to both
    # Celeb-DF (at a scale where its 128,000 frames are 128 of the ~180 of its first half)
    big = protocol_sets(protocol_config("sin", [*overrides(trees), f"seed={seed}", "data.frames_scale=0.001"]))
    celeb = [s for s in big["labeled"][2] if s.source == "celebdf"]
    celeb_test = [s for s in big["Known"][2] if s.source == "celebdf"]
    fake_share = counts["Celeb-synthesis"] / sum(counts.values())
    for part in (celeb, celeb_test):
        assert abs(sum(s.label for s in part) / len(part) - fake_share) < 0.10, (seed, len(part))
    assert len(celeb) == 128 and {s.path for s in celeb}.isdisjoint(s.path for s in celeb_test)
    pool = sets["StyleGAN"][2]
    assert sum(s.label for s in pool) == sum(1 - s.label for s in pool) > 0
    from datasets.protocols import overlap
    assert len(overlap(cfg, sets)) == 0


def test_a_split_by_identity_that_collapses_stops_with_the_fix(trees):
    shutil.rmtree(trees / "CelebDF")
    celebdf_v2_tree(trees / "CelebDF")
    spec = {"kind": "celebdf", "root": str(trees / "CelebDF"), "videos": "labeled", "test_list": "off"}
    data = {"labeled_fraction": 0.5, "index_dir": None, "paths_file": None}
    with pytest.raises(UserError, match=r"one identity group holds 7\d% of its 121 videos .*split_by: video"):
        build_source(spec, data, 0, "labeled")
