"""CUDA graphs of training steps (engine/graphs.py): the same updates as eager steps. The CUDA tests run on
a GPU machine (bench/gpu_profile.sh runs them there); on a CPU only the eager path and the checks run."""
from __future__ import annotations

import re

import pytest
import torch

from conftest import command
from engine.graphs import StepGraph, use_cuda_graphs
from engine.update import Updater, make_optimizer

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
BASE = {"cuda_graphs": True, "amp": True, "amp_dtype": "auto", "compile": False}


def test_graphs_are_used_only_where_they_can_be():
    on, note = use_cuda_graphs({**BASE, "cuda_graphs": False}, torch.device("cpu"))
    assert not on and note == "CUDA graphs: off (cuda_graphs=false)"
    on, note = use_cuda_graphs(BASE, torch.device("cpu"))
    assert not on and "device cpu" in note and "run eagerly" in note
    on, note = use_cuda_graphs({**BASE, "compile": True}, torch.device("cpu"))
    assert not on and "compile=true" in note


def _linear_run(device: torch.device, graphs: bool, batches: list[tuple[torch.Tensor, torch.Tensor]]):
    """A small regression trained with fused Adam through Updater, step by step as the loop does."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)).to(device)
    opt = make_optimizer(model.parameters(), 1e-2)
    logs = []
    update = Updater({"opt": opt}, False, 10, logs.append)

    def core(x, y):
        loss = torch.nn.functional.mse_loss(model(x).squeeze(1), y)
        update(opt, loss, "loss")
        return {"loss": loss.detach()}
    it = iter(batches)
    graph = StepGraph(core, [opt], graphs, warmup=2)
    losses = [float(graph(*next(it))["loss"]) for _ in range(len(batches))]
    update.check(len(batches))
    return losses, [p.detach().cpu() for p in model.parameters()], logs, update.nonfinite


def _batches(device, n=8, nan_at=None):
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(n):
        x, y = torch.randn(32, 8, generator=g), torch.randn(32, generator=g)
        if i == nan_at:
            x[0, 0] = float("nan")
        out.append((x.to(device), y.to(device)))
    return out


def test_step_graph_off_is_the_plain_step_and_counts_skipped_updates():
    batches = _batches(torch.device("cpu"), nan_at=5)
    losses, _, logs, skips = _linear_run(torch.device("cpu"), False, batches)
    again = _linear_run(torch.device("cpu"), False, batches)[0]
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(again), rtol=0, atol=0, equal_nan=True)
    assert losses[5] != losses[5] and all(v == v for i, v in enumerate(losses) if i != 5)
    assert skips == 1 and "1 update(s) skipped" in logs[0]


@cuda
def test_graphed_steps_update_like_eager_steps_and_count_skipped_updates():
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = False
    batches = _batches(device, n=8, nan_at=5)  # step 6 (after the capture at step 3) has a NaN loss
    eager_losses, eager_params, eager_logs, eager_skips = _linear_run(device, False, batches)
    graph_losses, graph_params, graph_logs, graph_skips = _linear_run(device, True, batches)
    torch.testing.assert_close(torch.tensor(graph_losses), torch.tensor(eager_losses), rtol=1e-5, atol=1e-6,
                               equal_nan=True)
    assert graph_losses[5] != graph_losses[5]  # the NaN step, skipped
    for p, q in zip(eager_params, graph_params):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert eager_skips == graph_skips == 1
    assert graph_logs and "1 update(s) skipped" in graph_logs[0]


@cuda
@pytest.mark.slow
def test_training_steps_with_graphs_log_the_same_values_as_eager_steps(tmp_path):
    """pt, SupCon and SupCon-MPL steps of a small ResNet in bf16: eager, eager again, graphed."""
    out = tmp_path / "check.md"
    res = command(["-m", "bench.benchmark", "--device", "cuda", "--backbone", "test_resnet", "--img-size", "32",
               "--batch", "64", "--batch-labeled", "16", "--batch-unlabeled", "32", "--images", "128",
               "--source-size", "48", "--data", str(tmp_path / "data"), "--check-graphs", "6", "--md", str(out)],
              timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = re.findall(r"^\| (pt|supcon|mpl) \| (\w+) \| [^|]+ \| [^|]+ \| ([0-9.e+-]+) \| ([0-9.e+-]+) \|$",
                      out.read_text(), re.M)
    assert {r[0] for r in rows} == {"pt", "supcon", "mpl"}
    for pipeline, key, again, graphs in rows:
        if key in ("loss", "t_loss", "t_supcon", "s_supcon", "s_cls"):
            assert float(graphs) <= max(2e-2, 4 * float(again)), (pipeline, key, graphs, again)


@cuda
@pytest.mark.slow
def test_supconmpl_training_with_graphs_logs_the_eager_losses(tiny_demo, tmp_path):
    """train_supconmpl.py end to end on the GPU (teacher, MPL, fine-tuning; checkpoints every 2 steps):
    with cuda_graphs=true every stage's logged losses follow the eager run's."""
    import json

    import yaml

    from conftest import tiny_config
    logs = {}
    for graphs in (False, True):
        cfg = tiny_config(tiny_demo, tmp_path / f"runs-{graphs}", device="cuda", cuda_graphs=graphs,
                          checkpoint_every=2)
        cfg["supcon"].update(steps=8, classifier_steps=6)
        cfg["mpl"].update(steps=8, finetune_steps=6, finetune_classifier_steps=6)
        path = tmp_path / f"tiny-{graphs}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        res = command(["train_supconmpl.py", "--config", str(path)], timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        text = (tmp_path / f"runs-{graphs}" / "tiny" / "supconmpl" / "log.txt").read_text()
        assert ("CUDA graphs: on" in text) == graphs
        rows = []
        for method in ("supcon", "supconmpl"):
            with open(tmp_path / f"runs-{graphs}" / "tiny" / method / "train_log.jsonl") as f:
                rows += [json.loads(line) for line in f]
        logs[graphs] = {(r["stage"], r["step"], k): v for r in rows for k, v in r.items()
                        if k in ("loss", "t_loss", "s_supcon", "t_supcon", "s_cls")}
    assert logs[True].keys() == logs[False].keys() and len(logs[True]) > 40
    for key, eager in logs[False].items():
        assert logs[True][key] == pytest.approx(eager, rel=5e-2, abs=1e-3), key
