"""Local stand-ins for the torch globals a state-dict pickle may name.

A state dict's pickle needs only `collections.OrderedDict`,
`torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter(_with_state)`
and the `torch.*Storage` types, plus persistent ids naming the storages.
`Load.find_global` answers each with a NEW stand-in (a `safe_pickle.Function`
or a `_StorageType`) that builds no torch object; `Load.persistent_load`
records each storage's declared dtype and size, bounded by `max_bytes`.
Tensors are checked to lie inside their storage when they are built.
"""
from __future__ import annotations

import collections
import dataclasses
import math

import numpy as np

from research.transfer.safe_pickle import (CheckpointError, Function,
                                           UnsafeCheckpointError)

_INT64 = 2**63

# torch storage class name -> numpy dtype (little-endian, as torch writes).
STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
    "UntypedStorage": np.dtype("u1"),
}
ALLOWED_GLOBALS = frozenset(
    ["collections.OrderedDict", "torch._utils._rebuild_tensor_v2",
     "torch._utils._rebuild_parameter",
     "torch._utils._rebuild_parameter_with_state"] +
    [f"torch.{name}" for name in STORAGE_DTYPES])


@dataclasses.dataclass(frozen=True, slots=True)
class StorageType:
  name: str


@dataclasses.dataclass(slots=True)
class Storage:
  """A storage named in the pickle; its bytes are attached afterwards."""
  key: str
  dtype: np.dtype
  numel: int
  data: np.ndarray | None = None  # 1-D, dtype `dtype`, length `numel`

  @property
  def nbytes(self) -> int:
    return self.numel * self.dtype.itemsize


def _ints(what: str, values) -> tuple[int, ...]:
  if type(values) not in (tuple, list) or len(values) > 64 or not all(
      type(v) is int and -_INT64 <= v < _INT64 for v in values):  # pylint: disable=unidiomatic-typecheck
    raise CheckpointError(f"tensor {what} must be a tuple of at most 64 "
                          f"int64, got a {type(values).__name__}")
  return tuple(values)


@dataclasses.dataclass(slots=True)
class Tensor:
  """A strided view of a storage, checked to lie inside it when built."""
  storage: Storage
  offset: int
  shape: tuple[int, ...]
  stride: tuple[int, ...]

  def __post_init__(self):
    st, shape, stride = self.storage, self.shape, self.stride
    if len(shape) != len(stride) or min(shape + stride, default=0) < 0:
      raise CheckpointError(f"tensor size {shape} and stride {stride} must "
                            "be >= 0 and of the same length")
    if not 0 <= self.offset <= st.numel:
      raise CheckpointError(
          f"storage offset {self.offset} is out of range for storage "
          f"{st.key!r} of {st.numel} elements")
    if math.prod(shape) > 0:
      last = self.offset + sum((n - 1) * s for n, s in zip(shape, stride))
      if last >= st.numel:
        raise CheckpointError(
            f"tensor of size {shape}, stride {stride}, offset {self.offset} "
            f"reads element {last}, past storage {st.key!r} of {st.numel} "
            "elements")

  @property
  def nbytes(self) -> int:
    return math.prod(self.shape) * self.storage.dtype.itemsize

  def numpy(self) -> np.ndarray:
    """A contiguous copy, dtype of the storage, shape `shape`."""
    data = self.storage.data
    if math.prod(self.shape) == 0:
      return np.zeros(self.shape, self.storage.dtype)
    view = np.lib.stride_tricks.as_strided(
        data[self.offset:], shape=self.shape,
        strides=[s * data.itemsize for s in self.stride], writeable=False)
    return np.array(view)


def _ordered_dict(*args):
  if args:
    raise CheckpointError("collections.OrderedDict must be called without "
                          "arguments in a state dict")
  return collections.OrderedDict()


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None,
                       *unused_state):
  """Stand-in for torch._utils._rebuild_parameter(_with_state)."""
  del requires_grad
  if not isinstance(data, Tensor):
    raise UnsafeCheckpointError(
        f"a parameter must wrap a tensor, got {type(data).__name__}")
  if backward_hooks:
    raise UnsafeCheckpointError(
        "parameters with backward hooks are not supported")
  return data


class Load:
  """The state of one load: stand-ins, storages and the byte budget."""

  def __init__(self, max_bytes: int, legacy: bool):
    self.max_bytes, self.legacy = max_bytes, legacy
    self.storages: dict[str, Storage] = {}
    self.declared_bytes = 0

  def find_global(self, module: str, name: str):
    """A new stand-in for an allowed global; refuses all others."""
    full = f"{module}.{name}"
    if full == "collections.OrderedDict":
      return Function(full, _ordered_dict, makes_container=True)
    if full == "torch._utils._rebuild_tensor_v2":
      return Function(full, self.rebuild_tensor)
    if full in ALLOWED_GLOBALS and name.startswith("_rebuild_parameter"):
      return Function(full, _rebuild_parameter)
    if full in ALLOWED_GLOBALS:
      return StorageType(name)
    raise UnsafeCheckpointError(
        f"refusing to load global '{full}'; a state dict only needs "
        f"{sorted(ALLOWED_GLOBALS)}")

  def rebuild_tensor(self, storage, storage_offset, size, stride,
                     requires_grad=False, backward_hooks=None, metadata=None):
    """Stand-in for torch._utils._rebuild_tensor_v2 (builds no torch object)."""
    del requires_grad, metadata
    if not isinstance(storage, Storage):
      raise UnsafeCheckpointError(
          f"tensor storage must be a persistent storage reference, got "
          f"{type(storage).__name__}")
    if backward_hooks:
      raise UnsafeCheckpointError(
          "tensors with backward hooks are not supported")
    if type(storage_offset) is not int:  # pylint: disable=unidiomatic-typecheck
      raise CheckpointError(f"storage offset must be an int, got "
                            f"{type(storage_offset).__name__}")
    return Tensor(storage, storage_offset, _ints("size", size),
                   _ints("stride", stride))

  def persistent_load(self, pid):
    """('storage', type, key, location, numel[, view]) -> its Storage."""
    if type(pid) is not tuple or not pid:  # pylint: disable=unidiomatic-typecheck
      raise UnsafeCheckpointError(
          f"unexpected persistent id of type {type(pid).__name__}")
    typename = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    if typename != "storage":
      shown = typename[:50] if isinstance(typename, str) else type(typename)
      raise UnsafeCheckpointError(
          f"refusing persistent id of type {shown!r} (only tensor storages "
          "are allowed; pickled modules are not)")
    if len(pid) != (6 if self.legacy else 5):
      raise UnsafeCheckpointError(f"bad storage id of length {len(pid)}")
    _, storage_type, key, _, numel = pid[:5]
    if self.legacy and pid[5] is not None:
      raise UnsafeCheckpointError("legacy storage views are not supported")
    if not isinstance(storage_type, StorageType):
      raise UnsafeCheckpointError(
          f"storage type must be one of {sorted(STORAGE_DTYPES)}, got "
          f"{type(storage_type).__name__}")
    if (not isinstance(key, str) or type(numel) is not int or  # pylint: disable=unidiomatic-typecheck
        not 0 <= numel < _INT64):
      raise CheckpointError(
          f"storage key must be a str and size an int in [0, 2**63), got a "
          f"{type(key).__name__} and a {type(numel).__name__}"
          + (f" {numel}" if type(numel) is int and numel.bit_length() < 200  # pylint: disable=unidiomatic-typecheck
             else ""))
    st = Storage(key, STORAGE_DTYPES[storage_type.name], numel)
    old = self.storages.setdefault(key, st)
    if (old.dtype, old.numel) != (st.dtype, st.numel):
      raise CheckpointError(f"storage {key!r} is declared twice, as {numel} "
                            f"{st.dtype} and as {old.numel} {old.dtype}")
    if old is st:
      self.declared_bytes += st.nbytes
      if self.declared_bytes > self.max_bytes:
        raise CheckpointError(
            f"storages declare more than max_bytes={self.max_bytes} bytes "
            f"(reached at storage {key!r}: {numel} x {st.dtype}); pass a "
            "larger max_bytes to read it")
    return old
