"""A torch-free, safe reader for PyTorch state-dict checkpoints (.pth / .pt).

Reads both formats `torch.save` writes:
  * zip (torch >= 1.6): `<archive>/data.pkl` plus one raw file per storage in
    `<archive>/data/<key>`;
  * legacy (torch < 1.6, e.g. the lukemelas EfficientNet weights): a stream of
    pickles (magic number, protocol, system info, the object, the storage
    keys) followed by each storage as an int64 element count and raw bytes.

Pickle runs whatever callables the file names, so the object pickle is read
with a RESTRICTED unpickler: only the globals a state dict needs are resolved
(an OrderedDict, the tensor/parameter rebuild functions and storage types),
each mapped to a local stand-in, never to torch. Any other global, and any
persistent id other than a tensor storage (e.g. a whole pickled nn.Module),
is refused with `UnsafeCheckpointError` before anything is called.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO

import numpy as np

LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
LEGACY_PROTOCOL = 1001

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


class UnsafeCheckpointError(pickle.UnpicklingError):
  """The checkpoint asks for something a state dict never needs."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
  name: str

  @property
  def dtype(self) -> np.dtype:
    return STORAGE_DTYPES[self.name]


@dataclasses.dataclass
class _Storage:
  """A storage named in the pickle; its bytes are attached afterwards."""
  key: str
  dtype: np.dtype
  numel: int
  data: np.ndarray | None = None  # 1-D, dtype `dtype`, length `numel`


@dataclasses.dataclass
class _Tensor:
  """A strided view of a storage, materialised once the bytes are read."""
  storage: _Storage
  offset: int
  shape: tuple[int, ...]
  stride: tuple[int, ...]

  def numpy(self) -> np.ndarray:
    data = self.storage.data
    if data is None:
      raise ValueError(f"torch_checkpoint: storage {self.storage.key!r} has "
                       "no data in the file")
    if not self.shape:
      return np.array(data[self.offset])
    extent = self.offset + 1 + sum((n - 1) * s for n, s in
                                   zip(self.shape, self.stride) if n > 0)
    if min(self.shape) > 0 and (extent > data.size or
                                min(self.stride) < 0 or self.offset < 0):
      raise ValueError(
          f"torch_checkpoint: tensor of shape {self.shape}, stride "
          f"{self.stride}, offset {self.offset} reads past storage "
          f"{self.storage.key!r} of {data.size} elements")
    view = np.lib.stride_tricks.as_strided(
        data[self.offset:], shape=self.shape,
        strides=[s * data.itemsize for s in self.stride], writeable=False)
    return np.array(view)  # a contiguous copy that owns its memory


def _check_ints(what: str, values) -> tuple[int, ...]:
  if not isinstance(values, (tuple, list)) or not all(
      isinstance(v, int) for v in values):
    raise UnsafeCheckpointError(f"torch_checkpoint: {what} must be a tuple of "
                                f"ints, got {values!r}")
  return tuple(values)


def _rebuild_tensor_v2(storage, storage_offset, size, stride,
                       requires_grad=False, backward_hooks=None,
                       metadata=None):
  """Stand-in for torch._utils._rebuild_tensor_v2 (builds no torch object)."""
  del requires_grad, metadata
  if not isinstance(storage, _Storage):
    raise UnsafeCheckpointError(
        f"torch_checkpoint: tensor storage must be a persistent storage "
        f"reference, got {type(storage).__name__}")
  if backward_hooks:
    raise UnsafeCheckpointError(
        "torch_checkpoint: tensors with backward hooks are not supported")
  if not isinstance(storage_offset, int):
    raise UnsafeCheckpointError(f"torch_checkpoint: storage offset must be an "
                                f"int, got {storage_offset!r}")
  return _Tensor(storage, storage_offset, _check_ints("size", size),
                 _check_ints("stride", stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None,
                       *unused_state):
  """Stand-in for torch._utils._rebuild_parameter(_with_state)."""
  del requires_grad
  if not isinstance(data, _Tensor):
    raise UnsafeCheckpointError(
        f"torch_checkpoint: a parameter must wrap a tensor, got "
        f"{type(data).__name__}")
  if backward_hooks:
    raise UnsafeCheckpointError(
        "torch_checkpoint: parameters with backward hooks are not supported")
  return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only `_ALLOWED_GLOBALS`, to local stand-ins."""

  def __init__(self, file: BinaryIO, storages: dict[str, _Storage],
               legacy: bool):
    super().__init__(file)
    self._storages = storages
    self._legacy = legacy

  def find_class(self, module: str, name: str):
    try:
      return _ALLOWED_GLOBALS[(module, name)]
    except KeyError:
      raise UnsafeCheckpointError(
          f"torch_checkpoint: refusing to load global '{module}.{name}'; a "
          f"state dict only needs {sorted(m + '.' + n for m, n in _ALLOWED_GLOBALS)}"
      ) from None

  def persistent_load(self, pid):
    if not isinstance(pid, tuple) or not pid:
      raise UnsafeCheckpointError(
          f"torch_checkpoint: unexpected persistent id {pid!r}")
    typename = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    if typename != "storage":
      raise UnsafeCheckpointError(
          f"torch_checkpoint: refusing persistent id of type {typename!r} "
          "(only tensor storages are allowed; pickled modules are not)")
    if self._legacy:
      if len(pid) != 6:
        raise UnsafeCheckpointError(f"torch_checkpoint: bad storage id {pid!r}")
      _, storage_type, key, _, numel, view_metadata = pid
      if view_metadata is not None:
        raise UnsafeCheckpointError(
            "torch_checkpoint: legacy storage views are not supported")
    else:
      if len(pid) != 5:
        raise UnsafeCheckpointError(f"torch_checkpoint: bad storage id {pid!r}")
      _, storage_type, key, _, numel = pid
    if not isinstance(storage_type, _StorageType):
      raise UnsafeCheckpointError(
          f"torch_checkpoint: storage type must be one of "
          f"{sorted(STORAGE_DTYPES)}, got {storage_type!r}")
    if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
      raise UnsafeCheckpointError(
          f"torch_checkpoint: bad storage key/size {key!r}/{numel!r}")
    if key not in self._storages:
      self._storages[key] = _Storage(key, storage_type.dtype, numel)
    return self._storages[key]


class _PlainUnpickler(pickle.Unpickler):
  """For the legacy header pickles: plain data only, no globals at all."""

  def find_class(self, module: str, name: str):
    raise UnsafeCheckpointError(
        f"torch_checkpoint: refusing to load global '{module}.{name}' in the "
        "checkpoint header")


def _to_numpy(obj: Any, prefix: str, out: dict[str, np.ndarray]) -> None:
  if isinstance(obj, _Tensor):
    out[prefix] = obj.numpy()
  elif isinstance(obj, dict):
    for k, v in obj.items():
      if not isinstance(k, str):
        raise ValueError(f"torch_checkpoint: expected string keys, got {k!r}")
      _to_numpy(v, f"{prefix}.{k}" if prefix else k, out)
  # Other plain values (epochs, config strings, ...) are not tensors: skipped.


def _load_zip(path: str) -> dict[str, np.ndarray]:
  with zipfile.ZipFile(path) as zf:
    names = zf.namelist()
    pkls = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pkls) != 1:
      raise ValueError(f"torch_checkpoint: {path} has {len(pkls)} data.pkl "
                       f"files, expected exactly 1")
    root = pkls[0][:-len("data.pkl")]
    storages: dict[str, _Storage] = {}
    obj = _RestrictedUnpickler(io.BytesIO(zf.read(pkls[0])), storages,
                               legacy=False).load()
    for key, st in storages.items():
      raw = zf.read(f"{root}data/{key}")
      if len(raw) < st.numel * st.dtype.itemsize:
        raise ValueError(f"torch_checkpoint: storage {key!r} has {len(raw)} "
                         f"bytes, expected {st.numel * st.dtype.itemsize}")
      st.data = np.frombuffer(raw, st.dtype, count=st.numel)
  return obj


def _load_legacy(f: BinaryIO, path: str) -> Any:
  header = _PlainUnpickler(f)
  magic = header.load()
  if magic != LEGACY_MAGIC:
    raise ValueError(f"torch_checkpoint: {path} is neither a zip checkpoint "
                     f"nor a legacy one (magic {magic!r}, expected "
                     f"{LEGACY_MAGIC:#x})")
  protocol = _PlainUnpickler(f).load()
  if protocol != LEGACY_PROTOCOL:
    raise ValueError(f"torch_checkpoint: legacy protocol {protocol!r}, "
                     f"expected {LEGACY_PROTOCOL}")
  sys_info = _PlainUnpickler(f).load()
  if not sys_info.get("little_endian", True):
    raise ValueError("torch_checkpoint: big-endian checkpoints are not "
                     "supported")
  storages: dict[str, _Storage] = {}
  obj = _RestrictedUnpickler(f, storages, legacy=True).load()
  keys = _PlainUnpickler(f).load()
  if not isinstance(keys, list) or set(keys) != set(storages):
    raise ValueError(f"torch_checkpoint: storage key list {keys!r:.200} does "
                     f"not match the {len(storages)} storages referenced")
  for key in keys:
    st = storages[key]
    (numel,) = struct.unpack("<q", f.read(8))
    if numel != st.numel:
      raise ValueError(f"torch_checkpoint: storage {key!r} has {numel} "
                       f"elements in the file, expected {st.numel}")
    raw = f.read(numel * st.dtype.itemsize)
    if len(raw) != numel * st.dtype.itemsize:
      raise ValueError(f"torch_checkpoint: {path} is truncated in storage "
                       f"{key!r}")
    st.data = np.frombuffer(raw, st.dtype)
  return obj


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a PyTorch state dict without torch and without running code.

  Args:
    path: a file written by `torch.save(state_dict, path)` (zip or legacy).

  Returns:
    {name: numpy array} in the file's order, e.g. '_conv_stem.weight' ->
    float32 [32, 3, 3, 3] (PyTorch layout: OIHW for convs, [out, in] for
    linear layers). Nested dicts are flattened with '.'; non-tensor values
    are dropped.

  Raises:
    UnsafeCheckpointError: the pickle names a global or persistent object a
      state dict does not need (nothing it names is ever called).
    ValueError: the file is not a well-formed checkpoint.
  """
  path = os.fspath(path)
  if zipfile.is_zipfile(path):
    obj = _load_zip(path)
  else:
    with open(path, "rb") as f:
      obj = _load_legacy(f, path)
  if not isinstance(obj, dict):
    raise ValueError(f"torch_checkpoint: {path} holds a "
                     f"{type(obj).__name__}, expected a state dict")
  out: dict[str, np.ndarray] = {}
  _to_numpy(obj, "", out)
  return out
