"""The torch-free checkpoint reader: real weights, and refusal of code."""
import collections
import io
import os
import pickle
import zipfile

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
