"""Frechet distance, KID and Classification Accuracy Score on named features.

The feature extractor is a named, swappable part: the same code computes
Inception-FID where Inception weights exist and, here, a "classifier FID" on
the penultimate features of a frozen classifier trained on the real data. The
scale of a Frechet distance depends on the feature layer, so a score is only
meaningful next to its floor (real-train vs real-test under the same
extractor) and must never be compared with Inception-FID numbers;
`generative_report` always returns both, with the extractor's name and hash.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Callable

import jax
import numpy as np


# ---------------------------------------------------------------- features
def hash_tree(tree: Any) -> str:
  """sha256 (hex, first 16 chars) of a pytree's leaf names, shapes and bytes."""
  h = hashlib.sha256()
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  for path, leaf in leaves:
    arr = np.ascontiguousarray(np.asarray(leaf))
    h.update(jax.tree_util.keystr(path).encode())
    h.update(str((arr.shape, arr.dtype.str)).encode())
    h.update(arr.tobytes())
  return h.hexdigest()[:16]


def hash_path(path: str) -> str:
  """sha256 (hex, first 16 chars) of a file, or of every file under a directory."""
  h = hashlib.sha256()
  if os.path.isdir(path):
    files = sorted(os.path.join(root, f) for root, _, fs in os.walk(path)
                   for f in fs)
  elif os.path.isfile(path):
    files = [path]
  else:
    raise FileNotFoundError(f"metrics.fid.hash_path: no file or directory at "
                            f"{path!r}")
  for f in files:
    h.update(os.path.relpath(f, path if os.path.isdir(path) else
                             os.path.dirname(f)).encode())
    with open(f, "rb") as fh:
      for block in iter(lambda: fh.read(1 << 20), b""):
        h.update(block)
  return h.hexdigest()[:16]


class FeatureExtractor:
  """A named image -> feature map, identified by its checkpoint's hash.

  Attributes:
    name: what the features are, e.g. 'mnist5k_small_cnn/penultimate' or
      'inception_v3/pool3'; printed beside every score.
    checkpoint_hash: hash of the weights (`hash_path` / `hash_tree`).
    fn: `images float32 [n, H, W, C] in [0, 1] -> features [n, D]`, applied
      in batches of `batch_size` (the last batch is padded to keep one
      compiled shape).
  """

  def __init__(self, name: str, checkpoint_hash: str,
               fn: Callable[[np.ndarray], Any], batch_size: int = 500):
    if batch_size < 1:
      raise ValueError(f"metrics.FeatureExtractor: batch_size must be >= 1, "
                       f"got {batch_size}")
    self.name = name
    self.checkpoint_hash = checkpoint_hash
    self.fn = fn
    self.batch_size = batch_size

  def __repr__(self):
    return f"FeatureExtractor({self.name!r}, hash={self.checkpoint_hash})"

  def __call__(self, images: np.ndarray) -> np.ndarray:
    """images: float32 [N, H, W, C] in [0, 1] -> float64 [N, D]."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
      raise ValueError(f"metrics.FeatureExtractor({self.name}): images must be "
                       f"[N, H, W, C], got shape {images.shape}")
    out = []
    for start in range(0, len(images), self.batch_size):
      chunk = images[start:start + self.batch_size]
      n = len(chunk)
      if n < self.batch_size:
        chunk = np.concatenate(
            [chunk, np.zeros((self.batch_size - n,) + chunk.shape[1:],
                             chunk.dtype)])
      out.append(np.asarray(self.fn(chunk), np.float64)[:n])
    return np.concatenate(out).reshape(len(images), -1)


def flax_classifier_features(name: str, model, variables, checkpoint_hash: str
                             | None = None, batch_size: int = 500,
                             preprocess: Callable | None = None
                             ) -> FeatureExtractor:
  """A FeatureExtractor from a frozen Flax classifier's penultimate layer.

  `model.apply(variables, x, train=False, return_features=True)` must return
  (logits, features), as the classifiers in `research.models` do.
  `preprocess` maps [0, 1] images to the model's input (default: identity).
  The hash defaults to `hash_tree(variables)`.
  """
  preprocess = preprocess or (lambda x: x)

  @jax.jit
  def features(x):
    return model.apply(variables, preprocess(x), train=False,
                       return_features=True)[1]

  return FeatureExtractor(name, checkpoint_hash or hash_tree(variables),
                          features, batch_size)


# ---------------------------------------------------------------- distances
def _mean_cov(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or len(f) < 2:
    raise ValueError(f"metrics.fid: features must be [N >= 2, D], got shape "
                     f"{f.shape}")
  return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2) -> float:
  """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2}) (Frechet/W2 of Gaussians).

  tr((S1 S2)^{1/2}) is computed as the sum of square roots of the eigenvalues
  of the symmetric PSD matrix S1^{1/2} S2 S1^{1/2}, which has the same
  spectrum and avoids a non-symmetric matrix square root.

  Args:
    mu1, mu2: float [D]; sigma1, sigma2: float [D, D], symmetric PSD.

  Returns:
    float >= 0 (up to round-off).
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
    raise ValueError(f"metrics.frechet_distance: shapes must be [D] and [D, D], "
                     f"got {mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape}")
  w, v = np.linalg.eigh((s1 + s1.T) / 2)
  sqrt_s1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  m = sqrt_s1 @ s2 @ sqrt_s1
  tr_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)))
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
               - 2 * tr_sqrt)


def frechet_distance(features1: np.ndarray, features2: np.ndarray) -> float:
  """Frechet distance between Gaussians fitted to two feature sets [N1, D], [N2, D]."""
  return frechet_distance_from_stats(*_mean_cov(features1),
                                     *_mean_cov(features2))


def _polynomial_kernel(x, y):
  return (x @ y.T / x.shape[1] + 1.0) ** 3


def kernel_inception_distance(features1: np.ndarray, features2: np.ndarray,
                              num_subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
  """KID (Binkowski et al. 2018): unbiased MMD^2, cubic polynomial kernel.

  k(x, y) = (x.y / D + 1)^3; the unbiased estimate is averaged over
  `num_subsets` random subsets of `subset_size` (capped at the smaller set).

  Returns:
    (mean, std) over subsets; the mean is unbiased (may be slightly < 0).
  """
  f1 = np.asarray(features1, np.float64)
  f2 = np.asarray(features2, np.float64)
  if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
    raise ValueError(f"metrics.kid: features must be [N1, D] and [N2, D], got "
                     f"{f1.shape} and {f2.shape}")
  m = min(subset_size, len(f1), len(f2))
  if m < 2:
    raise ValueError(f"metrics.kid: need >= 2 examples per set, got "
                     f"{len(f1)} and {len(f2)}")
  rng = np.random.default_rng(seed)
  values = []
  for _ in range(num_subsets):
    x = f1[rng.choice(len(f1), m, replace=False)]
    y = f2[rng.choice(len(f2), m, replace=False)]
    kxx, kyy, kxy = (_polynomial_kernel(x, x), _polynomial_kernel(y, y),
                     _polynomial_kernel(x, y))
    values.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                  + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                  - 2 * kxy.mean())
  return float(np.mean(values)), float(np.std(values))


# ------------------------------------------------------------------ reports
def classification_accuracy_score(predict_fn: Callable[[np.ndarray], Any],
                                  images: np.ndarray, labels: np.ndarray,
                                  num_classes: int, batch_size: int = 500
                                  ) -> dict[str, Any]:
  """CAS (Ravuri & Vinyals 2019): accuracy on REAL test data of a classifier
  trained on GENERATED data only (train it with the classify task on an .npz
  of samples, `data.synthetic_ratio = 1`).

  Args:
    predict_fn: `images [n, H, W, C] -> logits [n, num_classes]`.
    images: the real test images, float32 [N, H, W, C] in the range
      `predict_fn` expects.
    labels: int [N] in [0, num_classes).

  Returns:
    {'cas': accuracy in [0, 1], 'per_class': list of C accuracies (nan for an
    absent class), 'count': N}.
  """
  labels = np.asarray(labels)
  preds = np.concatenate([
      np.argmax(np.asarray(predict_fn(images[i:i + batch_size])), axis=-1)
      for i in range(0, len(images), batch_size)])
  correct = preds == labels
  per_class = [float(correct[labels == c].mean()) if np.any(labels == c)
               else float("nan") for c in range(num_classes)]
  return {"cas": float(correct.mean()), "per_class": per_class,
          "count": int(len(labels))}


def generative_report(extractor: FeatureExtractor, generated: np.ndarray,
                      real_train: np.ndarray, real_test: np.ndarray,
                      kid_subset_size: int = 1000, seed: int = 0
                      ) -> dict[str, Any]:
  """Frechet distance and KID of generated vs real-test, beside the floor.

  The floor is the same metric between real-train and real-test: what a
  perfect generator of the training set would score under this extractor.

  Args:
    extractor: the named feature extractor.
    generated, real_train, real_test: float32 [N, H, W, C] in [0, 1].

  Returns:
    dict with 'fd', 'fd_floor', 'kid', 'kid_std', 'kid_floor', 'extractor',
    'extractor_hash', 'n_generated', 'n_real_test'.
  """
  fg, ftr, fte = extractor(generated), extractor(real_train), extractor(real_test)
  kid, kid_std = kernel_inception_distance(fg, fte, subset_size=kid_subset_size,
                                           seed=seed)
  kid_floor, _ = kernel_inception_distance(ftr, fte, subset_size=kid_subset_size,
                                           seed=seed)
  return {"fd": frechet_distance(fg, fte), "fd_floor": frechet_distance(ftr, fte),
          "kid": kid, "kid_std": kid_std, "kid_floor": kid_floor,
          "extractor": extractor.name, "extractor_hash": extractor.checkpoint_hash,
          "n_generated": len(fg), "n_real_test": len(fte)}
