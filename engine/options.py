"""How a training command treats its run folder (no torch here: the command line builds it before importing
the training code)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunOptions:
    """How a training command treats its run folder (the training scripts' --resume, --allow-data-change,
    --overwrite)."""
    resume: bool = False             # continue the unfinished run there from its newest checkpoint
    allow_data_change: bool = False  # ... even if the data sets differ from the checkpoint's
    overwrite: bool = False          # move the run there aside (<method>.old-<time>) and start a new one


class RunFinished(Exception):
    """--resume of a run that is finished: nothing to train (the command says so and succeeds)."""
