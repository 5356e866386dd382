"""The data layer: offline TFDS builders, named TFDS datasets, few-shot subsets,
real+synthetic mixing, per-process sharding and resumable iteration.

Configured by a `data` ConfigDict:
  name: dataset ('mnist5k', 'uci_digits', 'mnistm5k', a prepared TFDS dataset, or
    'folder:/path' for the user's own images in class folders (research/data/folder.py;
    needs image_size > 0; folder_channels 3 | 1, folder_resize 'crop' | 'pad')
  train_split, eval_split: split names ('train', 'test', 'train[:90%]')
  data_dir: TFDS data dir ('' = default)
  image_size: resize on load (0 = native size)
  few_shot_k: if > 0, keep k labelled training examples per class
  few_shot_seed: which k-shot subset
  few_shot_val: examples per class held out of the (k-shot) training set for
    validation (0 = none); the trainer evaluates them as the 'val' set
  synthetic: path of an .npz of generated {'image','label'} ('' = none)
  synthetic_ratio: fraction of every training batch drawn from `synthetic`
  frame, frame_size, frame_threshold, frame_levels: digit framing of every
    split on load, before the resize to image_size (research/data/frame.py;
    absent or frame='' = none)
"""
from __future__ import annotations

import numpy as np

from research.data import frame
from research.data import sources as _sources
from research.data.pipeline import (ArrayIterator, MixIterator, ZipIterator,  # noqa: F401
                                    eval_batches as eval_batches_from_arrays,
                                    few_shot, few_shot_indices, split_holdout,
                                    train_val_indices)
from research.data.sources import (DatasetNotPreparedError, load, load_npz,  # noqa: F401
                                   names)


def load_split(cfg, split: str) -> dict:
  """`split` of the dataset a data config names, framed (data.frame) and resized.

  Returns:
    {'image': uint8 [N, S, S, C] in [0, 255], 'label': int32 [N]}.
  """
  framed = bool(cfg.get("frame", ""))
  arrays = load(cfg.name, split, cfg.get("data_dir") or None,
                0 if framed else cfg.get("image_size", 0),
                cfg.get("folder_channels", 3), cfg.get("folder_resize", "crop"))
  if framed:  # on the images as stored, then resized to image_size
    arrays["image"] = frame.frame_and_resize(arrays["image"], cfg)
  return arrays


def class_names(cfg, num_classes: int = 0) -> list[str]:
  """Display names of the classes of the dataset a data config names, index = label.

  Folder datasets: their class folder names; named TFDS datasets: their label
  names; otherwise (or when there are fewer names than `num_classes`) the
  label numbers as strings.
  """
  names_ = list(_sources.class_names(cfg.name, cfg.get("data_dir") or None,
                                     cfg.get("image_size", 0), cfg.get("folder_channels", 3),
                                     cfg.get("folder_resize", "crop")))
  if len(names_) < num_classes:
    names_ = names_ + [str(i) for i in range(len(names_), num_classes)]
  return names_


def _check_few_shot(labels: np.ndarray, k, val) -> None:
  """ValueError naming data.few_shot_k / few_shot_val unless the split can provide them."""
  for field, v in (("few_shot_k", k), ("few_shot_val", val)):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
      raise ValueError(f"data.{field}={v!r}: must be an integer >= 0 (0 = off)")
  classes, counts = np.unique(labels, return_counts=True)
  need, field = (k, "few_shot_k") if k else (val, "few_shot_val")
  if need and len(counts) and need > counts.min():
    raise ValueError(f"data.{field}={need}: class {classes[counts.argmin()]} of the training "
                     f"split has only {counts.min()} examples")


def _train_val(cfg) -> tuple[dict, dict]:
  arrays = load_split(cfg, cfg.get("train_split", "train"))
  k, val = cfg.get("few_shot_k", 0), cfg.get("few_shot_val", 0)
  _check_few_shot(arrays["label"], k, val)
  if not k and not val:
    return arrays, {}
  train_idx, val_idx = train_val_indices(arrays["label"], k, cfg.get("few_shot_seed", 0), val)
  return ({key: v[train_idx] for key, v in arrays.items()},
          {key: v[val_idx] for key, v in arrays.items()} if val else {})


def load_train(cfg) -> dict:
  """The training arrays a data config describes (few-shot subset, minus validation)."""
  return _train_val(cfg)[0]


def load_val(cfg) -> dict:
  """The validation arrays held out of the training set (data.few_shot_val), or {}."""
  return _train_val(cfg)[1]


def train_iterator(cfg, ctx, seed_offset: int = 0):
  """The resumable training iterator for data config `cfg` and run layout `ctx`."""
  real = load_train(cfg)
  seed = ctx.seed + seed_offset
  if cfg.get("synthetic", "") and cfg.get("synthetic_ratio", 0.0) > 0:
    synthetic = load_npz(cfg.synthetic)
    return MixIterator(real, synthetic, cfg.synthetic_ratio, ctx.global_batch_size,
                       seed, ctx.process_index, ctx.process_count)
  return ArrayIterator(real, ctx.global_batch_size, seed, ctx.process_index,
                       ctx.process_count)


def eval_batches(cfg, ctx, global_batch_size: int, split: str | None = None):
  """A callable giving one padded pass over the eval split (see pipeline.eval_batches)."""
  arrays = load_split(cfg, split or cfg.get("eval_split", "test"))
  return eval_batches_from_arrays(arrays, global_batch_size, ctx.process_index,
                                  ctx.process_count)


def eval_sets(cfg, ctx, global_batch_size: int) -> dict:
  """{'': the eval split, 'val': the held-out validation set (when data.few_shot_val)}."""
  sets = {"": eval_batches(cfg, ctx, global_batch_size)}
  if cfg.get("few_shot_val", 0):
    sets["val"] = eval_batches_from_arrays(load_val(cfg), global_batch_size,
                                           ctx.process_index, ctx.process_count)
  return sets
