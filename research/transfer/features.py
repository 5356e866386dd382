"""Frozen pooled features of a backbone over a dataset, with an on-disk cache.

  key = features.FeatureKey(weights=features.weights_hash(variables),
                            model='efficientnet_lite0', input_size=224,
                            normalize='imagenet', dataset='mnist5k', split='train')
  cache = features.FeatureCache('~/.cache/research/features')
  feats, labels, hit = cache.get_or_extract(
      key, lambda: (features.extract(feature_fn, variables, images), labels))

Extraction runs `feature_fn(variables, images) -> [n, D]` over all devices
with `research.parallel.DataParallel` (its psum'd eval step gathers each
device's rows into its own slot), in fixed-shape batches (the last one padded),
with a tqdm progress bar.

A cache file is named by the digest of its key and stores the key itself, a
format version and a SHA-256 of its arrays. `load` refuses (StaleCacheError)
a file whose stored key differs from the requested one, written by another
format version, whose checksum or shapes do not match, or that cannot be
read; `get_or_extract` then extracts again and overwrites it. A different key
(other weights, model, input size, normalisation, dataset, split or subset)
is a different file, so a mismatched cache is never used.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from research import params as params_lib
from research import parallel

FORMAT_VERSION = 1
DEFAULT_DIR = os.path.join("~", ".cache", "research", "features")
log = logging.getLogger(__name__)


class StaleCacheError(ValueError):
  """A feature cache file that must not be used (wrong key, version, corrupt)."""


@dataclasses.dataclass(frozen=True)
class FeatureKey:
  """Everything the features depend on.

  weights: `weights_hash(variables)`; model: registry name; input_size: side
  the images are resized to (0 = as stored); normalize: input normalisation
  name; dataset, split: where the images come from; subset: 'all' or
  `subset_name(indices)` for a subset of the split (e.g. a k-shot subset).
  """
  weights: str
  model: str
  input_size: int
  normalize: str
  dataset: str
  split: str
  subset: str = "all"

  def as_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def digest(self) -> str:
    text = json.dumps(self.as_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def weights_hash(variables: Any) -> str:
  """SHA-256 (hex, 16 chars) over every leaf's path, dtype, shape and bytes."""
  h = hashlib.sha256()
  for name, leaf in sorted(params_lib.flatten(jax.device_get(variables)).items()):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{name}|{a.dtype}|{a.shape}|".encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


def subset_name(indices: np.ndarray) -> str:
  """'idx<n>-<sha>' naming a subset by its (ordered) int64 example indices."""
  a = np.ascontiguousarray(np.asarray(indices, np.int64))
  return f"idx{a.size}-{hashlib.sha256(a.tobytes()).hexdigest()[:16]}"


def _checksum(features: np.ndarray, labels: np.ndarray) -> str:
  h = hashlib.sha256()
  for a in (features, labels):
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype}|{a.shape}|".encode())
    h.update(a.tobytes())
  return h.hexdigest()


class FeatureCache:
  """Feature arrays on disk, one .npz per FeatureKey (see module doc)."""

  def __init__(self, root: str = DEFAULT_DIR):
    self.root = os.path.abspath(os.path.expanduser(root))

  def path(self, key: FeatureKey) -> str:
    return os.path.join(self.root, f"{key.model}-{key.dataset}-{key.split}-"
                        f"{key.digest()}.npz")

  def load(self, key: FeatureKey) -> tuple[np.ndarray, np.ndarray] | None:
    """(features float32 [N, D], labels int [N]) or None if there is no file.

    Raises:
      StaleCacheError naming the file and the reason when it exists but is
      not exactly the cache of `key`.
    """
    path = self.path(key)
    if not os.path.exists(path):
      return None
    try:
      with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        features, labels = f["features"], f["labels"]
    except Exception as e:  # any unreadable file is refused, never used
      raise StaleCacheError(f"feature cache {path}: unreadable ({e})") from e
    if meta.get("version") != FORMAT_VERSION:
      raise StaleCacheError(f"feature cache {path}: format version "
                            f"{meta.get('version')}, expected {FORMAT_VERSION}")
    if meta.get("key") != key.as_dict():
      raise StaleCacheError(f"feature cache {path}: stored key {meta.get('key')} "
                            f"!= requested {key.as_dict()}")
    if (features.ndim != 2 or labels.shape != (features.shape[0],)
        or list(features.shape) != meta.get("shape")):
      raise StaleCacheError(f"feature cache {path}: shapes {features.shape}, "
                            f"{labels.shape} != stored {meta.get('shape')}")
    if _checksum(features, labels) != meta.get("sha256"):
      raise StaleCacheError(f"feature cache {path}: checksum mismatch (corrupt)")
    return features, labels

  def save(self, key: FeatureKey, features: np.ndarray, labels: np.ndarray) -> str:
    """Writes the cache of `key` atomically; returns its path."""
    features = np.asarray(features, np.float32)
    labels = np.asarray(labels)
    if features.ndim != 2 or labels.shape != (features.shape[0],):
      raise ValueError(f"FeatureCache.save: expected features [N, D] and labels "
                       f"[N], got {features.shape} and {labels.shape}")
    os.makedirs(self.root, exist_ok=True)
    meta = dict(version=FORMAT_VERSION, key=key.as_dict(), shape=list(features.shape),
                sha256=_checksum(features, labels))
    path = self.path(key)
    tmp = f"{path}.tmp{os.getpid()}.npz"
    np.savez(tmp, features=features, labels=labels, meta=np.array(json.dumps(meta)))
    os.replace(tmp, path)
    return path

  def get_or_extract(self, key: FeatureKey,
                     extract_fn: Callable[[], tuple[np.ndarray, np.ndarray]]
                     ) -> tuple[np.ndarray, np.ndarray, bool]:
    """(features, labels, hit): loads the cache of `key`, else runs
    `extract_fn() -> (features, labels)` and stores its result. A refused
    (stale/corrupt) file is logged and overwritten, never used."""
    try:
      cached = self.load(key)
    except StaleCacheError as e:
      log.warning("%s; extracting again", e)
      cached = None
    if cached is not None:
      return cached[0], cached[1], True
    features, labels = extract_fn()
    self.save(key, features, labels)
    return np.asarray(features, np.float32), np.asarray(labels), False


class Extractor:
  """`feature_fn` over all local devices, compiled once for repeated calls.

  Args:
    feature_fn: (variables, images [n, ...] as stored) -> float [n, D], pure
      and jit-able (preprocessing included).
    batch_size: global batch; rounded up to a multiple of the device count.
    mode: 'pmap' or 'shard_map' (research.parallel).
  """

  def __init__(self, feature_fn: Callable[[Any, jax.Array], jax.Array],
               batch_size: int = 256, mode: str = "pmap"):
    n_dev = jax.local_device_count()
    self.batch_size = max(1, -(-batch_size // n_dev)) * n_dev

    def gather(state, batch):
      feats = feature_fn(state, batch["image"]).astype(jnp.float32)
      slots = jnp.zeros((n_dev,) + feats.shape, jnp.float32)
      return slots.at[jax.lax.axis_index(parallel.AXIS)].set(feats)  # psum'd by the engine

    self.dp = parallel.DataParallel(lambda s, b, r: (s, {}), gather, mode=mode, donate=False)

  def __call__(self, variables: Any, images: np.ndarray, progress: bool = False,
               desc: str = "features") -> np.ndarray:
    """float32 [N, D] numpy, row i the features of images[i] ([N, ...] numpy)."""
    state = self.dp.put_state(variables)
    n, bs = len(images), self.batch_size
    out = []
    bar = None
    if progress:
      from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
      bar = tqdm.tqdm(total=n, desc=desc, unit="img", leave=False)
    for start in range(0, n, bs):
      chunk = np.asarray(images[start:start + bs])
      real = len(chunk)
      if real < bs:  # fixed shapes: pad, then drop the padded rows
        pad = np.zeros((bs - real,) + chunk.shape[1:], chunk.dtype)
        chunk = np.concatenate([chunk, pad])
      feats = self.dp.eval_step(state, self.dp.put_batch(parallel.shard({"image": chunk})))
      out.append(np.asarray(feats).reshape(bs, -1)[:real])
      if bar is not None:
        bar.update(real)
    if bar is not None:
      bar.close()
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def extract(feature_fn: Callable[[Any, jax.Array], jax.Array], variables: Any,
            images: np.ndarray, batch_size: int = 256, mode: str = "pmap",
            progress: bool = True, desc: str = "features") -> np.ndarray:
  """Runs `feature_fn` over `images` on all local devices (one `Extractor` call).

  Args:
    feature_fn: (variables, images [n, ...] as stored) -> float [n, D], pure
      and jit-able (preprocessing included).
    variables: the model's variables (replicated on every device).
    images: [N, ...] numpy array, any dtype `feature_fn` takes.
    batch_size: global batch; rounded up to a multiple of the device count.
    mode: 'pmap' or 'shard_map' (research.parallel).
    progress: show a tqdm bar.

  Returns:
    float32 [N, D] numpy, row i the features of images[i].
  """
  return Extractor(feature_fn, batch_size, mode)(variables, images, progress, desc)


def pooled_feature_fn(model, input_fn: Callable[[jax.Array], jax.Array]):
  """feature_fn for a registry model whose `apply(..., return_features=True)`
  returns (logits, pooled features): eval mode (running BatchNorm statistics).

  input_fn: stored images [n, ...] -> the model's input (resize, channels,
  normalisation), e.g. a classify task's `inputs`.
  """
  def feature_fn(variables, images):
    _, feats = model.apply(variables, input_fn(images), train=False, return_features=True)
    return feats
  return feature_fn
