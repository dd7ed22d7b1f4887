"""Any tree holding real/ and fake/ (searched recursively): `folder:PATH` or {kind: folder, root}. A
subfolder of real/ or fake/ counts as a video (folder:<class>/<subfolder>)."""
from __future__ import annotations

from pathlib import Path

from datasets.images import IMG_EXTS
from datasets.index import Sample, Scan
from datasets.kinds.base import SourceKind, require_dir
from utils import UserError

LAYOUT = "<root>/{real,fake}/**/<image>.png"


def _folder_source(root: Path, scan: Scan) -> list[Sample]:
    require_dir(root, "dataset")
    samples = []
    for label, sub in ((0, "real"), (1, "fake")):
        require_dir(root / sub, f"'{sub}'")
        files = scan.images(root / sub)
        if not files:
            raise UserError(f"no images in {root / sub} (expected {', '.join(IMG_EXTS)} files)")
        for f in files:
            rel = Path(f).relative_to(root / sub)
            video = f"folder:{sub}/{rel.parent}" if rel.parent != Path(".") else None
            samples.append(Sample(f, label, sub, video, "folder"))
    return samples


KIND = SourceKind(frozenset({"root"}), LAYOUT, lambda root, spec, scan: _folder_source(root, scan))
