"""Protocols (named configs) seen as data: per-set counts, the split file, and the overlap check."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from datasets.sources import Sample, build_set, identity_groups, test_set_name
from utils import ROOT, UserError, atomic_write_csv, load_config


def protocol_config(name: str, overrides: list[str] = ()) -> dict:
    """A protocol by name (configs/<name>.yaml) or by path."""
    path = Path(name)
    if not path.suffix:
        path = ROOT / "configs" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml") if p.stem != "paths")
        raise UserError(f"unknown protocol '{name}' (one of: {', '.join(known)}, or a config file)")
    return load_config(str(path), overrides)


def protocol_sets(cfg: dict) -> dict[str, tuple[str, str | None, list[Sample]]]:
    """{set name: (role, split, samples)} for the labeled, unlabeled and test sets of a config."""
    sets: dict[str, tuple[str, str | None, list[Sample]]] = {}
    for role in ("labeled", "unlabeled"):
        specs = cfg["data"][role]
        if specs:
            sets[role] = (role, None, [s for spec in specs for s in build_set(spec, cfg["data"], cfg["seed"])])
    for i, spec in enumerate(cfg["data"]["test"]):
        split = spec.get("split") if isinstance(spec, dict) else None
        sets[test_set_name(spec, i)] = ("test", split, build_set(spec, cfg["data"], cfg["seed"]))
    return sets


def role_samples(sets: dict[str, tuple[str, str | None, list[Sample]]], role: str) -> list[Sample]:
    """The labeled or unlabeled samples of protocol_sets(...); a missing or empty one is a UserError."""
    if role not in sets:
        raise UserError(f"no {role} data configured (data.{role} is empty)")
    samples = sets[role][2]
    if not samples:
        raise UserError(f"the {role} split is empty")
    return samples


def overlapping_videos(sets: dict[str, tuple[str, str | None, list[Sample]]]) -> list[str]:
    """Videos whose identity group (the video itself, its FF++ pair, its DFDC original, ...) occurs in more
    than one of the roles labeled / unlabeled / test."""
    everything = [s for _, _, samples in sets.values() for s in samples]
    groups = identity_groups(everything)
    roles_of: dict[str, set[str]] = {}
    for role, _, samples in sets.values():
        for s in samples:
            if s.video:
                roles_of.setdefault(groups[s.video], set()).add(role)
    shared = {g for g, roles in roles_of.items() if len(roles) > 1}
    return sorted({s.video for s in everything if s.video and groups[s.video] in shared})


def describe(cfg: dict, name: str) -> dict:
    """The counts of `python -m datasets describe`, as a JSON-ready dict."""
    sets = protocol_sets(cfg)
    out = {"protocol": name, "sets": {}}
    for set_name, (role, split, samples) in sets.items():
        labels = Counter(s.label for s in samples)
        out["sets"][set_name] = {
            "role": role, "split": split, "images": len(samples),
            "videos": len({s.video for s in samples if s.video}),
            "real": labels[0], "fake": labels[1],
            "domains": dict(sorted(Counter(s.domain for s in samples).items())),
        }
    out["overlapping_videos"] = len(overlapping_videos(sets))
    return out


def format_description(d: dict) -> str:
    head = f"{'set':<18}{'role':<11}{'split':<9}{'images':>9}{'videos':>8}{'real':>9}{'fake':>9}  domains"
    lines = [f"protocol {d['protocol']}", head, "-" * (len(head) + 20)]
    for name, s in d["sets"].items():
        domains = ", ".join(f"{k} {v}" for k, v in s["domains"].items())
        lines.append(f"{name:<18}{s['role']:<11}{str(s['split'] or '-'):<9}{s['images']:>9}{s['videos']:>8}"
                     f"{s['real']:>9}{s['fake']:>9}  {domains}")
    verdict = "none" if d["overlapping_videos"] == 0 else f"{d['overlapping_videos']} VIDEOS IN MORE THAN ONE ROLE"
    lines.append(f"video/identity overlap between labeled, unlabeled and test: {verdict}")
    return "\n".join(lines)


def write_splits(path: Path, sets: dict[str, tuple[str, str | None, list[Sample]]]) -> None:
    """One row per video and set (video, identity group, set, role, label, domain, frames): keep it with
    your results to know exactly which videos were labeled, unlabeled and tested."""
    everything = [s for _, _, samples in sets.values() for s in samples]
    groups = identity_groups(everything)
    rows = Counter((s.video or s.path, groups.get(s.video, s.video or s.path), name, role, s.label, s.domain)
                   for name, (role, _, samples) in sets.items() for s in samples)
    atomic_write_csv(path, ["video", "group", "set", "role", "label", "domain", "frames"],
                     ((*key, n) for key, n in sorted(rows.items())))


def record_splits(sets: dict, run_dir: Path, logger) -> None:
    """Write <run>/splits.csv and warn if a video or identity is shared between roles. Training scripts
    build `sets` (protocol_sets) before anything else, so that a missing test root fails before training."""
    if not logger.main:  # rank 0 writes and warns
        return
    write_splits(run_dir / "splits.csv", sets)
    shared = overlapping_videos(sets)
    if shared:
        logger.info(f"WARNING: {len(shared)} videos share an identity group across labeled/unlabeled/test "
                    f"(e.g. {shared[0]}); see {run_dir / 'splits.csv'} and `python -m datasets describe`")
