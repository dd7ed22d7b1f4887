"""What a reproduced table is: its rows (protocol, test set, the paper's label), its methods and metrics,
the trainings that fill it (Job), and the paper's value of each cell (reproduce/paper-tables.yaml)."""
from __future__ import annotations

from dataclasses import dataclass

NAMES = {"pt": "Pretrained", "mpl": "MPL", "supcon": "SupCon", "supconmpl": "SupCon-MPL", "tar": "Tar", "ddt": "DDT",
         "tar_fewshot": "Tar few-shot", "ddt_fewshot": "DDT few-shot", "pt_effb4": "Pretrained EfficientNet-B4",
         "supconmpl_adapt": "SupCon-MPL + target's unlabeled images"}
SCRIPT_NAMES = {"pt": "baseline", "mpl": "MPL", "supconmpl": "SupCon teacher + SupCon-MPL", "tar": "Tar", "ddt": "DDT",
                "tar_fewshot": "Tar few-shot", "ddt_fewshot": "DDT few-shot", "pt_effb4": "baseline EfficientNet-B4",
                "supconmpl_adapt": "SupCon teacher + SupCon-MPL with the target's images"}
# job -> the columns it fills; a column's run folder is named after its method (FOLDER_OF), a job runs
# train_<SCRIPT_OF or its own name>_model.sh
FOLDERS = {"pt": ["pt"], "mpl": ["mpl"], "supconmpl": ["supcon", "supconmpl"], "tar": ["tar"], "ddt": ["ddt"],
           "tar_fewshot": ["tar_fewshot"], "ddt_fewshot": ["ddt_fewshot"], "pt_effb4": ["pt_effb4"],
           "supconmpl_adapt": ["supconmpl_adapt"]}
FOLDER_OF = {"tar_fewshot": "tar", "ddt_fewshot": "ddt", "pt_effb4": "pt", "supconmpl_adapt": "supconmpl"}
SCRIPT_OF = {"tar_fewshot": "tar", "ddt_fewshot": "ddt", "pt_effb4": "pt", "supconmpl_adapt": "supconmpl"}
LEFT_OUT = {"df": "Deepfakes", "f2f": "Face2Face", "fs": "FaceSwap", "nt": "NeuralTextures"}
SHORT = {"Deepfakes": "DF", "Face2Face": "F2F", "FaceSwap": "FS", "NeuralTextures": "NT"}
METRICS = {"acc": "ACC", "auc": "AUC (scores)", "auc_hard": "AUC (hard; the paper's)", "f1": "F1",
           "deepfakebench.auc": "frame AUC (DeepfakeBench's definition)",
           "deepfakebench.video_auc": "video AUC (DeepfakeBench's definition: frames averaged per video folder)"}


@dataclass(frozen=True)
class Row:
    protocol: str   # config name
    test: str       # test set name in that config
    label: str      # the row as the paper names it
    paper: tuple    # where its numbers are in paper-tables.yaml


@dataclass(frozen=True)
class Job:
    protocol: str
    seed: int
    script: str     # a key of FOLDERS: train_<SCRIPT_OF.get(script, script)>_model.sh
    run_name: str
    extra: tuple = ()  # overrides of this job alone (the few-shot target)


def fewshot_target(demo: bool) -> dict:
    """The few-shot rows' target (reproduce --fewshot K): the current-generation unknown, NeuralTextures, with the
    real images of its source, from the FF++ training videos (never a test video)."""
    root = "data/demo/FaceForensics++" if demo else "{ff}"
    return {"kind": "ff", "root": root, "subset": "train_set", "methods": ["Real", "NeuralTextures"]}


def fewshot_overrides(demo: bool, k: int) -> tuple:
    import json
    return (f"fewshot.sources=[{json.dumps(fewshot_target(demo))}]", f"fewshot.k={k}")


def table_spec(table: int, demo: bool, fewshot: int = 0) -> dict:
    """Rows, methods (columns), the scripts that train them, and the metrics of a table; fewshot K > 0 (Table 2):
    Tar and DDT also transferred with K labeled images of each class of fewshot_target. (The field's tables:
    reproduce/bench.py bench_spec.)"""
    if table == 1:
        rows = []
        for key, name in LEFT_OUT.items():
            protocol = f"{'demo_wo' if demo else 'ff_wo'}_{key}"
            others = "+".join(SHORT[m] for m in LEFT_OUT.values() if m != name)
            rows += [Row(protocol, name, f"{SHORT[name]} (unknown)", ("table1", name, "unknown")),
                     Row(protocol, "Known", f"{others} (known)", ("table1", name, "known"))]
        return {"rows": rows, "methods": ["pt", "supcon", "tar", "ddt", "supconmpl"],
                "scripts": ["pt", "tar", "ddt", "supconmpl"], "metrics": ["acc", "auc", "auc_hard", "f1"]}
    protocol = "demo" if demo else "sin"
    rows = [Row(protocol, "Known", "Scenario Deepfakes (Known)", ("table2", 0)),
            Row(protocol, "NeuralTextures", "Current-Generation Deepfakes (Unknown)", ("table2", 1)),
            Row(protocol, "StyleGAN", "Post-Generation Deepfakes (Unknown)", ("table2", 2))]
    extra = ["tar_fewshot", "ddt_fewshot"] if fewshot else []
    return {"rows": rows, "methods": ["tar", "ddt", *extra, "mpl", "supcon", "supconmpl"],
            "scripts": ["tar", "ddt", *extra, "mpl", "supconmpl"], "metrics": ["acc", "auc", "auc_hard"],
            "extra": {s: fewshot_overrides(demo, fewshot) for s in extra}}


def paper_value(paper: dict, row: Row, method: str, metric: str) -> float | None:
    """The paper's number for a cell (its AUC is the hard-prediction one), or None if it has none."""
    if row.paper[0] not in ("table1", "table2"):
        return None  # the field's tables: DeepfakeBench's published rows are rendered apart (reproduce/bench.py)
    if row.paper[0] == "table1":
        entry = next(r for r in paper["table1"]["rows"] if r["left_out"] == row.paper[1] and r["split"] == row.paper[2])
        column = {"acc": 0, "auc_hard": 1, "f1": 2}.get(metric)
        values = entry.get("pretrained" if method == "pt" else method)
        return None if column is None or values is None else values[column]
    name = {"mpl": "MPL", "supcon": "SupCon", "supconmpl": "SupCon-MPL", "tar": "Tar", "ddt": "DDT"}.get(method)
    # the paper's Tar and DDT rows are of its own (unstated) form: shown beside the zero-shot columns only
    return paper["table2"]["rows"][name][row.paper[1]] if metric == "acc" and name else None


