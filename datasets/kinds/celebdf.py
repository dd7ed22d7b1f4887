"""Celeb-DF crops, one folder per video: {kind: celebdf, root, folders: [...], test_list: auto|off|PATH}:
youtube_real_imgs / Celeb-real / YouTube-real (real), fake_imgs / Celeb-synthesis (fake). With Celeb-DF-v2's
official List_of_testing_videos.txt, test sets get the listed videos and training roles the others. A video
'id0_id1_0003' shows identities id0 and id1."""
from __future__ import annotations

import sys
from pathlib import Path

from datasets.index import Sample, Scan
from datasets.kinds.base import SourceKind, require_dir, video_folders
from datasets.videos import listed_celebdf, name_of
from utils import UserError, resolve_path

CELEBDF_FOLDERS = {"youtube_real_imgs": 0, "Celeb-real": 0, "YouTube-real": 0, "fake_imgs": 1, "Celeb-synthesis": 1}
CELEBDF_TEST_LIST = "List_of_testing_videos.txt"
LAYOUT = ("<root>/{youtube_real_imgs,fake_imgs,Celeb-real,Celeb-synthesis,YouTube-real}/<video>/<frame>.png"
          f" (and Celeb-DF-v2's {CELEBDF_TEST_LIST})")


def _celebdf_source(root: Path, folders: list[str] | None, scan: Scan) -> list[Sample]:
    require_dir(root, "Celeb-DF", LAYOUT)
    present = [f for f in CELEBDF_FOLDERS if (root / f).is_dir()] if folders is None else folders
    if not present:
        raise UserError(f"no Celeb-DF folders in {root} (expected layout: {LAYOUT})")
    samples = []
    for folder in present:
        if folder not in CELEBDF_FOLDERS:
            raise UserError(f"unknown Celeb-DF folder '{folder}' ({', '.join(CELEBDF_FOLDERS)})")
        require_dir(root / folder, f"Celeb-DF '{folder}'", LAYOUT)
        label = CELEBDF_FOLDERS[folder]
        domain = "CelebDF-fake" if label else "CelebDF-real"
        for v, files in video_folders(root / folder, scan, "Celeb-DF"):
            video = f"celebdf:{folder}/{v}"
            samples += [Sample(f, label, domain, video, "celebdf") for f in files]
    return samples


def celebdf_test_list(path: Path) -> set[tuple[int, str]]:
    """Celeb-DF-v2's official test list ("1 YouTube-real/00170.mp4": 1 = real, 0 = synthesised) as
    {(label here: 0 real / 1 fake, video name)}; a malformed line is a one-line UserError naming the line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read the Celeb-DF test list {path}: {err}") from None
    listed = set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        folder, _, name = parts[-1].replace("\\", "/").rpartition("/") if len(parts) == 2 else ("", "", "")
        if len(parts) != 2 or parts[0] not in ("0", "1") or not name:
            raise UserError(f"{path} line {n}: expected '<1 real|0 fake> <folder>/<video>.mp4', got {line.strip()!r}")
        label = 1 - int(parts[0])
        if folder in CELEBDF_FOLDERS and CELEBDF_FOLDERS[folder] != label:
            raise UserError(f"{path} line {n}: {parts[0]} ({'real' if label == 0 else 'fake'}) for a video in "
                            f"'{folder}', a {'fake' if label == 0 else 'real'} folder")
        listed.add((label, Path(name).stem))
    if not listed:
        raise UserError(f"the Celeb-DF test list {path} is empty")
    return listed


def celebdf_official(samples: list[Sample], spec: dict, role: str | None) -> list[Sample] | None:
    """With Celeb-DF-v2's official test list (spec `test_list`: auto = <root>/List_of_testing_videos.txt if
    there, a path = that file, required; off = never): the listed videos for the test role, the others for
    training roles; None when no list is used. The official split is by video (test identities also appear
    in training), so these videos are their own identity group: their ids read `celebdf-list:<folder>/<video>`."""
    choice = spec.get("test_list", "auto")
    if choice in ("off", False, None) or role is None:
        return None
    path = Path(spec["root"]) / CELEBDF_TEST_LIST if choice == "auto" else resolve_path(str(choice))
    if not path.is_file():
        if choice == "auto":
            return None
        raise UserError(f"Celeb-DF test list not found: {path} (it ships with Celeb-DF-v2; or test_list: auto/off)")
    listed = celebdf_test_list(path)
    found = {(s.label, name_of(s.video)) for s in samples if s.video}
    missing = listed - found
    if missing and role == "test":
        print(f"warning: {len(missing)} of the {len(listed)} videos of {path} have no crops under {spec['root']}, "
              f"e.g. {sorted(v for _, v in missing)[0]}", file=sys.stderr)
    keep = role == "test"
    return [Sample(s.path, s.label, s.domain, listed_celebdf(s.video), s.source)
            for s in samples if s.video and ((s.label, name_of(s.video)) in listed) == keep]


def _celebdf_identities(video: str) -> tuple[str, ...]:
    """Celeb-DF 'id0_id1_0003' -> (id0, id1); YouTube-real videos have no id: the video itself."""
    ids = [p for p in name_of(video).split("_") if p.startswith("id")]
    return tuple(f"celebdf:{i}" for i in ids) or (video,)


KIND = SourceKind(frozenset({"root", "folders", "test_list"}), LAYOUT,
                  lambda root, spec, scan: _celebdf_source(root, spec.get("folders"), scan),
                  identities=_celebdf_identities, official_split=celebdf_official)
