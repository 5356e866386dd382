"""Deterministic, resumable, per-process batching over in-memory arrays.

A training stream is an infinite sequence of example indices: the
concatenation of per-epoch permutations, epoch e drawn from
`np.random.default_rng([seed, e])`. A global batch is the next
`global_batch_size` indices of that sequence; process p of P takes the p-th
contiguous slice. The whole iterator state is one integer, the position in
the sequence, which the trainer saves in every checkpoint: a resumed run sees
exactly the batches the uninterrupted run would have seen, and this holds for
datasets smaller than one batch (k-shot with small k).
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np

Arrays = Mapping[str, np.ndarray]


def few_shot_indices(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
  """Sorted indices of a stratified subset: exactly `k` examples of every class."""
  labels = np.asarray(labels)
  rng = np.random.default_rng([seed, 0x5EED])
  chosen = []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    if k > len(idx):
      raise ValueError(f"data.few_shot: k={k} but class {c} has only {len(idx)} examples")
    chosen.append(rng.choice(idx, size=k, replace=False))
  return np.sort(np.concatenate(chosen))


def few_shot(arrays: Arrays, k: int, seed: int, label_key: str = "label") -> dict[str, np.ndarray]:
  """A stratified subset with exactly `k` examples of every class, drawn by `seed`."""
  idx = few_shot_indices(arrays[label_key], k, seed)
  return {key: np.asarray(v)[idx] for key, v in arrays.items()}


def train_val_indices(labels: np.ndarray, k: int, seed: int,
                      val_per_class: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(train, validation) indices into `labels`: the k-shot subset drawn by `seed`
  (every example when k == 0), minus `val_per_class` examples of every class
  held out from it for validation (the same ones `split_holdout` takes).

  With a validation split, the k labelled images per class a scarce-data run
  has are k - val_per_class for training plus val_per_class for model
  selection: nothing outside the k-shot subset is ever looked at.
  """
  labels = np.asarray(labels)
  idx = few_shot_indices(labels, k, seed) if k else np.arange(len(labels))
  if not val_per_class:
    return idx, idx[:0]
  if val_per_class < 0 or (k and val_per_class >= k):
    raise ValueError(f"data.few_shot_val={val_per_class} must be in [0, few_shot_k={k}): "
                     f"at least one example per class has to remain for training")
  val_local = few_shot_indices(labels[idx], val_per_class, seed + 1)
  keep = np.ones(len(idx), bool)
  keep[val_local] = False
  return idx[keep], idx[val_local]


def split_holdout(arrays: Arrays, per_class: int, seed: int,
                  label_key: str = "label") -> tuple[dict, dict]:
  """Splits off `per_class` examples of each class as a validation set: (train, val)."""
  train_idx, val_idx = train_val_indices(arrays[label_key], 0, seed, per_class)
  return ({k: np.asarray(v)[train_idx] for k, v in arrays.items()},
          {k: np.asarray(v)[val_idx] for k, v in arrays.items()})


def validate_arrays(arrays: Arrays, what: str) -> dict[str, np.ndarray]:
  """Checks a dataset once on the host; returns it as numpy arrays.

  Refuses (ValueError naming the count and the first index of the bad examples)
  arrays of different lengths, non-finite values in any float array, and float
  'image' arrays outside [0, 1] (uint8 images are [0, 255] by type).
  """
  arrays = {k: np.asarray(v) for k, v in arrays.items()}
  if not arrays:
    raise ValueError(f"{what}: no arrays")
  lengths = {k: len(v) if v.ndim else None for k, v in arrays.items()}
  if len(set(lengths.values())) != 1:
    raise ValueError(f"{what}: arrays must have one length (examples), got {lengths}")
  for key, x in arrays.items():
    if not np.issubdtype(x.dtype, np.floating) or not len(x):
      continue
    per_example = lambda bad: bad.reshape(len(bad), -1).any(axis=1)
    checks = [("non-finite values", per_example(~np.isfinite(x)))]
    if key == "image":
      with np.errstate(invalid="ignore"):
        checks.append(("values outside [0, 1] (float images must be in [0, 1])",
                       per_example((x < 0) | (x > 1))))
    for problem, bad in checks:
      if bad.any():
        raise ValueError(f"{what}: {key!r} has {problem} in {int(bad.sum())} of {len(x)} "
                         f"examples, the first at index {int(np.argmax(bad))}")
  return arrays


def _check_batch(global_batch_size: int, process_count: int, what: str):
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f"{what}: batch size {global_batch_size} must be a positive "
                     f"multiple of the process count {process_count}")


class ArrayIterator(Iterator[dict]):
  """Infinite shuffled batches of `arrays`, this process's slice of each global batch."""

  def __init__(self, arrays: Arrays, global_batch_size: int, seed: int,
               process_index: int = 0, process_count: int = 1, shuffle: bool = True):
    _check_batch(global_batch_size, process_count, "data.ArrayIterator")
    self.arrays = validate_arrays(arrays, "data.ArrayIterator")
    self.n = len(next(iter(self.arrays.values())))
    if self.n == 0:
      raise ValueError("data.ArrayIterator: the dataset is empty")
    self.global_batch_size = global_batch_size
    self.seed, self.shuffle = seed, shuffle
    self.process_index, self.process_count = process_index, process_count
    self.position = 0
    self._cached_epoch, self._cached_perm = -1, None

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch != self._cached_epoch:
      self._cached_perm = (np.random.default_rng([self.seed, epoch]).permutation(self.n)
                           if self.shuffle else np.arange(self.n))
      self._cached_epoch = epoch
    return self._cached_perm

  def indices(self, start: int, count: int) -> np.ndarray:
    out = np.empty(count, np.int64)
    i = 0
    while i < count:
      epoch, offset = divmod(start + i, self.n)
      take = min(self.n - offset, count - i)
      out[i:i + take] = self._permutation(epoch)[offset:offset + take]
      i += take
    return out

  def __next__(self) -> dict:
    local = self.global_batch_size // self.process_count
    idx = self.indices(self.position + self.process_index * local, local)
    self.position += self.global_batch_size
    return {k: v[idx] for k, v in self.arrays.items()}

  def get_state(self) -> dict[str, Any]:
    return {"position": int(self.position)}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Restores a `get_state()` dict; ValueError if it is not one."""
    position = state.get("position") if isinstance(state, Mapping) else None
    if isinstance(position, bool) or not isinstance(position, int) or position < 0:
      raise ValueError(f"data.ArrayIterator: state must be {{'position': int >= 0}}, "
                       f"got {state!r}")
    self.position = position


class MixIterator(Iterator[dict]):
  """Each global batch holds round(ratio * B) synthetic and the rest real examples.

  Both parts are drawn by their own `ArrayIterator` (seeds derived from
  `seed`), so the mix is deterministic and resumable; within each process's
  slice real examples come first.
  """

  def __init__(self, real: Arrays, synthetic: Arrays, ratio: float,
               global_batch_size: int, seed: int, process_index: int = 0,
               process_count: int = 1):
    if not 0.0 <= ratio <= 1.0:
      raise ValueError(f"data.synthetic_ratio must be in [0, 1], got {ratio}")
    n_syn = int(round(ratio * global_batch_size))
    n_syn -= n_syn % process_count
    n_real = global_batch_size - n_syn
    self.parts = []
    for arrays, size, s in ((real, n_real, 0), (synthetic, n_syn, 1)):
      if size:
        self.parts.append(ArrayIterator(arrays, size, seed * 2 + s + 1_000_003 * s,
                                        process_index, process_count))

  def __next__(self) -> dict:
    batches = [next(p) for p in self.parts]
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

  def get_state(self):
    return {"parts": [p.get_state() for p in self.parts]}

  def set_state(self, state):
    parts = state.get("parts") if isinstance(state, Mapping) else None
    if not isinstance(parts, list) or len(parts) != len(self.parts):
      raise ValueError(f"data.MixIterator: state must be {{'parts': [{len(self.parts)} "
                       f"iterator states]}}, got {state!r}")
    for p, s in zip(self.parts, parts):
      p.set_state(s)


class ZipIterator(Iterator[dict]):
  """Several named streams in lockstep: yields {'source': batch, 'target': batch}."""

  def __init__(self, **streams):
    self.streams = streams

  def __next__(self) -> dict:
    return {name: next(s) for name, s in self.streams.items()}

  def get_state(self):
    return {name: s.get_state() for name, s in self.streams.items()}

  def set_state(self, state):
    if not isinstance(state, Mapping) or set(state) != set(self.streams):
      raise ValueError(f"data.ZipIterator: state must have the keys {sorted(self.streams)}, "
                       f"got {state!r}")
    for name, s in self.streams.items():
      s.set_state(state[name])


def eval_batches(arrays: Arrays, global_batch_size: int, process_index: int = 0,
                 process_count: int = 1):
  """A callable giving one pass over `arrays` in fixed order, padded to full batches.

  Each batch has a 'mask' (1.0 for real examples, 0.0 for padding) so metrics
  count every example exactly once whatever the batch and device counts.
  """
  _check_batch(global_batch_size, process_count, "data.eval_batches")
  arrays = validate_arrays(arrays, "data.eval_batches")
  n = len(next(iter(arrays.values())))
  local = global_batch_size // process_count
  num_batches = -(-n // global_batch_size)

  def iterate():
    for b in range(num_batches):
      start = b * global_batch_size + process_index * local
      idx = np.arange(start, start + local)
      valid = idx < n
      idx = np.where(valid, idx, 0)
      batch = {k: v[idx] for k, v in arrays.items()}
      batch["mask"] = valid.astype(np.float32)
      yield batch

  return iterate
