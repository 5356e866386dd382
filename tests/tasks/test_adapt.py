"""AdaptTask on the shared trainer: two streams, every method, target labels unused."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import config_lib, trainer
from research.parallel import AXIS
from research.tasks.adapt import METHODS, AdaptTask
from research.tasks.base import DataContext

_CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "digits_adapt.py")


def _config(**overrides):
  tiny = {"model.width": 4, "adapt.disc_hidden": 16, "batch_size": 16, "eval_batch_size": 800,
          "num_steps": 4, "eval_every": 4, "checkpoint_every": 4, "log_every": 2,
          "optimizer.warmup_steps": 0, "progress": False}
  return config_lib.apply_overrides(config_lib.load(_CONFIG + ":quick"), {**tiny, **overrides})


@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_on_the_trainer_and_reports_both_domains(method, tmp_path):
  out = trainer.train_and_evaluate(_config(**{"adapt.method": method}), str(tmp_path))
  assert out["step"] == 4
  for k in ("accuracy", "source_accuracy", "target_val_accuracy", "loss"):
    assert np.isfinite(out[k]) and (k == "loss" or 0.0 <= out[k] <= 1.0), (k, out[k])
  # All 359 target test images are counted once.
  assert int(np.sum(out["confusion"])) == 359
  train = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  train = [r for r in train if r["split"] == "train"]
  assert train and all(np.isfinite(r["loss"]) for r in train)
  if method in ("dann", "importance"):
    assert "domain_loss" in train[-1]
  # The checkpoint (with an empty discriminator for the alignment-free methods)
  # restores into the task's state structure.
  _, state = trainer.load_state(str(tmp_path))
  assert int(state.step) == 4
  assert (state.disc_params == {}) == (method not in ("dann", "importance"))


@pytest.mark.slow
def test_importance_on_inputs_runs(tmp_path):
  out = trainer.train_and_evaluate(
      _config(**{"adapt.method": "importance", "adapt.disc_input": "inputs"}), str(tmp_path))
  assert np.isfinite(out["accuracy"])


def test_target_stream_has_no_labels_and_eval_covers_three_sets():
  task = AdaptTask(_config())
  ctx = DataContext(global_batch_size=16, seed=0)
  batch = next(task.train_data(ctx))
  assert sorted(batch) == ["source", "target"]
  assert sorted(batch["target"]) == ["image"]
  assert batch["source"]["image"].shape == batch["target"]["image"].shape == (16, 28, 28, 1)
  domains = np.concatenate([b["domain"][b["mask"] > 0] for b in task.eval_data(ctx)()])
  # uci test 359, mnist5k test 1000, 20 per class held out of the uci train split.
  assert np.bincount(domains).tolist() == [359, 1000, 200]


def test_dann_step_reverses_the_discriminator_gradient_into_the_classifier():
  """With weight w, the classifier's gradient is CE's minus w*lambda times the domain loss's."""
  c = _config(**{"adapt.method": "dann", "adapt.schedule": "constant", "adapt.weight": 0.5,
                 "model.dropout": 0.0})
  task = AdaptTask(c)
  batch = next(task.train_data(DataContext(global_batch_size=8, seed=0)))
  state = task.init_state(jax.random.PRNGKey(0), batch)
  x_s = task.inputs(batch["source"]["image"])
  x_t = task.inputs(batch["target"]["image"])
  labels = batch["source"]["label"]

  def parts(params):
    logits, feats = task.model.apply({"params": params}, jnp.concatenate([x_s, x_t]),
                                     train=False, return_features=True)
    logp = jax.nn.log_softmax(logits[:8])
    ce = -jnp.mean(jnp.take_along_axis(logp, labels[:, None], 1))
    d = task.discriminator.apply({"params": state.disc_params}, feats)
    p = jax.nn.sigmoid(d)
    dom = 0.5 * (-jnp.mean(jnp.log(1 - p[:8])) - jnp.mean(jnp.log(p[8:])))
    return ce, dom

  g_ce = jax.grad(lambda p: parts(p)[0])(state.params)
  g_dom = jax.grad(lambda p: parts(p)[1])(state.params)
  want = jax.tree.map(lambda a, b: a - 0.5 * b, g_ce, g_dom)

  # Recover the gradient the step used from one plain-SGD update.
  c.optimizer.name, c.optimizer.lr, c.optimizer.schedule = "sgd", 1.0, "constant"
  c.optimizer.weight_decay = 0.0
  task = AdaptTask(c)
  state = task.init_state(jax.random.PRNGKey(0), batch)
  step = jax.vmap(task.train_step, in_axes=(None, None, None), axis_name=AXIS, axis_size=1)
  new_state, metrics = step(state, batch, jax.random.PRNGKey(1))
  got = jax.tree.map(lambda a, b: a - b[0], state.params, new_state.params)
  ce, dom = parts(state.params)
  np.testing.assert_allclose(float(metrics["loss"][0]), float(ce + dom), rtol=1e-5)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=2e-6)
