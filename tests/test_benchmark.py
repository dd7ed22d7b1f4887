"""The benchmark, run as a user would, at a size a CPU finishes in seconds."""
from __future__ import annotations

import re

import pytest

from conftest import command


@pytest.mark.slow
def test_benchmark_times_ours_and_the_reference_style_steps(tmp_path):
    out = tmp_path / "report.md"
    res = command(["-m", "bench.benchmark", "--device", "cpu", "--backbone", "test_resnet", "--img-size", "32", "--batch", "16",
               "--batch-labeled", "4", "--batch-unlabeled", "8", "--images", "64", "--source-size", "48",
               "--steps", "2", "--warmup", "1", "--window", "1", "--ref-steps", "1", "--workers", "0",
               "--data-batches", "2", "--data", str(tmp_path / "data"), "--md", str(out)], timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    last = res.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"SupCon-MPL step speed-up over reference-style: \d+\.\d\dx", last), last
    report = out.read_text()
    for row in ("| pt | ours |", "| pt | reference-style |", "| supcon | ours |", "| mpl | reference-style |",
                "| PIL per image (reference-style) | 0 |", "| pack + batched augmentation on the CPU (ours) | 0 |"):
        assert row in report
    assert "backbone test_resnet, 32 px" in report and "cores" in report
    # The packed images are reused by a second run (nothing regenerated).
    assert (tmp_path / "data" / "pack-src48-32" / "meta.json").is_file()


def test_benchmark_rejects_an_unknown_pipeline():
    res = command(["-m", "bench.benchmark", "--device", "cpu", "--pipelines", "pt,fast"])
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1].startswith("error: --pipelines takes")
