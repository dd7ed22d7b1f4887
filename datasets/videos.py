"""Video ids: every frame of a video carries the same id (Sample.video), "<kind>:<path>", e.g.

  ff:Deepfakes/017_042           FaceForensics++ (method folder / video)
  celebdf:Celeb-real/id0_0001    Celeb-DF (folder / video); celebdf-list:... when its official test list
                                 decided the role, <kind>-byvideo:... when a split by video did (split_by:
                                 video): such a video is its own identity group, the split being by video
  dfdc:aabbccddee                DFDC (video)
  deepfakebench:test/FF-DF/017_042   DeepfakeBench (the JSON's split / label / video)
  folder:fake/clip7              a folder dataset's subfolder

The functions here are the one place that reads these strings.
"""
from __future__ import annotations

# decorations of a kind that do not change which video an id names
_SUFFIXES = ("-list", "-byvideo")


def kind_of(video: str) -> str:
    return video.partition(":")[0]


def name_of(video: str) -> str:
    """The video's own name, its id's last part: 'ff:Deepfakes/017_042' -> '017_042'."""
    return video.rpartition("/")[2].rpartition(":")[2]


def video_key(video: str) -> str:
    """Which video it is, whatever setting named it: the same frames have the same key whether Celeb-DF's test
    list was used or not, and a DeepfakeBench video has one key whichever split of its JSON lists it."""
    kind, _, path = video.partition(":")
    for suffix in _SUFFIXES:
        kind = kind.removesuffix(suffix)
    if kind == "deepfakebench":
        path = path.partition("/")[2]  # without the split
    return f"{kind}:{path}"


def deepfakebench_id(split: str, label: str, name: str) -> str:
    return f"deepfakebench:{split}/{label}/{name}"


def deepfakebench_split(video: str) -> str:
    """The JSON split (train, val, test) that listed a DeepfakeBench video."""
    return video.partition(":")[2].partition("/")[0]


def split_by_video(video: str) -> str:
    """The id of a video whose side of a split was chosen by video, not by identity (split_by: video)."""
    kind, _, path = video.partition(":")
    return video if kind.endswith(_SUFFIXES) else f"{kind}-byvideo:{path}"


def listed_celebdf(video: str) -> str:
    """The id of a Celeb-DF video whose role the official test list decided."""
    return "celebdf-list:" + video.partition(":")[2]
