"""scripts/audit_weights.py: says whether a .pth is loadable, and why not, running nothing."""
import collections
import os
import pickle
import subprocess
import sys
import zipfile

import jax
import numpy as np

from research import models
from research.transfer import pretrained

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "audit_weights.py")


def _audit(*args):
  return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True,
                        text=True, timeout=300, env=dict(os.environ, PYTHONPATH=REPO))


class _RunShell:
  """Unpickling this calls os.system('touch path')."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (os.system, (f"touch {self.path}",))


def test_shipped_lite0_weights_are_loadable_with_their_parameter_count():
  proc = _audit(pretrained.default_weights_path())
  assert proc.returncode == 0, proc.stdout + proc.stderr
  # Independent count: the Flax EfficientNet-Lite0's parameters and BatchNorm
  # statistics, plus one num_batches_tracked scalar per BatchNorm in the torch file.
  model = models.get_model("efficientnet_lite0", num_classes=1000)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             np.zeros((1, 224, 224, 3), np.float32)))
  flax_count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
  num_bn = len(jax.tree.leaves(shapes["batch_stats"])) // 2
  tensors = len(jax.tree.leaves(shapes["params"])) + 3 * num_bn  # + mean, var, count
  assert f"{flax_count + num_bn:,} parameters" in proc.stdout, proc.stdout
  assert f"{tensors} tensors" in proc.stdout, proc.stdout
  assert proc.stdout.startswith("LOADABLE:")


def test_code_running_and_truncated_files_are_not_loadable_and_nothing_runs(tmp_path):
  marker = tmp_path / "pwned"
  evil = tmp_path / "evil.pth"
  with zipfile.ZipFile(evil, "w") as zf:
    payload = collections.OrderedDict(w=_RunShell(str(marker)))
    zf.writestr("archive/data.pkl", pickle.dumps(payload, protocol=2))
    zf.writestr("archive/version", "3\n")
  proc = _audit(evil)
  assert proc.returncode == 1 and not marker.exists()
  assert "NOT LOADABLE" in proc.stdout and "UnsafeCheckpointError" in proc.stdout
  assert "system" in proc.stdout, proc.stdout  # the refused global is named
  truncated = tmp_path / "truncated.pth"
  truncated.write_bytes(open(pretrained.default_weights_path(), "rb").read()[:100_000])
  proc = _audit(truncated)
  assert proc.returncode == 1 and "truncated" in proc.stdout, proc.stdout
  proc = _audit(tmp_path / "missing.pth")
  assert proc.returncode == 1 and "NOT LOADABLE" in proc.stdout
