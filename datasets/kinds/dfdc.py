"""DFDC crops, one folder per video: {kind: dfdc, root, metadata, parts: [0, 4, ...]}; labels and the fake ->
original links from the original parts' metadata.json files found under `metadata` (a video absent from them
is reported, never guessed). A fake shows the person of its original."""
from __future__ import annotations

import re
import sys
from pathlib import Path

from datasets.index import Sample, Scan
from datasets.kinds.base import SourceKind, require_dir, video_folders
from utils import UserError, parse_json

LAYOUT = "<root>/<video>/<frame>.png plus the original parts' metadata.json files under <metadata>"


def dfdc_metadata(metadata_root: Path, scan: Scan) -> dict[str, dict]:
    """video stem -> {"label": 0|1, "original": stem|None, "part": int|None} from every metadata.json."""
    require_dir(metadata_root, "DFDC metadata", LAYOUT)
    table: dict[str, dict] = {}
    files = sorted(metadata_root.rglob("metadata.json"))
    if not files:
        raise UserError(f"no metadata.json under {metadata_root} (the original DFDC parts' label files)")
    for file in files:
        scan.watch(file)
        match = re.search(r"part_?(\d+)", str(file.parent.name))
        part = int(match.group(1)) if match else None
        try:
            entries = parse_json(file.read_text(), f"DFDC metadata {file}")
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"cannot read DFDC metadata {file}: {err}") from None
        if not isinstance(entries, dict) or not all(isinstance(m, dict) for m in entries.values()):
            raise UserError(f"DFDC metadata {file} must map video names to {{\"label\": REAL|FAKE, ...}}")
        for name, meta in entries.items():
            label = str(meta.get("label", "")).upper()
            if label not in ("REAL", "FAKE"):
                raise UserError(f"DFDC metadata {file}: video {name} has label {meta.get('label')!r}")
            original = meta.get("original")
            table[Path(name).stem] = {"label": int(label == "FAKE"), "part": part,
                                      "original": Path(original).stem if original else None}
    return table


def _dfdc_source(root: Path, metadata_root: Path, parts: list[int] | None, scan: Scan) -> list[Sample]:
    require_dir(root, "DFDC crops", LAYOUT)
    meta = dfdc_metadata(metadata_root, scan)
    samples, missing = [], set()
    for video, files in video_folders(root, scan, "DFDC crops"):
        info = meta.get(video)
        if info is None:
            missing.add(video)
            continue
        if parts is not None and info["part"] not in parts:
            continue
        label, key = info["label"], f"dfdc:{video}"
        samples += [Sample(f, label, "DFDC-fake" if label else "DFDC-real", key, "dfdc") for f in files]
    if missing:
        # Reported, not guessed: these crops have no label.
        print(f"warning: {len(missing)} DFDC video(s) in {root} are not in any metadata.json under "
              f"{metadata_root} and are left out, e.g. {', '.join(sorted(missing)[:3])}", file=sys.stderr)
    return samples


def _dfdc_links(spec: dict) -> dict[str, str]:
    """A DFDC fake shows the person of its original video."""
    meta = dfdc_metadata(Path(spec["metadata"]), Scan())
    return {f"dfdc:{v}": f"dfdc:{m['original']}" for v, m in meta.items() if m["original"]}


KIND = SourceKind(frozenset({"root", "metadata", "parts"}), LAYOUT,
                  lambda root, spec, scan: _dfdc_source(root, Path(spec["metadata"]), spec.get("parts"), scan),
                  links=_dfdc_links, path_keys=("metadata",))
