"""What every method's train() begins with: the device (and the processes of a torchrun), the seed, whether
steps are replayed as CUDA graphs, the autocast context, and the training sets, checked before anything is
written (the test sets are built too, so that a missing root fails now)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from datasets.protocols import prepare_data, split_notes, training_sets
from engine.amp import autocast
from engine.dist import setup_device
from engine.graphs import use_cuda_graphs
from utils import seed_everything


@dataclass
class Training:
    device: torch.device
    amp: object          # the autocast context of the run's forwards
    graphs: bool         # steps that allow it are replayed as CUDA graphs
    notes: list[str]     # lines for the run's log: CUDA graphs (and why not), the identity-group splits
    sets: dict           # {name: (role, split, samples)} (datasets.protocols.protocol_sets)


def prepare(cfg: dict, graphed: bool = True) -> Training:
    """The set-up of a training run; graphed=False: a method whose step must run eagerly."""
    device = setup_device(cfg)
    seed_everything(cfg["seed"])
    graphs, note = use_cuda_graphs(cfg, device) if graphed else (False, "CUDA graphs: not used by this method")
    amp = autocast(device, cfg["amp"], cfg["amp_dtype"], cache=not graphs)
    prepare_data(cfg, training=True)
    sets = training_sets(cfg)
    return Training(device, amp, graphs, [note, *split_notes()], sets)
