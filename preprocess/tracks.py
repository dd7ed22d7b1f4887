"""Face tracks: the faces of a video's sampled frames grouped by person, from box overlap and position only.

Frames are taken in order; a face joins the track whose last box overlaps it most (IoU >= min_iou) or, when
none overlaps enough (the person moved between two sampled frames), the track whose last box centre is
nearest, within `max_shift` x that box's size; a track takes at most one face per frame; any other face
starts a new track.
"""
from __future__ import annotations

import numpy as np


def iou(a, b) -> float:
    """Intersection over union of two boxes [x1, y1, x2, y2]."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _shift(a, b) -> float:
    """Distance between the boxes' centres, in units of a's size (the mean of its width and height)."""
    size = max(((a[2] - a[0]) + (a[3] - a[1])) / 2, 1e-6)
    return float(np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2)) / size


def group_tracks(faces: list[tuple[int, list[float]]], min_iou: float = 0.3, max_shift: float = 0.5) -> list[list[int]]:
    """Indices into `faces` [(frame, box)] grouped into tracks, each in frame order; tracks in order of their
    first face."""
    tracks: list[list[int]] = []
    for frame in sorted({f for f, _ in faces}):
        here = [i for i, (f, _) in enumerate(faces) if f == frame]
        pairs = []  # (rank: overlap first, then nearness; track, face)
        for t, track in enumerate(tracks):
            last = faces[track[-1]][1]
            for i in here:
                overlap, shift = iou(last, faces[i][1]), _shift(last, faces[i][1])
                if overlap >= min_iou:
                    pairs.append(((0, -overlap), t, i))
                elif shift <= max_shift:
                    pairs.append(((1, shift), t, i))
        taken_tracks, taken_faces = set(), set()
        for _, t, i in sorted(pairs):
            if t not in taken_tracks and i not in taken_faces:
                tracks[t].append(i)
                taken_tracks.add(t)
                taken_faces.add(i)
        tracks += [[i] for i in here if i not in taken_faces]
    return tracks
