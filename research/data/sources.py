"""Loading a split of a dataset into host memory as numpy arrays.

Scarce-data experiments fit in memory, so every split is read once into
`{'image': uint8 [N, H, W, C], 'label': int32 [N]}` and all sampling after
that (few-shot subsets, shuffling, sharding, mixing) is plain numpy indexing:
deterministic and cheap to resume.
"""
from __future__ import annotations

import difflib
import functools
import os
import re

import numpy as np

from research.data import builders, folder, pipeline

DEFAULT_DATA_DIR = os.environ.get(
    "RESEARCH_DATA_DIR", os.path.expanduser("~/.cache/research/tensorflow_datasets"))

# Named TFDS datasets this codebase knows how to read (image + label features).
# Any other registered TFDS image-classification dataset works too; these are
# the ones listed in error messages.
KNOWN_TFDS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn_cropped", "emnist")


class DatasetNotPreparedError(RuntimeError):
  pass


def names() -> list[str]:
  return sorted(builders.OFFLINE_BUILDERS) + list(KNOWN_TFDS)


def _read_all(source) -> dict[str, np.ndarray]:
  n = len(source)
  try:
    examples = source.__getitems__(list(range(n))) if n else []
  except TypeError:  # tfds.testing.mock_data's source has no working batched read
    examples = [source[i] for i in range(n)]
  images = np.stack([np.asarray(e["image"]) for e in examples]).astype(np.uint8)
  if images.ndim == 3:
    images = images[..., None]
  labels = np.asarray([int(e["label"]) for e in examples], np.int32)
  return {"image": images, "label": labels}


def _offline_source(name: str, split: str, data_dir: str):
  make = lambda: builders.OFFLINE_BUILDERS[name](data_dir=data_dir, file_format="array_record")
  # Concurrent runs (a sweep, pytest-xdist workers, two hosts) may prepare the
  # same dataset at once. A builder reads dataset_info.json when it is
  # constructed, so one made before another process finished preparing has
  # empty splits: construct it under the lock, and again once it is prepared.
  with builders.file_lock(os.path.join(data_dir, f".{name}.lock")):
    builder = make()
    if not os.path.exists(os.path.join(builder.data_dir, "dataset_info.json")):
      builder.download_and_prepare()
    builder = make()
  return builder.as_data_source(split=split)


def _tfds_source(name: str, split: str, data_dir: str):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    close = difflib.get_close_matches(name, names(), n=3)
    raise ValueError(f"Unknown dataset {name!r}; valid datasets: {names()} "
                     f"or any registered TFDS image dataset"
                     + (f" (did you mean {close}?)" if close else "")) from None
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception:  # pylint: disable=broad-except
    if builder.is_prepared():
      raise
  raise DatasetNotPreparedError(
      f"Dataset {name!r} is not prepared in {data_dir!r} and this machine "
      f"cannot download it. Prepare it on a machine with internet access with "
      f"`tfds build {name} --data_dir DIR --file_format array_record` and copy "
      f"DIR here (or set data.data_dir / $RESEARCH_DATA_DIR to it).")


def load(name: str, split: str, data_dir: str | None = None,
         image_size: int = 0, folder_channels: int = 3,
         folder_resize: str = "crop") -> dict[str, np.ndarray]:
  """Loads `split` of dataset `name` into memory.

  Args:
    name: 'mnist5k', 'uci_digits' (built offline from installed packages) or a
      TFDS dataset name ('mnist', 'cifar10', ...), which must be prepared.
    split: a split name, optionally with TFDS slicing ('train[:80%]').
    data_dir: TFDS data directory; default $RESEARCH_DATA_DIR or
      ~/.cache/research/tensorflow_datasets.
    image_size: if > 0, images are resized (bilinear) to [size, size].
    folder_channels, folder_resize: for 'folder:/path' datasets (the user's own
      images, research/data/folder.py): 3 (RGB) or 1 (grayscale); 'crop' or 'pad'.

  Returns:
    {'image': uint8 [N, H, W, C] in [0, 255], 'label': int32 [N]}.
  """
  data_dir = data_dir or DEFAULT_DATA_DIR
  if folder.is_folder(name):
    return _read_all(folder.source(name, split, data_dir, image_size, folder_channels,
                                   folder_resize))
  if name in builders.OFFLINE_BUILDERS:
    arrays = _read_all(_offline_source(name, split, data_dir))
  elif re.fullmatch(r"[a-z0-9_]+(/[a-z0-9_.]+)?(:[0-9.]+)?", name):
    arrays = _read_all(_tfds_source(name, split, data_dir))
  else:
    raise ValueError(f"Unknown dataset {name!r}; valid datasets: {names()}, or "
                     f"'folder:/path/to/root' for your own images in class folders")
  if image_size and arrays["image"].shape[1:3] != (image_size, image_size):
    arrays["image"] = resize_uint8(arrays["image"], image_size)
  return arrays


@functools.lru_cache(maxsize=32)
def class_names(name: str, data_dir: str | None = None, image_size: int = 0,
                folder_channels: int = 3, folder_resize: str = "crop") -> tuple[str, ...]:
  """Display names of dataset `name`'s classes, index = label.

  Cached per process: every evaluation of a run asks again, and for a folder
  dataset the answer would otherwise rescan the folder.

  A folder dataset: its class folder names (saved with the dataset). The digit
  datasets built offline: '0'..'9'. A named TFDS dataset: its ClassLabel names
  (from the prepared dataset's metadata, never downloaded); a dataset whose
  label has no names gets [] and callers fall back to the label numbers.
  """
  data_dir = data_dir or DEFAULT_DATA_DIR
  if folder.is_folder(name):
    return tuple(folder.class_names(name, data_dir, image_size, folder_channels, folder_resize))
  if name in builders.OFFLINE_BUILDERS:
    return tuple(str(d) for d in range(10))
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    label = tfds.builder(name, data_dir=data_dir).info.features["label"]
  except Exception:  # pylint: disable=broad-except  (unknown or unprepared: no names)
    return ()
  return tuple(getattr(label, "names", None) or ())


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize of uint8 [N, H, W, C] to [N, size, size, C] (PIL, antialiased)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  out = np.empty((len(images), size, size, images.shape[-1]), np.uint8)
  for i, im in enumerate(images):
    for c in range(images.shape[-1]):
      out[i, :, :, c] = np.asarray(
          Image.fromarray(im[:, :, c]).resize((size, size), Image.BILINEAR))
  return out


def load_npz(path: str) -> dict[str, np.ndarray]:
  """Loads a synthetic set written by a generator: {'image': uint8, 'label': int32}.

  The file's images are uint8 in [0, 255] or float in [0, 1]; arrays of different
  lengths, non-finite or out-of-range images are refused (see pipeline.validate_arrays).
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"data.synthetic: no file at {path!r}")
  with np.load(path) as f:
    if "image" not in f or "label" not in f:
      raise ValueError(f"data.synthetic: {path!r} must hold 'image' and 'label', "
                       f"has {sorted(f.keys())}")
    arrays = pipeline.validate_arrays({"image": f["image"], "label": f["label"]},
                                      f"data.synthetic {path!r}")
  image = arrays["image"]
  if np.issubdtype(image.dtype, np.floating):  # [0, 1], checked above
    image = np.round(image * 255)
  return {"image": image.astype(np.uint8), "label": arrays["label"].astype(np.int32)}
