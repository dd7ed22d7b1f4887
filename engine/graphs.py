"""CUDA graphs of whole training steps (config `cuda_graphs`): one replay launches the step's thousands of
kernels (forwards, backwards, fused Adam updates) at once, instead of Python and the autograd engine
launching them one by one.

The graphed part of a step is the method's step function, `step(*tensors) -> {name: tensor}`: the batch's
tensors in, the logged values out. The training loop fetches the batch (data loading and augmentation stay
outside the graph) and calls `StepGraph(step)(*batch)` (stepper):

  - the first `warmup` calls run `step` eagerly on a side stream (cuDNN's autotuning, lazy allocations);
  - the next call captures `step` on copies of that batch (static inputs), then replays it;
  - every later call copies its batch into the static inputs and replays.

Each call is exactly one training step, as without graphs: capture records the kernels without running
them, and the replay that follows runs the captured step on that call's batch. Parameters, optimizer
states and batch-norm statistics are updated in place, so checkpoints, validation and resumption see the
same tensors either way. What the captured step computes is fixed at capture: the train/eval switches,
the learning rates and the loss-skip logic are all kernels or constants of the step, as eager.

Requirements (use_cuda_graphs checks them): one process on a CUDA device, no fp16 loss scaler (its step
reads a flag on the host), no torch.compile; fixed batch shapes (a call with other shapes runs eagerly).
"""
from __future__ import annotations

from typing import Callable

import torch

from engine.dist import world_size


def use_cuda_graphs(cfg: dict, device: torch.device) -> tuple[bool, str]:
    """Whether this run's steps are CUDA-graphed, and a line for the log saying so (and why not)."""
    from engine.amp import needs_loss_scaler
    fp16_scaler = needs_loss_scaler(device, cfg["amp"], cfg["amp_dtype"])
    if not cfg.get("cuda_graphs"):
        return False, "CUDA graphs: off (cuda_graphs=false)"
    reasons = [why for bad, why in ((device.type != "cuda", f"device {device.type}"),
                                    (world_size() > 1, f"{world_size()} processes (DDP)"),
                                    (fp16_scaler, "fp16 loss scaler"),
                                    (bool(cfg.get("compile")), "compile=true")) if bad]
    if reasons:
        return False, f"CUDA graphs: not used here ({', '.join(reasons)}); steps run eagerly"
    return True, "CUDA graphs: on (each training step is captured once and replayed)"


class StepGraph:
    """`StepGraph(step, optimizers, enabled)(*tensors)`: step(*tensors) as a replayed CUDA graph (see the
    module docstring); with enabled=False, a plain call. `optimizers`: the ones the step updates (their
    param_groups are marked capturable while the graph is captured, as torch.optim requires; fused Adam
    computes the same either way)."""

    def __init__(self, step: Callable[..., dict[str, torch.Tensor]], optimizers: list[torch.optim.Optimizer],
                 enabled: bool, warmup: int = 3):
        self.step, self.optimizers, self.enabled, self.warmup = step, optimizers, enabled, warmup
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_in: list[torch.Tensor] = []
        self.static_out: dict[str, torch.Tensor] = {}
        self.shapes: list[tuple] = []

    def __call__(self, *tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.enabled:
            return self.step(*tensors)
        self.calls += 1
        if self.graph is None and self.calls <= self.warmup:
            return self._side_stream(*tensors)
        if self.graph is None:
            self._capture(tensors)
        elif [(t.shape, t.dtype, t.stride()) for t in tensors] != self.shapes:
            return self._side_stream(*tensors)  # another batch shape: this step runs eagerly
        for static, t in zip(self.static_in, tensors):
            static.copy_(t, non_blocking=True)
        self.graph.replay()
        # The outputs are overwritten by the next replay: hand out copies (a few scalars).
        return {k: v.clone() for k, v in self.static_out.items()}

    def _side_stream(self, *tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        """An eager step on a side stream (as torch.cuda.graphs asks for the warm-up before a capture)."""
        main = torch.cuda.current_stream()
        side = torch.cuda.Stream()
        side.wait_stream(main)
        with torch.cuda.stream(side):
            out = self.step(*tensors)
        main.wait_stream(side)
        for t in [*tensors, *out.values()]:
            t.record_stream(main)
        return out

    def _capture(self, tensors: tuple[torch.Tensor, ...]) -> None:
        self.shapes = [(t.shape, t.dtype, t.stride()) for t in tensors]
        self.static_in = [t.clone(memory_format=torch.preserve_format) for t in tensors]
        torch.cuda.synchronize()
        groups = [g for opt in self.optimizers for g in opt.param_groups]
        before = [g.get("capturable", False) for g in groups]
        for g in groups:
            g["capturable"] = True
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: the pack's loader thread may pin host memory meanwhile; only this thread's
            # calls must be capture-safe.
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self.static_out = self.step(*self.static_in)
        finally:
            for g, flag in zip(groups, before):
                g["capturable"] = flag
        self.graph = graph


def stepper(step: Callable[..., dict[str, torch.Tensor]], next_batch: Callable[[], tuple[torch.Tensor, ...]],
            optimizers: list[torch.optim.Optimizer] | None, enabled: bool) -> Callable[[int], dict]:
    """The training loop's step(i): the next batch from next_batch(), step(*batch) on it (replayed as a CUDA
    graph when `enabled` and the step is graph-safe, i.e. `optimizers` names the ones it updates; None: always
    eager), and the number of images it used (4-D tensors, for the logged images/s)."""
    graph = StepGraph(step, optimizers or [], enabled and optimizers is not None)

    def one(i: int) -> dict:
        batch = next_batch()
        out = graph(*batch)
        out["images"] = sum(t.shape[0] for t in batch if t.dim() == 4)
        return out
    return one
