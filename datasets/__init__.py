"""Datasets: from the dataset specs of a config to reproducible training batches and evaluation batches.

  images.py     decoding image files (read_image, BadImageError)
  index.py      Sample, the scan of a tree and its CSV cache
  videos.py     video ids ("<kind>:<path>") and which video an id names
  paths.py      dataset roots ({ff}, ... from configs/paths.yaml, SUPCON_<KEY>, data.paths.<key>)
  kinds/        the registry of dataset kinds (kinds/__init__.py) and one module per kind: folder, flat, ff,
                dfdc, celebdf, deepfakebench (keys, layout, builder, identity rule, official split)
  sources.py    a source spec -> its samples; sets of several sources
  splits.py     identity groups, labeled/unlabeled splits by group, frames per video
  overlap.py    the check that no image, video or identity is in two roles
  protocols.py  a config's sets by role, describe, splits.csv, the demo
  sampling.py   step-addressed batches (StepBatchSampler) and stream seeds
  augment.py    the training augmentation per role, per image and batched on the device
  loaders.py    training batches (image files or a pack) and evaluation batches
  packed.py     packs of decoded images in memory-mapped shards (pack_workers.py: the decoding processes)
"""
