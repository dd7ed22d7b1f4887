"""Datasets: from the dataset specs of a config to reproducible training batches and evaluation batches.

  images.py     decoding image files (read_image, BadImageError)
  index.py      Sample, the scan of a tree and its CSV cache
  paths.py      dataset roots ({ff}, ... from configs/paths.yaml, SUPCON_<KEY>, data.paths.<key>)
  kinds.py      the registry of dataset kinds: keys, layout, builder, identity rule
  sources.py    a source spec -> its samples; sets of several sources
  splits.py     identity groups, labeled/unlabeled splits by group, frames per video
  protocols.py  a config's sets by role, describe, splits.csv, the demo
  sampling.py   step-addressed batches (StepBatchSampler) and stream seeds
  augment.py    the training augmentation per role, per image and batched on the device
  loaders.py    training batches (image files or a pack) and evaluation batches
  packed.py     packs of decoded images in memory-mapped shards
"""
from datasets.augment import eval_transform, train_transform
from datasets.images import IMG_EXTS, BadImageError, read_image
from datasets.index import Sample
from datasets.kinds import FF_METHODS
from datasets.loaders import EvalDataset, ImageDataset, eval_loader, train_batches, train_loader
from datasets.sampling import StepBatchSampler
from datasets.sources import build_set, build_source
from datasets.splits import limit_frames, split_by_video, target_id

__all__ = ["FF_METHODS", "IMG_EXTS", "Sample", "build_set", "build_source", "limit_frames", "split_by_video",
           "target_id", "read_image", "BadImageError", "ImageDataset", "EvalDataset", "StepBatchSampler",
           "train_transform", "eval_transform", "train_loader", "train_batches", "eval_loader"]
