"""Multi-process training with torchrun: 2 CPU processes (gloo) against 1 process on the same global batch."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import torch
import yaml

from conftest import PY, REPO, run, tiny_config

TORCHRUN = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _env() -> dict:
    # tests/dist_worker.py imports the project's modules: run it with the repository on the path.
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def records(tmp_path_factory, tiny_demo):
    """{1: single-process record, 2: [rank 0, rank 1]} from tests/dist_worker.py."""
    from datasets.packed import build_pack
    base = tmp_path_factory.mktemp("dist")
    pack = base / "pack"
    images = sorted(str(p) for p in (tiny_demo / "FaceForensics++" / "train_set").rglob("*.png"))[:24]
    build_pack(images, pack, 16, quiet=True)
    out = {}
    for world, cmd in ((1, [PY]), (2, TORCHRUN)):
        folder = base / f"world{world}"
        folder.mkdir()
        res = subprocess.run(cmd + [str(REPO / "tests" / "dist_worker.py"), str(folder), str(pack)], cwd=REPO,
                             env=_env(), capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        ranks = [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(world)]
        out[world] = ranks[0] if world == 1 else ranks
    return out


def test_supcon_over_gathered_features_equals_the_single_process_loss(records):
    one, ranks = records[1]["supcon"], [r["supcon"] for r in records[2]]
    assert records[2][0]["world"] == 2
    for r in ranks:
        torch.testing.assert_close(r["loss"], one["loss"])
        # DDP averages the parameter gradient over ranks: it equals the single-process gradient.
        torch.testing.assert_close(r["weight_grad"], one["weight_grad"])
    # Each rank's feature gradient is its slice of the whole-batch gradient, times the number of ranks
    # (every rank's copy of the loss sends it a gradient; DDP's averaging divides the parameter gradient back).
    torch.testing.assert_close(torch.cat([r["feat_grad"] for r in ranks]) / 2, one["feat_grad"])


def test_mpl_ranks_stay_identical_and_match_one_process(records):
    one, (r0, r1) = records[1]["mpl"], records[2]
    for step, (a, b, single) in enumerate(zip(r0["mpl"], r1["mpl"], one)):
        assert torch.equal(a["h"], b["h"]), f"h differs between ranks at step {step}"
        torch.testing.assert_close(a["h"], single["h"], atol=1e-6, rtol=1e-4)
        for name in ("teacher", "t_cls", "student", "s_cls"):
            for key, value in a["params"][name].items():
                # weights identical on every rank after each step...
                assert torch.equal(value, b["params"][name][key]), f"{name}.{key} differs between ranks at step {step}"
                # ...and equal to one process with the same global batch (BN-free model), up to rounding
                torch.testing.assert_close(value, single["params"][name][key], atol=1e-5, rtol=1e-4)
    assert not torch.equal(one[-1]["params"]["t_cls"]["fc.weight"], one[0]["params"]["t_cls"]["fc.weight"])


def test_packed_batches_split_the_global_batch_between_ranks(records):
    one, (r0, r1) = records[1]["packed"], records[2]
    for key in ("v1", "v2", "labels"):
        both = torch.cat([r0["packed"][key], r1["packed"][key]])
        torch.testing.assert_close(both, one[key])


@pytest.mark.slow
def test_torchrun_trains_supconmpl_on_two_processes(tiny_demo, tmp_path):
    cfg = tiny_config(tiny_demo, tmp_path / "runs")
    cfg["mpl"]["batch_labeled"], cfg["mpl"]["batch_unlabeled"] = 4, 8
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    # As users run it: NPROC=2 makes the script's training line go through torchrun; evaluation follows.
    res = subprocess.run(["bash", "train_supconmpl_model.sh", "--config", str(path), "--device", "cpu"], cwd=REPO,
                         env={**os.environ, "NPROC": "2"}, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "AUC" in res.stdout  # the evaluation lines ran on the trained model
    out = tmp_path / "runs" / "tiny"
    assert (out / "supconmpl" / "mpl_supcon_encoder.tar").is_file()
    assert (out / "supconmpl" / "checkpoints" / "FINISHED").is_file()
    log = (out / "supconmpl" / "log.txt").read_text()
    assert log.count("mpl step 2/2") == 1  # rank 0 logs, once
    # A global batch that does not split evenly is refused with one line.
    res = run(TORCHRUN + ["train_pt.py", "--config", str(path), "--device", "cpu", "pt.batch_size=7",
                          "--run-name", "odd"], timeout=300)
    assert res.returncode != 0 and "not divisible by the number of processes (2)" in res.stderr
    shutil.rmtree(out, ignore_errors=True)
