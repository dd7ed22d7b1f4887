"""Every configuration key, declared once: its default, what it means, and the values it may take. The
defaults (DEFAULTS), the checks of a loaded config (engine/config.py) and the key list of every training
script's --help (keys_help) all come from SCHEMA.

Defaults are the authors' recipe (their .sh scripts and code; docs/differences.md lists where ours differ and
the setting that restores theirs); configs/*.yaml override them and `key=value` arguments override the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Key:
    """One key: its default (whose type is the key's: bool, int, float, str, list; None: any or null), its
    meaning, and optionally a range (`low`/`high`, inclusive unless `open_low`/`open_high`) or `choices`."""
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple | None = None

    def bounds(self) -> str:
        """The range as text: 'positive', '>= 0', 'in [0, 1)', 'one of a, b'."""
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        if self.low == 0 and self.open_low and self.high is None:
            return "positive"
        if self.high is None:
            return f">= {_num(self.low)}" if self.low is not None else ""
        return (f"in {'(' if self.open_low else '['}{_num(self.low)}, {_num(self.high)}"
                f"{')' if self.open_high else ']'}")

    def allows(self, value: Any) -> bool:
        if self.choices:
            return value in self.choices
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            return False
        return self.high is None or (value < self.high or (not self.open_high and value == self.high))


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def positive(default: Any, help: str) -> Key:
    return Key(default, help, low=0, open_low=True)


def at_least_0(default: Any, help: str) -> Key:
    return Key(default, help, low=0)


def probability(default: float, help: str) -> Key:
    return Key(default, help, low=0, high=1)


def one_of(default: Any, help: str, *choices) -> Key:
    return Key(default, help, choices=(default, *[c for c in choices if c != default]))


_AUG = {
    "scale": Key([0.5, 1.0], "RandomResizedCrop scale range [min, max], 0 < min <= max <= 1"),
    "hflip": probability(0.5, "probability of a horizontal flip"),
    "color_jitter": Key([0.4, 0.4, 0.4, 0.1], "ColorJitter [brightness, contrast, saturation, hue]"),
    "color_jitter_p": probability(0.8, "probability of the colour jitter"),
    "grayscale_p": probability(0.2, "probability of grey scale"),
    "jpeg_p": probability(0.0, "ours, opt-in (0: off, the authors): re-encode as JPEG with this probability"),
    "jpeg_quality": Key([40, 100], "... at a quality drawn from [min, max] (DeepfakeBench's ImageCompression)"),
    "blur_p": probability(0.0, "ours, opt-in (0: off): Gaussian blur with this probability"),
    "blur_sigma": Key([0.1, 2.0], "... of a sigma (pixels of the stored image) drawn from [min, max]"),
    "randaugment": Key([0, 0], "RandAugment [ops, magnitude 0-30] on top ([0, 0]: off, the authors); kekmodel's strong "
                               "view: aug.unlabeled_strong.randaugment=[2,10]"),
}

SCHEMA: dict[str, Any] = {
    "seed": at_least_0(777, "random seed (the authors' 777)"),
    "device": Key("auto", "auto | cpu | cuda | cuda:N"),
    "out_dir": Key("runs", "run folders go to <out_dir>/<run_name>/<method>"),
    "run_name": Key(None, "default: the config file's name, plus a hash of the overrides that change the result"),
    "backbone": Key("resnet50", "any timm model name (resnet50, resnet101, efficientnet_b4, ...)"),
    "pretrained": Key("imagenet", "imagenet (the authors' weights; never downloaded: models/weights.py) | none "
                                  "(random initialisation) | path to a state-dict file"),
    "weights_dir": Key("weights", "where `python -m models.fetch_weights` stores ImageNet weights"),
    "img_size": positive(64, "input size in pixels"),
    "input_scale": one_of("project", "project: [0, 1] + backbone mean/std; seed: the reference code's x/255/255; "
                                     "unit: [0, 1]", "seed", "unit"),
    "amp": Key(True, "mixed precision on CUDA, a speed choice (ignored on CPU); false: the authors' fp32"),
    "amp_dtype": one_of("auto", "auto (bf16 where the GPU has it, else fp16 with a loss scaler) | bf16 | fp16",
                        "bf16", "fp16"),
    "compile": Key(False, "torch.compile the networks (slow start, faster steps on GPUs)"),
    "cuda_graphs": Key(True, "replay each training step as a CUDA graph where possible (one CUDA device, bf16/fp32, "
                             "no compile; engine/graphs.py): the same updates, faster steps; false: eager"),
    "sync_bn": Key(False, "multi-GPU: batch-norm statistics over the global batch (SyncBatchNorm)"),
    "workers": at_least_0(4, "DataLoader worker processes"),
    "log_every": positive(50, "steps between log lines"),
    "checkpoint_every": positive(200, "steps between full (resumable) checkpoints"),
    "keep_checkpoints": positive(2, "how many of them to keep"),
    "max_nonfinite_steps": at_least_0(10, "skipped non-finite updates tolerated before the run stops"),
    "aug": {  # training augmentation of labeled images (and, by default, of unlabeled ones)
        **_AUG,
        "unlabeled_weak": Key({}, "overrides of the aug keys for the weak view of unlabeled images"),
        "unlabeled_strong": Key({}, "... and for the strong view (the authors: both = the labeled augmentation)"),
    },
    "data": {
        "demo": Key(None, "path: generate the embedded demo benchmark there when missing"),
        "demo_deepfakebench": Key(False, "true: also write the demo in DeepfakeBench's and DF40's JSON formats "
                                         "(<demo>/deepfakebench; preprocess/demo_dfb.py)"),
        "balance": Key(False, "true: sample real and fake labeled images equally often (ours; the authors "
                              "shuffled plainly)"),
        "labeled_fraction": probability(0.5, "share of train videos (by identity group) in the labeled part"),
        "frames_scale": Key(1.0, "every spec's frames: N counts round(N x this) frames (a protocol's counts on a small "
                                 "tree)", low=0, high=1, open_low=True),
        "share_videos": Key(False, "labeled and unlabeled images may come from the same videos (never the same image, "
                                   "never a val/test video): the authors' Sin splits by frame"),
        "share_images": Key(False, "the labeled images may also be unlabeled ones, without their labels (kekmodel's MPL: "
                                   "the unlabeled set is every training image; never a val/test image)"),
        "frames_per_video": Key(None, "keep at most this many frames per video (evenly spaced); null: all"),
        "max_bad_images": at_least_0(100, "unreadable images skipped (and listed) before the run stops"),
        "paths_file": Key("configs/paths.yaml", "dataset roots named as {key} in specs"),
        "paths": Key({}, "overrides of the paths file: data.paths.ff=/data/FF++"),
        "index_dir": Key(".cache/index", "cached indexes of dataset trees (CSV); null: no cache"),
        "packed": Key(None, "a pack folder (python -m preprocess.pack): training batches from it, augmented on the "
                            "device; null: decode the image files per step"),
        "labeled": Key([], "labeled source specs (datasets/sources.py)"),
        "unlabeled": Key([], "unlabeled source specs"),
        "test": Key([], "test set specs (name, split: known | unknown; optional: true = skipped, and named as "
                        "missing, where its files or root are absent)"),
        "val": Key([], "validation set specs (a dataset's own val split, e.g. DeepfakeBench's); used by "
                       "val.enabled instead of a hold-out of the labeled set"),
    },
    "val": {  # a validation set from the labeled training domain (off: the authors had none)
        "enabled": Key(False, "a `val` role: data.val's sets, or else `fraction` of the labeled identity groups "
                              "held out"),
        "fraction": Key(0.1, "share of the labeled identity groups held out", low=0, high=1, open_low=True,
                        open_high=True),
        "every": positive(200, "steps between validation passes in each stage (and one at its end)"),
        "select": one_of("last", "last: release the final weights (the authors) | best_val: the best on val",
                         "best_val"),
        "threshold": one_of("eer", "decision threshold chosen on val, stored in the release file: eer (FPR = FNR) | "
                                   "balanced (best balanced accuracy)", "balanced"),
        "temperature": Key(False, "fit temperature scaling on val (ECE before/after in the release file)"),
        "batch_size": positive(256, "evaluation batch of the validation passes"),
    },
    "pt": {
        "steps": at_least_0(1000, "training steps of the baseline"),
        "batch_size": positive(512, "batch size"),
        "lr": positive(1e-4, "Adam learning rate"),
        "weight_decay": at_least_0(0.0, "Adam weight decay"),
    },
    "supcon": {
        "steps": at_least_0(1000, "SupCon steps of the teacher's network"),
        "batch_size": positive(512, "labeled images per SupCon step (two views each)"),
        "lr": positive(1e-4, "Adam learning rate of the network"),
        "temperature": positive(0.1, "SupCon temperature"),
        "feat_dim": positive(128, "projection size"),
        "classifier_steps": at_least_0(1000, "steps of the linear classifier on the frozen encoder"),
        "classifier_batch_size": positive(512, "its batch size"),
        "classifier_lr": positive(1e-4, "its learning rate"),
    },
    "mpl": {
        "steps": at_least_0(5000, "MPL steps (the authors' --epochs 1000 --repeat 5)"),
        "batch_labeled": positive(64, "labeled images per MPL step"),
        "batch_unlabeled": positive(448, "unlabeled images per MPL step"),
        "teacher_lr": positive(1e-4, "teacher learning rate"),
        "student_lr": positive(1e-4, "student learning rate"),
        "temperature": positive(0.1, "SupCon temperature"),
        "T": positive(1.0, "softmax temperature of the pseudo labels: no effect on hard labels (argmax softmax(t/T) "
                           "= argmax t), as in the authors' code"),
        "feedback": one_of("new_minus_old", "h = s_new - s_old (the authors' sign); or old_minus_new",
                           "old_minus_new"),
        "teacher_encoder": Key(None, "default: <run>/supcon/supcon_encoder.tar"),
        "teacher_classifier": Key(None, "default: <run>/supcon/supcon_classifier.tar"),
        "student_pretrained": Key(None, "default: same as `pretrained`"),
        "finetune_steps": at_least_0(1000, "SupCon fine-tune steps of the student"),
        "finetune_classifier_steps": at_least_0(1000, "classifier fine-tune steps of the student"),
        "finetune_lr": positive(1e-4, "fine-tune learning rate"),
    },
    "ddt": {  # Deep Distribution Transfer (train_ddt.py; Aneja & Niessner 2020)
        "backbone": Key("resnet18", "its encoder: an ImageNet ResNet up to layer3 (the paper's ResNet-18)"),
        "dim": positive(16, "size of mu and log sigma^2"),
        "steps": at_least_0(1000, "source training steps (fewer when early stopping ends it)"),
        "batch_size": positive(128, "the paper's batch"),
        "lr": positive(1e-3, "Adam learning rate (the paper's)"),
        "real_weight": positive(1.0, "w of the loss: the weight of real images"),
        "plateau_factor": Key(0.7, "ReduceLROnPlateau's factor on the validation loss (without validation: the "
                                   "loss over each val.every steps)", low=0, high=1, open_low=True, open_high=True),
        "plateau_patience": at_least_0(5, "... and its patience, in validation passes"),
        "early_stop": at_least_0(10, "validation passes without improvement that end training (0: never)"),
        "mixup": probability(0.0, "spatial mixup: the left half of an image joined to the right half of another of "
                                  "its class, with this probability (off in the paper's released config)"),
    },
    "tar": {  # Tar (train_tar.py; Lee, Tariq, Kim, Woo 2021)
        "steps": at_least_0(1000, "training steps"),
        "batch_size": positive(32, "the paper's batch"),
        "lr": positive(1e-3, "Adam learning rate (the paper's; eps 1e-7)"),
        "recon_weight": at_least_0(0.1, "weight of the L1 reconstruction loss"),
        "mask_latent": Key(True, "the decoder sees the label's half of the latent (the paper's selection block); false: "
                                 "the whole latent (the released code)"),
        "input_scale": one_of("unit", "unit: pixels in [0, 1], no mean/std (the paper's); project: as the other "
                                      "rows", "project", "seed"),
    },
    "fewshot": {  # Tar's and DDT's transfer to target domains with a few labeled images (off: the zero-shot rows)
        "sources": Key([], "labeled source specs, one stage each in order (DDT: one target; Tar: sequential)"),
        "k": positive(25, "images of each class drawn from each source (seeded)"),
        "steps": at_least_0(100, "steps per source (fewer when the training loss stops improving)"),
        "lr": positive(1e-5, "the transfer's Adam learning rate (DDT's)"),
        "patience": at_least_0(30, "steps without a lower training loss that end a source's stage (0: never)"),
    },
    "mpl_options": {  # vanilla MPL (train_mpl.py) only; the defaults: kekmodel's MPL at SupCon-MPL's budget
        "uda": Key(True, "UDA consistency on the teacher (soft targets from its weak view), as kekmodel's MPL and the "
                         "MPL paper; false: the plain MPL loss"),
        "uda_threshold": probability(0.95, "... on unlabeled images whose weak-view confidence reaches this"),
        "uda_weight": at_least_0(1.0, "... with this weight,"),
        "uda_warmup": at_least_0(0, "... reached linearly over these steps"),
        "h_baseline": Key(0.0, "> 0: subtract a moving average of h (this decay) from h", low=0, high=1,
                          open_high=True),
        "ema": Key(0.0, "> 0: keep an EMA of the student (this decay) and release it", low=0, high=1, open_high=True),
        "teacher_start": one_of("baseline", "baseline: the teacher starts from the baseline's release (<run>/pt/pt.tar, "
                                "trained first when missing), as SupCon-MPL's from its SupCon stage; pretrained: "
                                "from `pretrained`, no labeled training (kekmodel's, the MPL paper's)", "pretrained"),
        "teacher_weights": Key(None, "with teacher_start baseline: a pt.tar to start from (default: <run>/pt/pt.tar)"),
        "finetune_batch": Key(None, "the student's fine-tune batch (default: supcon.batch_size, SupCon-MPL's; "
                                    "mpl.batch_labeled: this project's form before)"),
    },
}

AUG_ROLES = ("unlabeled_weak", "unlabeled_strong")  # sections of `aug` that override its keys for a role
# Mappings whose keys the user chooses (dataset root names; the aug keys of a role).
FREE_SECTIONS = {"data.paths", *(f"aug.{role}" for role in AUG_ROLES)}
# Settings that may change between a run and its resumption without changing its result (they also do not
# name the run folder).
RESUME_FREE = {"device", "weights_dir", "workers", "log_every", "checkpoint_every", "keep_checkpoints",
               "max_nonfinite_steps", "data.max_bad_images", "amp", "amp_dtype", "compile", "cuda_graphs"}


def flat(schema: dict = SCHEMA, prefix: str = "") -> dict[str, Key]:
    """{dotted name: Key} of every key."""
    out = {}
    for name, entry in schema.items():
        if isinstance(entry, dict):
            out.update(flat(entry, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = entry
    return out


def defaults(schema: dict = SCHEMA) -> dict[str, Any]:
    return {name: defaults(e) if isinstance(e, dict) else _copy(e.default) for name, e in schema.items()}


def _copy(value: Any) -> Any:
    return [_copy(v) for v in value] if isinstance(value, list) else dict(value) if isinstance(value, dict) else value


DEFAULTS: dict[str, Any] = defaults()
AUG_KEYS = tuple(_AUG)


def keys_help() -> str:
    """Every key with its default, range and meaning: the end of every training script's --help."""
    lines = ["config keys (key=value on the command line; default, range: meaning):"]
    for name, key in flat().items():
        default = "null" if key.default is None else key.default
        bounds = key.bounds()
        lines.append(f"  {name} = {default}" + (f"  ({bounds})" if bounds else "") + f": {key.help}")
    return "\n".join(lines)
