"""Devices and processes: one code path for 1 or N processes.

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; without it these helpers are identities. Batch sizes in
configs are global: each of N ranks trains on 1/N of every batch.
"""
from __future__ import annotations

import os

import torch

from utils import UserError


def get_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}' (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{name}' asked for, but CUDA is not available on this machine")
    return device


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    return rank_world()[1]


def setup_device(cfg: dict) -> torch.device:
    """This process's device; under torchrun also joins the process group (NCCL on GPUs, gloo on CPUs)."""
    device = get_device(cfg["device"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest convolutions
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    return device


def distribute(module: torch.nn.Module, device: torch.device, cfg: dict) -> torch.nn.Module:
    """Move a trainable module to its device (channels_last), compile its backbone if asked, and wrap it
    in DistributedDataParallel when there are several processes. unwrap() gives the module back."""
    module = module.to(device).to(memory_format=torch.channels_last)
    if cfg["compile"]:
        # In place (Module.compile): parameter names, and so checkpoints, stay as they are.
        getattr(module, "encoder", module).compile()
    if world_size() == 1 or not any(p.requires_grad for p in module.parameters()):
        return module
    if cfg["sync_bn"] and device.type == "cuda":
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0 has written a file the others read)."""
    if world_size() > 1:
        torch.distributed.barrier()


def gather(t: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's t along dim 0 (rank order), keeping the gradient to this rank's part
    (torch.distributed.nn's all_gather: its backward sums the gradients of all ranks' losses), so with DDP's
    averaging a loss on gathered features trains exactly like the single-process loss on the whole batch.
    Equal sizes on every rank."""
    if world_size() == 1:
        return t
    if not t.requires_grad:  # labels, detached tensors
        parts = [torch.empty_like(t) for _ in range(world_size())]
        torch.distributed.all_gather(parts, t.contiguous())
        return torch.cat(parts, dim=0)  # [world * n, ...]
    from torch.distributed.nn.functional import all_gather
    return torch.cat(all_gather(t), dim=0)  # [world * n, ...]


def mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """The mean of a (detached) tensor over ranks: the same value on every rank."""
    if world_size() == 1:
        return t
    t = t.detach().clone()
    torch.distributed.all_reduce(t)
    return t / world_size()


def all_ranks_true(flag: torch.Tensor) -> torch.Tensor:
    """A bool tensor that is True only where it is True on every rank (no host sync)."""
    if world_size() == 1:
        return flag
    f = flag.to(torch.int32)
    torch.distributed.all_reduce(f, op=torch.distributed.ReduceOp.MIN)
    return f.bool()


def rank_world() -> tuple[int, int]:
    """(this process's rank, number of processes)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return module.module if hasattr(module, "module") else module
