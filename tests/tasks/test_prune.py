"""PruneTask: gradual magnitude pruning while training on the shared trainer."""
import importlib.util
import json
import os

import numpy as np
import pytest

from research import params as P
from research import tasks, trainer
from research.compress import pruning

_CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "mnist5k_prune.py")


@pytest.fixture(autouse=True)
def _registered(monkeypatch):
  # Until research/tasks/__init__.py lists it.
  monkeypatch.setitem(tasks._TASKS, "prune", "research.tasks.prune:PruneTask")  # pylint: disable=protected-access


def _zhu_gupta(u, s_f, t0, t1, freq):
  """Sparsity of the masks in effect after update u (0-based), by the paper's formula."""
  if u < t0:
    return 0.0
  last = min(t0 + (u - t0) // freq * freq, t1)
  return s_f * (1.0 - (1.0 - (last - t0) / (t1 - t0)) ** 3)


def test_gradual_pruning_follows_the_schedule_and_survives_resume(tiny_config, tmp_path):
  s_f, t0, t1, freq = 0.75, 2, 8, 3
  config = tiny_config(num_steps=12, eval_every=12, checkpoint_every=12, log_every=1)
  config.task = "prune"
  config.prune = dict(sparsity=s_f, pattern="unstructured", schedule="gradual",
                      start_step=t0, end_step=t1, update_freq=freq)
  trainer.train_and_evaluate(config, str(tmp_path))

  task, state = trainer.load_state(str(tmp_path))
  kernels = {k: np.asarray(v) for k, v in P.flatten(state.params).items()
             if k.endswith("kernel")}
  assert len(kernels) == 5  # 3 convs, penultimate, head
  for name, w in kernels.items():  # exact count per layer, biases untouched
    assert np.sum(w == 0) == round(s_f * w.size), name
  for name, b in P.flatten(state.params).items():
    if name.endswith("bias"):
      assert np.sum(np.asarray(b) == 0) < np.asarray(b).size, name
  masks = P.flatten(pruning.find_masks(state.opt_state))
  for name, w in kernels.items():
    np.testing.assert_array_equal(np.asarray(masks[name]), w != 0, err_msg=name)

  # The logged sparsity at every step follows Zhu & Gupta: step t ran update t - 1.
  sizes = [w.size for w in kernels.values()]
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  logged = {r["step"]: r["sparsity"] for r in rows if r["split"] == "train"}
  assert sorted(logged) == list(range(1, 13))
  for t, got in logged.items():
    s = _zhu_gupta(t - 1, s_f, t0, t1, freq)
    want = sum(round(s * n) for n in sizes) / sum(sizes)
    assert got == pytest.approx(want, abs=1e-6), (t, s)

  # Resume for 4 more steps: the masks come back from the checkpoint, and the
  # pruned weights stay exactly where they were.
  config.num_steps = 16
  trainer.train_and_evaluate(config, str(tmp_path))
  _, resumed = trainer.load_state(str(tmp_path))
  for name, w in P.flatten(resumed.params).items():
    if name in kernels:
      np.testing.assert_array_equal(np.asarray(w) == 0, kernels[name] == 0, err_msg=name)
      assert not np.array_equal(np.asarray(w), kernels[name]), name  # still training


def test_config_builds_and_bad_prune_block_is_named(tiny_config):
  spec = importlib.util.spec_from_file_location("_mnist5k_prune", _CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config("quick")
  assert (c.task, c.prune.start_step, c.prune.end_step) == ("prune", 12, 42)
  pruning.SparsityConfig.from_dict(c.prune)  # valid as built
  with pytest.raises(ValueError, match="unknown variant"):
    module.get_config("quik")
  from research.tasks.prune import PruneTask  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="needs a `prune` config block"):
    PruneTask(tiny_config())
  bad = tiny_config()
  bad.prune = dict(sparsity=1.5)
  with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\), got 1.5"):
    PruneTask(bad)
