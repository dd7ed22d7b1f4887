"""What produced a number: the method, its network and inputs, the resolved config's hash, the commit, the
library versions and the machine (results.json's "produced_by"; bench's reports)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess

import torch

from utils import ROOT


def machine(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"cpu": f"{cpu}, {os.cpu_count()} cores", "torch": torch.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs"
    return info


def commit() -> str | None:
    """The checkout's commit, with "+changes" when tracked files differ from it; None outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=ROOT, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+changes" if dirty.returncode == 1 else "")


def config_hash(cfg: dict | None) -> str | None:
    """SHA-256 of a resolved config (keys sorted): two results with the same hash came from the same settings."""
    if not isinstance(cfg, dict):
        return None
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()


def produced_by(method: str, backbone: str, img_size: int, input_scale: str, trained_config: dict | None,
                device: torch.device) -> dict:
    import sklearn
    import timm
    return {"method": method, "backbone": backbone, "img_size": img_size, "input_scale": input_scale,
            "config_sha256": config_hash(trained_config), "commit": commit(),
            "versions": {"torch": torch.__version__, "timm": timm.__version__, "scikit-learn": sklearn.__version__,
                         "python": platform.python_version()},
            "machine": machine(device)}
