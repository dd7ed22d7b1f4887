"""The check that no image, video or identity is in two roles (labeled / unlabeled / val / test).

Three levels, each on what identifies it, never on how a spec named it:
  images      the same file (resolved path: symbolic links and `..` followed), whatever source listed it;
  videos      the same video (datasets.videos.video_key): Celeb-DF with and without its test list, a
              DeepfakeBench video listed under two splits;
  identities  videos that show the same person (an FF++ pair, a DFDC fake and its original, Celeb-DF ids).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from datasets.index import Sample
from datasets.splits import identity_groups
from datasets.videos import video_key


@dataclass
class Overlap:
    images: list[str] = field(default_factory=list)      # resolved paths of images in two roles
    videos: list[str] = field(default_factory=list)      # video keys in two roles
    identities: list[str] = field(default_factory=list)  # videos whose identity group is in two roles

    def __len__(self) -> int:
        return len(self.images) + len(self.videos) + len(self.identities)

    def counts(self) -> dict[str, int]:
        return {"images": len(self.images), "videos": len(self.videos), "identities": len(self.identities)}

    def summary(self) -> str:
        """One sentence: what is shared, how much, and an example of each."""
        parts = [f"{len(items)} {what} (e.g. {items[0]})" for what, items in
                 (("images", self.images), ("videos", self.videos),
                  ("videos sharing an identity group", self.identities)) if items]
        return "; ".join(parts)


class _Resolver:
    """Resolved paths of many files: each folder resolved once, a file itself only when it is a link."""

    def __init__(self):
        self.dirs: dict[str, str] = {}

    def __call__(self, path: str) -> str:
        if os.path.islink(path):
            return os.path.realpath(path)
        folder, name = os.path.split(path)
        real = self.dirs.get(folder)
        if real is None:
            real = self.dirs[folder] = os.path.realpath(folder)
        return os.path.join(real, name)


TRAINING = frozenset({"labeled", "unlabeled"})


def _shared(roles_of: dict[str, set[str]], training_may_share: bool = False) -> set[str]:
    return {k for k, roles in roles_of.items()
            if len(roles) > 1 and not (training_may_share and roles <= TRAINING)}


def find_overlap(sets: dict[str, tuple[str, str | None, list[Sample]]],
                 links: dict[str, str] | None = None, share_videos: bool = False,
                 share_images: bool = False) -> Overlap:
    """What the roles of `sets` ({name: (role, split, samples)}) share; `links`: {video: video} pairs that
    show the same person beyond what the ids say (DFDC's fake -> original). share_videos: labeled and
    unlabeled images may come from the same videos (the authors' Sin splits by frame; `data.share_videos`);
    never from val or test, and never the same image unless share_images (the labeled images serve also as
    unlabeled ones, without their labels: kekmodel's MPL; `data.share_images`)."""
    resolve = _Resolver()
    by_image: dict[str, set[str]] = {}
    by_video: dict[str, set[str]] = {}
    everything = [s for _, _, samples in sets.values() for s in samples]
    groups = identity_groups(everything, links)
    by_group: dict[str, set[str]] = {}
    for role, _, samples in sets.values():
        role = "labeled" if role == "fewshot" else role  # few-shot targets are labeled training images
        for s in samples:
            by_image.setdefault(resolve(s.path), set()).add(role)
            if s.video:
                by_video.setdefault(video_key(s.video), set()).add(role)
                by_group.setdefault(groups[s.video], set()).add(role)
    share_videos = share_videos or share_images
    images = sorted(_shared(by_image, share_images))
    videos = sorted(_shared(by_video, share_videos))
    shared_groups = _shared(by_group, share_videos)
    same = set(videos)
    identities = sorted({s.video for s in everything
                         if s.video and groups[s.video] in shared_groups and video_key(s.video) not in same})
    return Overlap(images, videos, identities)


def clear_of(pool: list[Sample], sets: dict[str, tuple[str, str | None, list[Sample]]],
             links: dict[str, str] | None = None, share_videos: bool = False) -> list[Sample]:
    """The images of `pool` (a few-shot source) that may join the labeled training images of `sets`: none of a
    video or identity of the validation and test sets, no unlabeled image, and (unless share_videos) none of an
    unlabeled video."""
    resolve = _Resolver()
    held = [s for role, _, samples in sets.values() if role in ("val", "test") for s in samples]
    unlabeled = [s for role, _, samples in sets.values() if role == "unlabeled" for s in samples]
    groups = identity_groups([*pool, *held, *unlabeled], links)
    banned_groups = {groups[s.video] for s in held if s.video}
    banned_videos = set() if share_videos else {video_key(s.video) for s in unlabeled if s.video}
    banned_images = {resolve(s.path) for s in (*held, *unlabeled)}
    return [s for s in pool if resolve(s.path) not in banned_images
            and not (s.video and (groups[s.video] in banned_groups or video_key(s.video) in banned_videos))]
