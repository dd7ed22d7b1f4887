"""Images without labels, for the `unlabeled` role: `unlabeled:PATH` or {kind: unlabeled, root: PATH, json}.

  root: a folder        every image below it (recursively); a folder holding images directly is one video,
                        `unlabeled:<root name>/<that folder, relative to root>` (images right in root: none)
  root: a .txt file     one image path a line (relative to the file's folder), '#' comments; the folder of
                        each image is its video, as above
  json: a dataset JSON  DeepfakeBench's index (root = its rgb_dir): every frame of the videos of its `splits`
                        (default all; e.g. [train]: a target dataset's training videos), labels ignored

Labels are -1 (unknown): what needs them (the pseudo-label accuracy) is left out, not faked. A video named like
FaceForensics++ (017_042) or Celeb-DF (id0_id1_0003) shows those identities, so the overlap check links it to
the same people in a test set; the image files themselves are compared too (datasets/overlap.py). A JSON's videos
are their own identity groups: its split decided their role by video, as Celeb-DF's official test list does.
"""
from __future__ import annotations

from pathlib import Path

from datasets.images import IMG_EXTS
from datasets.index import Sample, Scan
from datasets.kinds.deepfakebench import SPLITS, build as deepfakebench_frames, identities as name_identities
from datasets.kinds.base import SourceKind
from datasets.videos import deepfakebench_split, name_of, split_by_video
from utils import UserError

UNKNOWN = -1  # the label of an image nobody labelled
LAYOUT = ("<root>/**/<image>.png (a folder per video where there is one), a .txt list of image paths, or "
          "DeepfakeBench's dataset JSON (json: FILE, root: its rgb_dir); no labels")


def _video(root: Path, image: Path) -> str | None:
    rel = image.parent.relative_to(root) if image.is_relative_to(root) else None
    return None if rel in (None, Path(".")) else f"unlabeled:{root.name}/{rel.as_posix()}"


def _from_folder(root: Path, scan: Scan) -> list[Sample]:
    files = scan.images(root)
    if not files:
        raise UserError(f"no images in {root} (expected {', '.join(IMG_EXTS)} files, searched recursively)")
    return [Sample(f, UNKNOWN, "unlabeled", _video(root, Path(f)), "unlabeled") for f in files]


def _from_list(path: Path, scan: Scan) -> list[Sample]:
    scan.watch(path)
    base, samples = path.parent, []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="surrogateescape").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        image = Path(line) if Path(line).is_absolute() else base / line
        if not image.is_file():
            raise UserError(f"{path} line {n}: no image at {image}")
        samples.append(Sample(str(image), UNKNOWN, "unlabeled", _video(base, image), "unlabeled"))
    if not samples:
        raise UserError(f"the image list {path} is empty")
    return samples


def _from_json(root: Path, spec: dict, scan: Scan) -> list[Sample]:
    frames = deepfakebench_frames(root, {**spec, "labels": None}, scan)
    splits = spec.get("splits") or list(SPLITS)
    if not isinstance(splits, list) or set(splits) - set(SPLITS):
        raise UserError(f"`splits` of an unlabeled DeepfakeBench source must list some of {', '.join(SPLITS)}, got "
                        f"{splits!r}"[:300])
    # the JSON's split decided the role by video (as Celeb-DF's official list does): each video its own identity
    return [Sample(s.path, UNKNOWN, "unlabeled", split_by_video(f"unlabeled:{name_of(s.video)}"), "unlabeled")
            for s in frames if deepfakebench_split(s.video) in splits]


def build(root: Path, spec: dict, scan: Scan) -> list[Sample]:
    if spec.get("json"):
        return _from_json(root, spec, scan)
    if root.is_file():
        return _from_list(root, scan)
    if not root.is_dir():
        raise UserError(f"unlabeled images not found: {root} (expected layout: {LAYOUT})")
    return _from_folder(root, scan)


def no_labels(samples: list[Sample], spec: dict, role: str | None) -> list[Sample] | None:
    """Images without labels serve only the unlabeled role."""
    if role in ("labeled", "test"):
        raise UserError(f"{spec['root']} is an unlabeled source: it can only be data.unlabeled (a {role} set needs "
                        "labels: a folder with real/ and fake/, or a flat folder with label: real|fake)")
    return None


def identities(video: str) -> tuple[str, ...]:
    """The identities a folder's name shows where it follows FF++'s or Celeb-DF's naming; else the video."""
    found = name_identities(name_of(video))
    return (video,) if found == (name_of(video),) else found


KIND = SourceKind(frozenset({"root", "json", "dataset", "compression", "splits"}), LAYOUT, build,
                  identities=identities,
                  optional_path_keys=("json",), official_split=no_labels)
