"""Protocols (named configs) seen as data: their sets by role, per-set counts, the split file, and the check
that no video or identity is shared between roles."""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from engine.config import load_config
from datasets.index import Sample
from datasets.overlap import Overlap, clear_of, find_overlap
from datasets.sources import absent, build_set, set_links, test_set_name
from datasets.splits import GROUP_SHARES, hold_out, identity_groups, per_class
from engine.dist import barrier, is_main_process
from utils import ROOT, UserError, atomic_write_csv, resolve_path

# Set names the training roles use: a test set may not take them.
RESERVED = ("labeled", "unlabeled", "val", "weights", "fewshot", "produced_by", "missing")  # the last three: results.json


def protocol_config(name: str, overrides: list[str] = ()) -> dict:
    """A protocol by name (configs/<name>.yaml) or by path."""
    path = Path(name)
    if not path.suffix:
        path = ROOT / "configs" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml") if p.stem != "paths")
        raise UserError(f"unknown protocol '{name}' (one of: {', '.join(known)}, or a config file)")
    return load_config(str(path), overrides)


def protocol_sets(cfg: dict, tests: list | None = None,
                  training: bool = True) -> dict[str, tuple[str, str | None, list[Sample]]]:
    """{set name: (role, split, samples)} for the labeled and unlabeled sets of a config (training=True) and
    its test sets (or `tests`, e.g. evaluate.py --test folder:DIR). Test sets need unique names that are
    not a role's; split is known, unknown or unset."""
    sets: dict[str, tuple[str, str | None, list[Sample]]] = {}
    GROUP_SHARES.clear()
    for role in ("labeled", "unlabeled") if training else ():
        specs = present(cfg, role)
        if specs:
            sets[role] = (role, None, [s for spec in specs for s in build_set(spec, cfg["data"], cfg["seed"], role)])
    if training and cfg.get("val", {}).get("enabled") and cfg["data"].get("val"):
        # The dataset's own validation split (DeepfakeBench's val videos): never a training or test video.
        sets["val"] = ("val", None, [s for spec in cfg["data"]["val"] for s in build_set(spec, cfg["data"], cfg["seed"],
                                                                                         "val")])
    elif training and cfg.get("val", {}).get("enabled") and "labeled" in sets:
        # The validation set: a seeded share of the labeled identity groups (never of a test set).
        links = protocol_links(cfg, [])
        kept, held = hold_out(sets["labeled"][2], cfg["val"]["fraction"], cfg["seed"], links)
        sets["labeled"], sets["val"] = ("labeled", None, kept), ("val", None, held)
    for i, spec in enumerate(present(cfg, "test") if tests is None else tests):
        name = test_set_name(spec, i)
        split = spec.get("split") if isinstance(spec, dict) else None
        if split not in (None, "known", "unknown"):
            raise UserError(f"test set '{name}': split must be known or unknown, got {split!r}")
        if name in sets or name in RESERVED:
            what = "is the name of a training role" if name in RESERVED else "is used twice"
            raise UserError(f"test set name '{name}' {what}: give each test set its own `name` "
                            "(for --test folder:DIR, the folder's name)")
        sets[name] = ("test", split, build_set(spec, cfg["data"], cfg["seed"], "test"))
    fewshot = (cfg.get("fewshot") or {}).get("sources", []) if training else []
    for i, spec in enumerate(fewshot):
        # Tar's and DDT's transfer targets: K labeled images of each class, drawn from the source's images that
        # share no video or identity with the validation and test sets (and are no unlabeled image)
        pool = clear_of(build_set(spec, cfg["data"], cfg["seed"], "labeled"), sets, protocol_links(cfg, tests),
                        cfg["data"].get("share_videos", False))
        if not pool:
            raise UserError(f"fewshot.sources[{i}]: none of its images is clear of the validation and test videos "
                            "(a few-shot target must be training data)")
        sets[f"fewshot{i}"] = ("fewshot", None, per_class(pool, cfg["fewshot"]["k"], cfg["seed"] + i))
    return sets


def missing_sets(cfg: dict, role: str = "test") -> dict[str, str]:
    """{set name: why} of a role's `optional: true` sets that are absent (datasets.sources.absent)."""
    specs = cfg["data"].get(role) or []
    return {test_set_name(spec, i) if role == "test" else f"{role}[{i}]": why
            for i, spec in enumerate(specs) for why in [absent(spec, cfg["data"])] if why}


_TOLD: set[tuple[str, str]] = set()  # the absent sets this process has named already (one line each)


def present(cfg: dict, role: str) -> list:
    """A role's set specs without its absent optional ones, each of which is named in one line (stderr)."""
    missing = missing_sets(cfg, role)
    for name, why in missing.items():
        if (name, why) in _TOLD:
            continue
        _TOLD.add((name, why))
        where = "named as missing in results.json" if role == "test" else "its images are not used"
        print(f"note: {'test set' if role == 'test' else 'set'} '{name}' left out: {why} (optional: true; {where})",
              file=sys.stderr)
    specs = cfg["data"].get(role) or []
    names = [test_set_name(spec, i) if role == "test" else f"{role}[{i}]" for i, spec in enumerate(specs)]
    return [spec for name, spec in zip(names, specs) if name not in missing]


def protocol_links(cfg: dict, tests: list | None = None) -> dict[str, str]:
    """{video: video showing the same person} over every set of a config (DFDC's fake -> original links)."""
    quiet = {role: [spec for spec in cfg["data"].get(role) or [] if not absent(spec, cfg["data"])]
             for role in ("labeled", "unlabeled", "val", "test")}
    specs = [*quiet["labeled"], *quiet["unlabeled"], *quiet["val"], *(quiet["test"] if tests is None else tests),
             *(cfg.get("fewshot") or {}).get("sources", [])]
    links: dict[str, str] = {}
    for spec in specs:
        links.update(set_links(spec, cfg["data"]))
    return links


def test_sets(cfg: dict, tests: list | None = None) -> dict[str, tuple[str | None, list[Sample]]]:
    """{name: (split, samples)} of the config's test sets (or of `tests`); none at all is a UserError."""
    sets = {name: (split, samples) for name, (_, split, samples) in protocol_sets(cfg, tests, training=False).items()}
    if not sets:
        raise UserError("no test sets: configure data.test or pass --test folder:PATH")
    return sets


def training_sets(cfg: dict) -> dict[str, tuple[str, str | None, list[Sample]]]:
    """protocol_sets of a training run, which may not start if a video or identity is in two roles."""
    sets = protocol_sets(cfg)
    shared = overlap(cfg, sets)
    if shared:
        raise UserError(f"labeled/unlabeled/val/test share {shared.summary()}: training would see what it is "
                        "tested on; fix the config (see `python -m datasets describe`)")
    return sets


def role_samples(sets: dict[str, tuple[str, str | None, list[Sample]]], role: str,
                 batches: dict[str, int] | None = None) -> list[Sample]:
    """The labeled or unlabeled samples of protocol_sets(...); a missing or empty one, or a batch (config key
    -> size) larger than it, is a UserError."""
    if role not in sets:
        raise UserError(f"no {role} data configured (data.{role} is empty)")
    samples = sets[role][2]
    if not samples:
        raise UserError(f"the {role} split is empty")
    for key, size in (batches or {}).items():
        # Batches are drawn without repeats within a pass: a batch larger than the set is impossible.
        if size > len(samples):
            raise UserError(f"config key '{key}' = {size} is larger than the {role} set ({len(samples)} images)")
    return samples


def labels_known(samples: list[Sample], logger=None) -> bool:
    """Whether every image of a set has a true label (an unlabeled source's have none: -1); if not, says so."""
    known = all(s.label >= 0 for s in samples)
    if not known and logger is not None:
        missing = sum(s.label < 0 for s in samples)
        logger.info(f"{missing} of the {len(samples)} unlabeled images have no true label: the pseudo-label "
                    "accuracy (pseudo_acc) is not logged")
    return known


def overlap(cfg: dict, sets: dict[str, tuple[str, str | None, list[Sample]]]) -> Overlap:
    """What the roles of a config's sets share: images, videos or identities (datasets/overlap.py)."""
    return find_overlap(sets, protocol_links(cfg), cfg["data"].get("share_videos", False),
                        cfg["data"].get("share_images", False))


def describe(cfg: dict, name: str) -> dict:
    """The counts of `python -m datasets describe`, as a JSON-ready dict."""
    sets = protocol_sets(cfg)
    out = {"protocol": name, "sets": {}}
    for set_name, (role, split, samples) in sets.items():
        labels = Counter(s.label for s in samples)
        out["sets"][set_name] = {
            "role": role, "split": split, "images": len(samples),
            "videos": len({s.video for s in samples if s.video}),
            "real": labels[0], "fake": labels[1], "unknown": labels[-1],  # (unknown: an unlabeled source)
            "domains": dict(sorted(Counter(s.domain for s in samples).items())),
        }
    out["groups"] = {what: {"largest_share": round(share, 4), "groups": n} for what, (share, n) in GROUP_SHARES.items()}
    shared = overlap(cfg, sets)
    out["overlapping_videos"] = len(shared)
    out["overlap"] = {**shared.counts(), "summary": shared.summary()}
    return out


def format_description(d: dict) -> str:
    head = (f"{'set':<18}{'role':<11}{'split':<9}{'images':>9}{'videos':>8}{'real':>9}{'fake':>9}{'no label':>9}"
            "  domains")
    lines = [f"protocol {d['protocol']}", head, "-" * (len(head) + 20)]
    for name, s in d["sets"].items():
        domains = ", ".join(f"{k} {v}" for k, v in s["domains"].items())
        lines.append(f"{name:<18}{s['role']:<11}{str(s['split'] or '-'):<9}{s['images']:>9}{s['videos']:>8}"
                     f"{s['real']:>9}{s['fake']:>9}{s['unknown']:>9}  {domains}")
    lines += group_lines(d["groups"])
    verdict = "none" if d["overlapping_videos"] == 0 else f"IN MORE THAN ONE ROLE: {d['overlap']['summary']}"
    lines.append(f"image/video/identity overlap between labeled, unlabeled, val and test: {verdict}")
    return "\n".join(lines)


def group_lines(groups: dict) -> list[str]:
    """One line per source split by identity group: its largest group's share (a split cannot balance one
    group that holds most of a source: datasets.splits.check_groups stops those)."""
    return [f"split by identity group: {what}: {g['groups']} groups, the largest {100 * g['largest_share']:.1f}% of "
            "its videos" for what, g in groups.items()]


def split_notes() -> list[str]:
    """The run log's lines about the identity-group splits of the sets just built."""
    return group_lines({w: {"largest_share": s, "groups": n} for w, (s, n) in GROUP_SHARES.items()})


def write_splits(path: Path, sets: dict[str, tuple[str, str | None, list[Sample]]],
                 links: dict[str, str] | None = None) -> None:
    """One row per video and set (video, identity group, set, role, label, domain, source, frames; the source
    names the kind and, for a tree written from an FF++ download, its compression: ff/c23): keep it with your
    results to know exactly which videos were labeled, unlabeled, validated and tested."""
    everything = [s for _, _, samples in sets.values() for s in samples]
    groups = identity_groups(everything, links)
    rows = Counter((s.video or s.path, groups.get(s.video, s.video or s.path), name, role, s.label, s.domain, s.source)
                   for name, (role, _, samples) in sets.items() for s in samples)
    atomic_write_csv(path, ["video", "group", "set", "role", "label", "domain", "source", "frames"],
                     ((*key, n) for key, n in sorted(rows.items())))


def record_splits(cfg: dict, sets: dict, run_dir: Path) -> None:
    """Write <run>/splits.csv (rank 0): keep it with your results."""
    if is_main_process():
        write_splits(run_dir / "splits.csv", sets, protocol_links(cfg))


def prepare_data(cfg: dict, training: bool = False) -> None:
    """Generate the embedded demo benchmark first if the config asks for it and it is missing (and its
    pack, when the config trains from it; with `training`, its stand-in for ImageNet weights when the config
    starts from them)."""
    if cfg["data"].get("demo"):
        from preprocess.demo import PRETRAINED, ensure_demo
        root = resolve_path(cfg["data"]["demo"])
        packed = cfg["data"]["packed"] and resolve_path(cfg["data"]["packed"]) == root / "pack"
        # the demo's stand-in for ImageNet weights only for a training run that starts from them (configs/demo.yaml)
        starts = (cfg.get("pretrained"), (cfg.get("mpl") or {}).get("student_pretrained"))
        stand_in = training and any(isinstance(w, str) and resolve_path(w) == root / PRETRAINED for w in starts)
        if is_main_process():  # one process writes it; the others wait for it
            ensure_demo(root, pack_size=cfg["img_size"] if packed else None, pretrained=stand_in)
            if cfg["data"].get("demo_deepfakebench"):
                from preprocess.demo_dfb import ensure_dfb_demo
                ensure_dfb_demo(root)
        barrier()
