"""The torch-free checkpoint reader: real weights, and refusal of code."""
import collections
import dataclasses
import io
import os
import pickle
import pickletools
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from research.transfer import pretrained
from research.transfer import torch_checkpoint as tc


class _MakeFile:
  """Unpickling this calls builtins.open(path, 'w'): it creates a file."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (open, (self.path, "w"))


class _RunShell:
  """Unpickling this calls os.system('touch path')."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (os.system, (f"touch {self.path}",))


def _zip_checkpoint(path, payload: bytes):
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", payload)
    zf.writestr("archive/version", "3\n")


def _legacy_checkpoint(path, payload: bytes):
  with open(path, "wb") as f:
    f.write(pickle.dumps(tc.LEGACY_MAGIC, protocol=2))
    f.write(pickle.dumps(tc.LEGACY_PROTOCOL, protocol=2))
    f.write(pickle.dumps({"protocol_version": 1001, "little_endian": True},
                         protocol=2))
    f.write(payload)
    f.write(pickle.dumps([], protocol=2))


def test_payloads_really_run_code(tmp_path):
  # Control: plain pickle does create the file, so the test below can fail.
  for cls in (_MakeFile, _RunShell):
    target = tmp_path / f"control_{cls.__name__}"
    obj = pickle.loads(pickle.dumps(cls(str(target)), protocol=2))
    if hasattr(obj, "close"):
      obj.close()
    assert target.exists()


@pytest.mark.parametrize("writer", [_zip_checkpoint, _legacy_checkpoint])
@pytest.mark.parametrize("cls,name", [(_MakeFile, "open"),
                                      (_RunShell, "system")])
def test_code_running_checkpoint_is_refused(tmp_path, writer, cls, name):
  target = tmp_path / "pwned"
  # Hide the payload inside an otherwise plausible state dict.
  sd = collections.OrderedDict(w=cls(str(target)))
  ckpt = tmp_path / "evil.pth"
  writer(ckpt, pickle.dumps(sd, protocol=2))
  with pytest.raises(tc.UnsafeCheckpointError,
                     match=f"refusing to load global .*{name}"):
    tc.load_state_dict(ckpt)
  assert not target.exists()


def test_pickled_module_persistent_id_is_refused(tmp_path):

  class P(pickle.Pickler):

    def persistent_id(self, obj):
      return ("module", "x", "source") if obj == "M" else None

  buf = io.BytesIO()
  P(buf, protocol=2).dump({"m": "M"})
  ckpt = tmp_path / "module.pth"
  _zip_checkpoint(ckpt, buf.getvalue())
  with pytest.raises(tc.UnsafeCheckpointError, match="'module'"):
    tc.load_state_dict(ckpt)


def test_not_a_checkpoint(tmp_path):
  bad = tmp_path / "bad.pth"
  bad.write_bytes(pickle.dumps(12345, protocol=2))
  with pytest.raises(ValueError, match="magic"):
    tc.load_state_dict(bad)


def test_reads_shipped_lite0_weights():
  sd = tc.load_state_dict(pretrained.default_weights_path())
  assert len(sd) == 296
  assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
  assert sd["_conv_stem.weight"].dtype == np.float32
  assert sd["_blocks.15._depthwise_conv.weight"].shape == (1152, 1, 3, 3)
  assert sd["_fc.weight"].shape == (1000, 1280)
  assert sd["_bn0.num_batches_tracked"].dtype == np.int64
  # EfficientNet-Lite0 has 4,652,008 trainable parameters (TF model card: 4.7M).
  n = sum(v.size for k, v in sd.items()
          if not k.endswith(("running_mean", "running_var",
                             "num_batches_tracked")))
  assert n == 4_652_008
  # BatchNorm variances are >= 0 (a wrong byte offset would garble them).
  variances = np.concatenate([v for k, v in sd.items()
                              if k.endswith("running_var")])
  assert variances.size == 21_008 and (variances >= 0).all()
  assert (variances > 0).mean() > 0.99


@pytest.mark.torch
@pytest.mark.parametrize("zip_format", [True, False])
def test_matches_torch_load(tmp_path, zip_format):
  import torch  # pylint: disable=g-import-not-at-top
  base = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
  sd = collections.OrderedDict(
      conv=torch.randn(8, 3, 3, 3),
      transposed=base.transpose(0, 2),       # non-contiguous strides
      sliced=base[1:, 2:],                   # storage offset, shared storage
      half=torch.randn(7).half(),
      double=torch.randn(2, 2, dtype=torch.float64),
      long=torch.tensor(42),                 # 0-d int64
      mask=torch.tensor([True, False, True]),
      param=torch.nn.Parameter(torch.randn(4, 2)),
  )
  path = tmp_path / "sd.pth"
  torch.save(sd, path, _use_new_zipfile_serialization=zip_format)
  ours = tc.load_state_dict(path)
  ref = torch.load(path, weights_only=True)
  assert list(ours) == list(ref)
  for k, v in ref.items():
    want = v.detach().numpy()
    assert ours[k].dtype == want.dtype, k
    np.testing.assert_array_equal(ours[k], want, err_msg=k)


# ---------------------------------------------------------------------------
# Hand-made torch checkpoints (no torch needed): the torch globals are written
# as GLOBAL opcodes by a pure-Python pickler, the storages as raw bytes.


class _Global:
  """Pickles as `GLOBAL module name`, without importing the module."""

  def __init__(self, module, name):
    self.module, self.name = module, name

  def __call__(self, *args):  # save_reduce insists on a callable
    raise AssertionError("never called")


class _StorageRef:
  """A storage: pickled as torch's persistent id, its bytes stored apart."""

  def __init__(self, key, numel, dtype="FloatStorage", legacy=False):
    self.key, self.numel, self.dtype, self.legacy = key, numel, dtype, legacy


class _TensorRef:
  """Pickles as torch._utils._rebuild_tensor_v2(storage, offset, size, ...)."""

  def __init__(self, storage, offset, size, stride):
    self.args = (storage, offset, tuple(size), tuple(stride))

  def __reduce__(self):
    return (_Global("torch._utils", "_rebuild_tensor_v2"),
            self.args + (False, collections.OrderedDict()))


class _TorchPickler(pickle._Pickler):  # pylint: disable=protected-access
  dispatch = dict(pickle._Pickler.dispatch)  # pylint: disable=protected-access

  def persistent_id(self, obj):
    if not isinstance(obj, _StorageRef):
      return None
    pid = ("storage", _Global("torch", obj.dtype), obj.key, "cpu", obj.numel)
    return pid + (None,) if obj.legacy else pid

  def _save_global(self, obj):
    self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
    self.memoize(obj)

  dispatch[_Global] = _save_global


def _torch_pickle(obj) -> bytes:
  buf = io.BytesIO()
  _TorchPickler(buf, protocol=2).dump(obj)
  return buf.getvalue()


def _write_zip(path, pkl: bytes, storages: dict, compress=zipfile.ZIP_STORED):
  with zipfile.ZipFile(path, "w", compression=compress) as zf:
    zf.writestr("archive/data.pkl", pkl)
    zf.writestr("archive/byteorder", "little")
    for key, raw in storages.items():
      zf.writestr(f"archive/data/{key}", bytes(raw))
    zf.writestr("archive/version", "3\n")


def _write_legacy(path, pkl: bytes, storages: dict, sys_info=None):
  if sys_info is None:
    sys_info = {"protocol_version": 1001, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}
  with open(path, "wb") as f:
    for header in (tc.LEGACY_MAGIC, tc.LEGACY_PROTOCOL, sys_info):
      f.write(pickle.dumps(header, protocol=2))
    f.write(pkl)
    f.write(pickle.dumps(list(storages), protocol=2))
    for raw in storages.values():
      raw = np.asarray(raw)
      f.write(np.int64(raw.size).tobytes())
      f.write(raw.tobytes())


STORAGE = np.arange(60, dtype=np.float32)  # one storage, several views


def _views(legacy=False, **view):
  """A state dict of views into STORAGE (key '0'), plus one more `view`."""
  st = _StorageRef("0", STORAGE.size, legacy=legacy)
  sd = collections.OrderedDict(
      full=_TensorRef(st, 0, (60,), (1,)),
      transposed=_TensorRef(st, 5, (3, 4), (1, 3)),
      scalar=_TensorRef(st, 59, (), ()))
  if view:
    sd["extra"] = _TensorRef(st, view["offset"], view["size"], view["stride"])
  return sd


def _checkpoint(tmp_path, fmt="zip", name="ckpt.pth", **view):
  path = tmp_path / name
  pkl = _torch_pickle(_views(legacy=fmt == "legacy", **view))
  (_write_legacy if fmt == "legacy" else _write_zip)(path, pkl,
                                                     {"0": STORAGE})
  return path


def _assert_refused(path, member, match, error=tc.CheckpointError, **kwargs):
  """Loading raises the reader's own error naming the file and the member."""
  with pytest.raises(error, match=match) as info:
    tc.load_state_dict(path, **kwargs)
  assert isinstance(info.value, ValueError)
  assert info.value.path == str(path) and info.value.member == member
  assert str(path) in str(info.value) and repr(member) in str(info.value)
  return info.value


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_hand_made_checkpoint_reads_views_exactly(tmp_path, fmt):
  sd = tc.load_state_dict(_checkpoint(tmp_path, fmt))
  # Reference: element [i, j] of a view is storage[offset + i*s0 + j*s1].
  want = np.array([[STORAGE[5 + i + 3 * j] for j in range(4)]
                   for i in range(3)])
  assert list(sd) == ["full", "transposed", "scalar"]
  np.testing.assert_array_equal(sd["full"], STORAGE)
  np.testing.assert_array_equal(sd["transposed"], want)
  assert sd["scalar"].shape == () and sd["scalar"] == 59.0


@pytest.mark.torch
@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_hand_made_checkpoint_matches_torch_load(tmp_path, fmt):
  import torch  # pylint: disable=g-import-not-at-top
  path = _checkpoint(tmp_path, fmt)
  ours, ref = tc.load_state_dict(path), torch.load(path, weights_only=True)
  assert list(ours) == list(ref)
  for k, v in ref.items():
    np.testing.assert_array_equal(ours[k], v.numpy(), err_msg=k)


# --- Poisoning through allowed globals --------------------------------------

_PROTO = b"\x80\x02"


def _fragment(obj) -> bytes:
  """The opcodes that push `obj` (a pickle without PROTO, memo and STOP)."""
  return pickletools.optimize(pickle.dumps(obj, protocol=2))[2:-1]


# Each pickle pushes an allowed global's stand-in (or an object the load made
# from one) and aims a mutating opcode at it, then returns an empty dict.
POISONS = {
    # The file: GLOBAL torch.FloatStorage, BUILD {'name': 'IntStorage'}.
    "build_storage_type": _PROTO + b"ctorch\nFloatStorage\n" +
                          _fragment({"name": "IntStorage"}) + b"b0}.",
    "build_slots_on_rebuild_fn": _PROTO +
                                 b"ctorch._utils\n_rebuild_tensor_v2\n" +
                                 _fragment((None, {"__defaults__": (1,)})) +
                                 b"b0}.",
    "setitem_on_ordered_dict_class": _PROTO + b"ccollections\nOrderedDict\n" +
                                     _fragment("x") + _fragment(1) + b"s0}.",
    "append_on_storage_type": _PROTO + b"ctorch\nLongStorage\n" +
                              _fragment(1) + b"a0}.",
    "setitems_on_parameter_fn": _PROTO +
                                b"ctorch._utils\n_rebuild_parameter\n(" +
                                _fragment("__doc__") + _fragment("x") +
                                b"u0}.",
}


def _tensor_then_build() -> bytes:
  st = _StorageRef("0", 4)
  body = _torch_pickle(_TensorRef(st, 0, (4,), (1,)))[:-1]
  return body + _fragment({"offset": -1}) + b"b0}."


POISONS["build_on_a_tensor"] = _tensor_then_build()


def test_restricted_pickle_unpickler_lets_build_rewrite_a_frozen_stand_in():
  # Control for the test below: with `pickle.Unpickler` and an allow-list in
  # `find_class` (the reader's old design), the file rewrites the
  # shared, frozen stand-in.

  @dataclasses.dataclass(frozen=True)
  class StorageType:
    name: str

  shared = StorageType("FloatStorage")

  class Restricted(pickle.Unpickler):

    def find_class(self, module, name):
      return shared

  assert Restricted(io.BytesIO(POISONS["build_storage_type"])).load() == {}
  assert shared.name == "IntStorage"


def _lite0_bytes():
  sd = tc.load_state_dict(pretrained.default_weights_path())
  return {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in sd.items()}


@pytest.fixture(scope="module")
def lite0_before():
  return _lite0_bytes()


@pytest.mark.parametrize("poison", sorted(POISONS))
def test_poisoned_pickle_cannot_change_later_loads(tmp_path, lite0_before,
                                                   poison):
  path = tmp_path / "poison.pth"
  _write_zip(path, POISONS[poison], {"0": np.zeros(4, np.float32)})
  err = _assert_refused(path, "archive/data.pkl", "refusing",
                        tc.UnsafeCheckpointError)
  assert "refusing" in err.reason
  after = _lite0_bytes()
  assert after.keys() == lite0_before.keys()
  for k, v in lite0_before.items():
    assert after[k] == v, k  # dtype, shape and every byte
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  ref = torch.load(pretrained.default_weights_path(), weights_only=True)
  for k, v in ref.items():
    want = v.numpy()
    assert after[k] == (want.dtype.str, want.shape, want.tobytes()), k


# --- Decompression and size caps --------------------------------------------

BOMB_MB = 100  # a 100 MB zero storage deflates to ~100 KB


def _bomb(path, pkl, member="archive/data/0"):
  """A zip whose `member` inflates to BOMB_MB MB of zeros (written in 1 MB
  pieces, so the test itself stays small)."""
  with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
    zf.writestr("archive/data.pkl", pkl)
    with zf.open(member, "w") as f:
      for _ in range(BOMB_MB):
        f.write(bytes(2**20))
  return path


def _rewrite_header(path, member, file_size, crc):
  """Makes both zip headers of `member` claim `file_size` bytes and `crc`."""
  data = bytearray(path.read_bytes())
  eocd = data.rfind(b"PK\x05\x06")
  count, _, start = struct.unpack_from("<HII", data, eocd + 10)
  pos = start
  for _ in range(count):
    name_len, extra_len, comment_len = struct.unpack_from("<HHH", data,
                                                          pos + 28)
    if data[pos + 46:pos + 46 + name_len] == member.encode():
      local = struct.unpack_from("<I", data, pos + 42)[0]
      struct.pack_into("<I", data, pos + 16, crc)
      struct.pack_into("<I", data, pos + 24, file_size)
      struct.pack_into("<I", data, local + 14, crc)
      struct.pack_into("<I", data, local + 22, file_size)
    pos += 46 + name_len + extra_len + comment_len
  path.write_bytes(bytes(data))


def _ten_floats_pkl():
  st = _StorageRef("0", 10)
  return _torch_pickle(collections.OrderedDict(w=_TensorRef(st, 0, (10,),
                                                            (1,))))


def _peak_bytes(fn):
  tracemalloc.start()
  try:
    fn()
  finally:
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
  return peak


def test_member_bigger_than_its_declaration_is_refused_before_inflating(
    tmp_path):
  path = _bomb(tmp_path / "bomb.pth", _ten_floats_pkl())
  assert zipfile.ZipFile(path).getinfo("archive/data/0").compress_size < 2**20
  peak = _peak_bytes(lambda: _assert_refused(
      path, "archive/data/0", r"declares 104857600 bytes.*declares 40 .*"
      "refused before inflating"))
  assert peak < 2**20, peak


def test_member_whose_header_understates_it_is_refused(tmp_path):
  # Both headers claim the 40 declared bytes (and their CRC), so only the
  # compressed size gives the 100 MB stream away.
  path = _bomb(tmp_path / "liar.pth", _ten_floats_pkl())
  _rewrite_header(path, "archive/data/0", 40, zlib.crc32(bytes(40)))
  assert zipfile.ZipFile(path).getinfo("archive/data/0").file_size == 40
  peak = _peak_bytes(lambda: _assert_refused(
      path, "archive/data/0", "header understates the member"))
  assert peak < 2**20, peak


def test_inflating_stream_is_cut_at_the_declared_size():
  # Past every header check, a stream that keeps inflating is cut after
  # size + 1 bytes.

  class EndlessZeros(io.RawIOBase):
    served = 0

    def readable(self):
      return True

    def readinto(self, b):
      EndlessZeros.served += len(b)
      b[:] = bytes(len(b))
      return len(b)

  class FakeZip:

    def getinfo(self, name):
      info = zipfile.ZipInfo(name)
      info.file_size = info.compress_size = 40
      return info

    def open(self, info):
      return io.BufferedReader(EndlessZeros(), buffer_size=64)

  with pytest.raises(tc.CheckpointError, match="inflates past the 40 bytes"):
    tc._read_member(FakeZip(), "archive/data/0", 40, 2**30)  # pylint: disable=protected-access
  assert EndlessZeros.served <= 128


def _big_views(**extra):
  st = _StorageRef("0", 1024)
  sd = collections.OrderedDict(w=_TensorRef(st, 0, (32, 32), (32, 1)))
  for name, (numel, size, stride) in extra.items():
    sd[name] = _TensorRef(_StorageRef(name, numel), 0, size, stride)
  return _torch_pickle(sd)


def test_global_limit_bounds_the_storages(tmp_path):
  path = tmp_path / "w.pth"
  weights = np.random.default_rng(0).normal(size=1024).astype(np.float32)
  _write_zip(path, _big_views(), {"0": weights})
  np.testing.assert_array_equal(
      tc.load_state_dict(path, max_bytes=4096)["w"], weights.reshape(32, 32))
  _assert_refused(path, "archive/data.pkl",
                  "storages declare more than max_bytes=4095",
                  max_bytes=4095)


def test_global_limit_refuses_a_huge_declared_storage_before_reading(
    tmp_path):
  path = tmp_path / "huge.pth"
  _write_zip(path, _big_views(huge=(2**40, (2**40,), (1,))),
             {"0": np.zeros(1024, np.float32)})
  peak = _peak_bytes(lambda: _assert_refused(
      path, "archive/data.pkl",
      f"storages declare more than max_bytes={tc.DEFAULT_MAX_BYTES}"))
  assert peak < 2**20, peak


def test_global_limit_bounds_the_returned_arrays(tmp_path):
  # One float repeated 2**40 times through zero strides: 4 TiB of output.
  path = tmp_path / "expand.pth"
  _write_zip(path, _big_views(one=(1, (2**20, 2**20), (0, 0))),
             {"0": np.zeros(1024, np.float32), "one": np.ones(1, np.float32)})
  _assert_refused(path, "archive/data.pkl",
                  r"the tensors reach 4398046515200 bytes at 'one', more "
                  f"than max_bytes={tc.DEFAULT_MAX_BYTES}")


# --- Malformed files ----------------------------------------------------------


def test_truncated_zip(tmp_path):
  path = _checkpoint(tmp_path)
  path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
  _assert_refused(path, "(zip directory)",
                  "truncated.*not a complete torch zip")


@pytest.mark.parametrize("cut,member", [
    (10, "legacy header (magic number)"),
    (-300, "legacy object pickle"),
    (-100, "legacy storage '0'"),
])
def test_truncated_legacy_file(tmp_path, cut, member):
  path = _checkpoint(tmp_path, "legacy")
  data = path.read_bytes()
  path.write_bytes(data[:cut])
  _assert_refused(path, member, "truncated")


def test_legacy_header_with_non_dict_system_info(tmp_path):
  path = tmp_path / "sysinfo.pth"
  _write_legacy(path, _torch_pickle(_views(legacy=True)), {"0": STORAGE},
                sys_info=[1, 2])
  _assert_refused(path, "legacy header", "system info must be a dict, got "
                  "list")


@pytest.mark.parametrize("container", ["dict", "list", "tuple"])
def test_deep_nesting_is_refused_not_recursed(tmp_path, container):
  n = 5000
  if container == "dict":  # {'a': {'a': ... {}}}
    body = b"}X\x01\x00\x00\x00a" * n + b"}" + b"s" * n
  elif container == "list":  # [[[...]]]
    body = b"]" * (n + 1) + b"a" * n
  else:  # (((),),)
    body = b")" + b"\x85" * n
  path = tmp_path / "deep.pth"
  _write_zip(path, _PROTO + body + b".", {})
  _assert_refused(path, "archive/data.pkl", "nest deeper than 100 levels")


@pytest.mark.parametrize("view,match", [
    (dict(offset=100, size=(), stride=()),
     "storage offset 100 is out of range for storage '0' of 60 elements"),
    (dict(offset=60, size=(), stride=()),
     r"size \(\), stride \(\), offset 60 reads element 60, past storage"),
    (dict(offset=-1, size=(), stride=()),
     "storage offset -1 is out of range"),
    (dict(offset=-4, size=(2,), stride=(1,)),
     "storage offset -4 is out of range"),
    (dict(offset=0, size=(8, 8), stride=(8, 1)),
     r"size \(8, 8\), stride \(8, 1\), offset 0 reads element 63, past"),
    (dict(offset=50, size=(3,), stride=(5,)), "reads element 60, past"),
    (dict(offset=10, size=(3,), stride=(-1,)), "must be >= 0"),
    (dict(offset=0, size=(2, 2), stride=(1,)), "of the same length"),
])
@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_view_outside_its_storage(tmp_path, fmt, view, match):
  member = "legacy object pickle" if fmt == "legacy" else "archive/data.pkl"
  _assert_refused(_checkpoint(tmp_path, fmt, **view), member, match)


def test_missing_and_short_storage_members(tmp_path):
  path = tmp_path / "missing.pth"
  _write_zip(path, _torch_pickle(_views()), {})
  _assert_refused(path, "archive/data/0", "missing from the zip")
  _write_zip(path, _torch_pickle(_views()), {"0": STORAGE[:59]})
  _assert_refused(path, "archive/data/0",
                  "truncated: holds 236 bytes, the pickle declares 240")


def test_not_a_state_dict(tmp_path):
  path = tmp_path / "list.pth"
  _write_zip(path, pickle.dumps([1, 2], protocol=2), {})
  _assert_refused(path, "archive/data.pkl", "holds a list, expected a state "
                  "dict")


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_corrupted_bytes_load_or_raise_the_readers_error(tmp_path, fmt):
  # 400 random corruptions (bytes overwritten, or the file cut) of a small
  # checkpoint: each loads or raises CheckpointError, never anything else.
  good = _checkpoint(tmp_path, fmt).read_bytes()
  rng = np.random.default_rng(0)
  path = tmp_path / "bad.pth"
  outcomes = collections.Counter()
  for _ in range(400):
    data = bytearray(good)
    if rng.random() < 0.2:
      data = data[:rng.integers(len(data))]
    else:
      for pos in rng.integers(len(data), size=rng.integers(1, 5)):
        data[pos] = rng.integers(256)
    path.write_bytes(bytes(data))
    try:
      tc.load_state_dict(path)
      outcomes["loaded"] += 1
    except tc.CheckpointError as e:
      assert e.path == str(path) and e.member, e
      outcomes["refused"] += 1
  assert outcomes["refused"] > 100, outcomes
