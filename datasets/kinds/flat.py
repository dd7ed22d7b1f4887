"""A flat folder of one class: {kind: flat, root, label: real|fake, domain} (StyleGAN = fake, CelebA = real)."""
from __future__ import annotations

from pathlib import Path

from datasets.index import Sample, Scan
from datasets.kinds.base import SourceKind, require_dir
from utils import UserError

LAYOUT = "<root>/<image>.png (one class)"


def _flat_source(root: Path, label: str, domain: str | None, scan: Scan) -> list[Sample]:
    require_dir(root, "dataset", LAYOUT)
    if label not in ("real", "fake"):
        raise UserError(f"flat source {root}: label must be 'real' or 'fake', got {label!r}")
    files = scan.images(root)
    if not files:
        raise UserError(f"no images in {root}")
    return [Sample(f, int(label == "fake"), domain or root.name, None, "flat") for f in files]


KIND = SourceKind(frozenset({"root", "label", "domain"}), LAYOUT,
                  lambda root, spec, scan: _flat_source(root, spec.get("label", "fake"), spec.get("domain"), scan))
