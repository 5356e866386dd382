"""A torch-free, safe reader for PyTorch state-dict checkpoints (.pth / .pt).

Reads both formats `torch.save` writes:
  * zip (torch >= 1.6): `<archive>/data.pkl` plus one raw file per storage in
    `<archive>/data/<key>`;
  * legacy (torch < 1.6, e.g. the lukemelas EfficientNet weights): a stream of
    pickles (magic number, protocol, system info, the object, the storage
    keys) followed by each storage as an int64 element count and raw bytes.

Pickle runs whatever callables the file names, so the pickles are read by
`safe_pickle.SafeUnpickler`, a separate pickle machine that builds plain data
itself and lets no opcode touch an object it did not build in this load. Only
the globals a state dict needs resolve (an OrderedDict, the tensor/parameter
rebuild functions and storage types), each to a NEW local stand-in per load
(`torch_pickle`), never to torch. Any other global, and any persistent id
other than a tensor storage (e.g. a whole pickled nn.Module), raises
`UnsafeCheckpointError` before anything is called.

Sizes are bounded before memory is spent: each storage is read only up to the
size its pickle declares (numel x itemsize; a zip member whose header or
inflated stream is larger is refused), and the pickle, the storages and the
returned arrays each stay under `max_bytes`. Every malformed file raises
`CheckpointError` (a ValueError) naming the file, the member and the fault.
"""
from __future__ import annotations

import contextlib
import io
import os
import struct
import zipfile
import zlib
from typing import Any, BinaryIO

import numpy as np

from research.transfer import torch_pickle
from research.transfer.safe_pickle import (  # noqa: F401
    MAX_DEPTH, CheckpointError, SafeUnpickler, UnsafeCheckpointError)
from research.transfer.torch_pickle import (ALLOWED_GLOBALS,  # noqa: F401
                                            STORAGE_DTYPES)

LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
LEGACY_PROTOCOL = 1001
DEFAULT_MAX_BYTES = 4 * 2**30  # 4 GiB; EfficientNet-Lite0 needs 19 MB
_CHUNK = 2**20  # zip members are inflated 1 MiB at a time

# Errors of the standard library that a malformed file can provoke.
_FOREIGN_ERRORS = (EOFError, struct.error, zipfile.BadZipFile, zlib.error,
                   OverflowError, LookupError, TypeError, ValueError,
                   RuntimeError, OSError)


@contextlib.contextmanager
def _located(path: str, member: str):
  """Names `path` and `member` in any error raised inside."""
  try:
    yield
  except CheckpointError as e:
    raise e.at(path, member) from None
  except _FOREIGN_ERRORS as e:
    raise CheckpointError(f"{type(e).__name__}: {str(e)[:300]}", path,
                          member) from e


def _flatten(obj: dict, max_bytes: int, path: str,
             member: str) -> dict[str, np.ndarray]:
  """{dotted name: array}, depth-first in file order, bounded in size."""
  out: dict[str, np.ndarray] = {}
  total, seen = 0, {id(obj)}
  todo = [("", iter(obj.items()))]
  while todo:
    prefix, items = todo[-1]
    entry = next(items, None)
    if entry is None:
      todo.pop()
      continue
    key, value = entry
    with _located(path, member):
      if not isinstance(key, str):
        raise CheckpointError(f"expected string keys, got a "
                              f"{type(key).__name__} under {prefix!r:.200}")
      name = f"{prefix}.{key}" if prefix else key
      if isinstance(value, dict):
        if id(value) in seen or len(todo) >= MAX_DEPTH:
          raise CheckpointError(f"dict {name!r:.200} is shared, cyclic or "
                                f"nested deeper than {MAX_DEPTH}")
        seen.add(id(value))
        todo.append((name, iter(value.items())))
      elif isinstance(value, torch_pickle.Tensor):
        total += value.nbytes
        if name in out or total > max_bytes:
          raise CheckpointError(
              f"tensor {name!r:.200} appears twice" if name in out else
              f"the tensors reach {total} bytes at {name!r:.200}, more than "
              f"max_bytes={max_bytes}")
        out[name] = value.numpy()
      # Other plain values (epochs, config strings, ...) are not tensors.
  return out


def _read_member(zf: zipfile.ZipFile, name: str, size: int | None,
                 max_bytes: int) -> bytearray:
  """Member `name`, never inflated past `size` (default: its header's).

  Memory grows with the bytes actually inflated, not with what a header
  claims; a header that understates the member is caught by its compressed
  size, and the stream is cut at `size` bytes whatever the header says.
  """
  try:
    info = zf.getinfo(name)
  except KeyError:
    raise CheckpointError("the member is missing from the zip") from None
  if size is not None and info.file_size != size:
    raise CheckpointError(
        f"the zip header declares {info.file_size} bytes, the pickle "
        f"declares {size} (numel x itemsize); refused before inflating" if
        info.file_size > size else
        f"truncated: holds {info.file_size} bytes, the pickle declares {size}")
  size = info.file_size if size is None else size
  if size > max_bytes:
    raise CheckpointError(f"{size} bytes, more than max_bytes={max_bytes}")
  if info.compress_size > size + size // 100 + 1024:  # deflate adds < 0.1%
    raise CheckpointError(
        f"{info.compress_size} compressed bytes cannot inflate to only {size}:"
        " the zip header understates the member; refused before inflating")
  buf = bytearray()
  with zf.open(info) as f:
    while chunk := f.read(min(_CHUNK, size - len(buf) + 1)):
      if len(buf) + len(chunk) > size:
        raise CheckpointError(f"inflates past the {size} bytes declared; "
                              "refused")
      buf += chunk
  if len(buf) != size:
    raise CheckpointError(f"truncated: inflates to {len(buf)} of {size} "
                          "bytes")
  return buf


def _load_zip(path: str, max_bytes: int) -> tuple[Any, str]:
  """(the unpickled object, the name of its data.pkl member)."""
  with _located(path, "(zip directory)"), zipfile.ZipFile(path) as zf:
    names = zf.namelist()
    pkls = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pkls) != 1 or len(set(names)) != len(names):
      raise CheckpointError(f"{len(pkls)} data.pkl members and "
                            f"{len(names) - len(set(names))} duplicate "
                            "names; expected one data.pkl, no duplicates")
    pkl, root = pkls[0], pkls[0][:-len("data.pkl")]
    if root + "byteorder" in names:
      with _located(path, root + "byteorder"):
        order = bytes(_read_member(zf, root + "byteorder", None, 16))
        if order != b"little":
          raise CheckpointError(f"byte order {order!r}: only little-endian "
                                "checkpoints are supported")
    load = torch_pickle.Load(max_bytes, legacy=False)
    with _located(path, pkl):
      data = _read_member(zf, pkl, None, max_bytes)
      obj = SafeUnpickler(io.BytesIO(data), len(data),
                          load.find_global, load.persistent_load).load()
    for key, st in load.storages.items():
      with _located(path, f"{root}data/{key}"):
        raw = _read_member(zf, f"{root}data/{key}", st.nbytes, max_bytes)
        st.data = np.frombuffer(raw, st.dtype, count=st.numel)
  return obj, pkl


def _load_legacy(f: BinaryIO, path: str, max_bytes: int) -> Any:
  size = os.fstat(f.fileno()).st_size

  def plain(member: str):  # header pickles: plain data only, no globals
    with _located(path, member):
      return SafeUnpickler(f, size - f.tell()).load()

  try:
    magic = plain("legacy header (magic number)")
  except CheckpointError as e:
    raise type(e)(f"neither a zip checkpoint nor a legacy one ({e.reason})",
                  path, e.member) from None
  if type(magic) is not int or magic != LEGACY_MAGIC:  # pylint: disable=unidiomatic-typecheck
    raise CheckpointError(
        f"neither a zip checkpoint nor a legacy one (magic {magic!r:.40}, "
        f"expected {LEGACY_MAGIC:#x})", path, "legacy header (magic number)")
  protocol = plain("legacy header (protocol)")
  sys_info = plain("legacy header (system info)")
  with _located(path, "legacy header"):
    if protocol != LEGACY_PROTOCOL:
      raise CheckpointError(f"legacy protocol {protocol!r:.40}, expected "
                            f"{LEGACY_PROTOCOL}")
    if not isinstance(sys_info, dict):
      raise CheckpointError(f"system info must be a dict, got "
                            f"{type(sys_info).__name__}")
    if sys_info.get("little_endian", True) is not True:
      raise CheckpointError("big-endian checkpoints are not supported")
  load = torch_pickle.Load(max_bytes, legacy=True)
  with _located(path, "legacy object pickle"):
    obj = SafeUnpickler(f, size - f.tell(), load.find_global,
                        load.persistent_load).load()
  keys = plain("legacy storage key list")
  with _located(path, "legacy storage key list"):
    if (not isinstance(keys, list) or len(set(map(str, keys))) != len(keys)
        or set(keys) != set(load.storages)):
      raise CheckpointError(f"storage key list does not match the "
                            f"{len(load.storages)} storages referenced")
  for key in keys:
    st = load.storages[key]
    with _located(path, f"legacy storage {key!r}"):
      head = f.read(8)
      if len(head) != 8:
        raise CheckpointError("truncated: the file ends before the storage")
      (numel,) = struct.unpack("<q", head)
      if numel != st.numel:
        raise CheckpointError(f"{numel} elements in the file, the pickle "
                              f"declares {st.numel}")
      if st.nbytes > size - f.tell():
        raise CheckpointError(f"truncated: {st.nbytes} bytes declared, "
                              f"{size - f.tell()} left in the file")
      st.data = np.frombuffer(f.read(st.nbytes), st.dtype)
  return obj


def load_state_dict(path: str | os.PathLike,
                    max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, np.ndarray]:
  """Reads a PyTorch state dict without torch and without running code.

  Args:
    path: a file written by `torch.save(state_dict, path)` (zip or legacy).
    max_bytes: the most bytes read for the pickle, for all storages together,
      and for all returned arrays together (each bound separately).

  Returns:
    {name: numpy array} in the file's order, e.g. '_conv_stem.weight' ->
    float32 [32, 3, 3, 3] (PyTorch layout: OIHW for convs, [out, in] for
    linear layers). Nested dicts are flattened with '.'; non-tensor values
    are dropped.

  Raises:
    UnsafeCheckpointError: the pickle names a global, persistent object or
      opcode a state dict does not need (nothing it names is ever called).
    CheckpointError (a ValueError; UnsafeCheckpointError is one too): the
      file is truncated, malformed or over `max_bytes`; the message names
      the file, the member and the fault.
    OSError: the file cannot be opened.
  """
  path = os.fspath(path)
  with open(path, "rb") as f:
    starts_like_zip = f.read(4) in (b"PK\x03\x04", b"PK\x05\x06")
    is_zip = zipfile.is_zipfile(f)
    if not is_zip and not starts_like_zip:
      f.seek(0)
      obj, member = _load_legacy(f, path, max_bytes), "legacy object pickle"
  if is_zip:
    obj, member = _load_zip(path, max_bytes)
  elif starts_like_zip:
    raise CheckpointError(
        "truncated: starts like a zip but has no end-of-central-directory "
        "record; not a complete torch zip checkpoint", path, "(zip directory)")
  if not isinstance(obj, dict):
    raise CheckpointError(f"holds a {type(obj).__name__}, expected a state "
                          "dict", path, member)
  return _flatten(obj, max_bytes, path, member)
