"""AdaptTask on the shared trainer: two streams, every method, target labels unused."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import config_lib, trainer
from research.tasks.adapt import METHODS, AdaptTask
from research.tasks.base import DataContext
from tests.steps import one_device_step

_CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "digits_adapt.py")
_DISC = ("dann", "cdan", "cdan_e", "importance")


def _config(pair="uci", **overrides):
  tiny = {"model.width": 4, "adapt.disc_hidden": 16, "batch_size": 16, "eval_batch_size": 800,
          "num_steps": 4, "eval_every": 4, "checkpoint_every": 4, "log_every": 2,
          "optimizer.warmup_steps": 0, "progress": False}
  return config_lib.apply_overrides(config_lib.load(f"{_CONFIG}:{pair},quick"),
                                    {**tiny, **overrides})


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
  if method in _DISC:
    assert "domain_loss" in train[-1]
  # The checkpoint (with an empty discriminator for the alignment-free methods)
  # restores into the task's state structure.
  _, state = trainer.load_state(str(tmp_path))
  assert int(state.step) == 4
  assert (state.disc_params == {}) == (method not in _DISC)


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

  g_ce = jax.jit(jax.grad(lambda p: parts(p)[0]))(state.params)
  g_dom = jax.jit(jax.grad(lambda p: parts(p)[1]))(state.params)
  want = jax.tree.map(lambda a, b: a - 0.5 * b, g_ce, g_dom)

  # Recover the gradient the step used from one plain-SGD update.
  _, state, new_state, metrics = _sgd_step_update(c, batch)
  got = jax.tree.map(lambda a, b: a - b, state.params, new_state.params)
  ce, dom = parts(state.params)
  np.testing.assert_allclose(float(metrics["loss"][0]), float(ce + dom), rtol=1e-5)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=2e-6)


def _sgd_step_update(c, batch):
  """(state before, state after) of one plain-SGD (lr 1) step of task config `c`."""
  c.optimizer.name, c.optimizer.lr, c.optimizer.schedule = "sgd", 1.0, "constant"
  c.optimizer.weight_decay = 0.0
  task = AdaptTask(c)
  state = task.init_state(jax.random.PRNGKey(0), batch)
  new_state, metrics = one_device_step(task)(state, batch, jax.random.PRNGKey(1))
  return task, state, jax.tree.map(lambda a: a[0], new_state), metrics


def test_cdan_e_step_matches_a_hand_written_randomized_map_and_entropy_weights():
  """Classifier gradient = grad CE - w * grad(weighted domain BCE on (f R_f) * (g R_g) / sqrt(d))
  with g and the entropy weights held constant (as the reference code conditions on g.detach())."""
  c = _config(**{"adapt.method": "cdan_e", "adapt.schedule": "constant", "adapt.weight": 0.5,
                 "adapt.cdan_random_threshold": 0, "adapt.cdan_out_dim": 32,
                 "model.dropout": 0.0})
  task = AdaptTask(c)
  batch = next(task.train_data(DataContext(global_batch_size=8, seed=0)))
  task, state, new_state, metrics = _sgd_step_update(c, batch)
  x = jnp.concatenate([task.inputs(batch["source"]["image"]),
                       task.inputs(batch["target"]["image"])])
  labels = batch["source"]["label"]
  rng = np.random.default_rng(c.adapt.cdan_seed)  # the fixed matrices, drawn independently
  feats0 = task.model.apply({"params": state.params}, x, train=False, return_features=True)[1]
  r_f = rng.standard_normal((feats0.shape[1], 32)).astype(np.float32)
  r_g = rng.standard_normal((10, 32)).astype(np.float32)
  assert state.disc_params["Dense_0"]["kernel"].shape[0] == 32  # the randomized map's size
  logits0 = task.model.apply({"params": state.params}, x, train=False)
  g0 = np.asarray(jax.nn.softmax(logits0))
  w = 1 + np.exp(np.sum(g0 * np.log(g0 + 1e-5), axis=1))

  def parts(params):
    logits, feats = task.model.apply({"params": params}, x, train=False, return_features=True)
    ce = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits[:8]), labels[:, None], 1))
    h = (feats @ r_f) * (g0 @ r_g) / np.sqrt(32.0)
    p = jax.nn.sigmoid(task.discriminator.apply({"params": state.disc_params}, h))
    dom = 0.5 * (jnp.sum(w[:8] * -jnp.log(1 - p[:8])) / w[:8].sum()
                 + jnp.sum(w[8:] * -jnp.log(p[8:])) / w[8:].sum())
    return ce, dom

  g_ce = jax.jit(jax.grad(lambda p: parts(p)[0]))(state.params)
  g_dom = jax.jit(jax.grad(lambda p: parts(p)[1]))(state.params)
  want = jax.tree.map(lambda a, b: a - 0.5 * b, g_ce, g_dom)
  got = jax.tree.map(lambda a, b: a - b, state.params, new_state.params)
  ce, dom = parts(state.params)
  np.testing.assert_allclose(float(metrics["loss"][0]), float(ce + dom), rtol=1e-5)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=2e-6)


def test_oracle_trains_on_labelled_target_train_images_minus_the_holdout():
  from research import data
  task = AdaptTask(_config(**{"adapt.method": "oracle"}))
  batch = next(task.train_data(DataContext(global_batch_size=64, seed=0)))
  train, val = data.split_holdout(data.load("uci_digits", "train", image_size=28), 20, 0)
  pool = {im.tobytes(): lab for im, lab in zip(train["image"], train["label"])}
  held = {im.tobytes() for im in val["image"]}
  for im, lab in zip(batch["source"]["image"], batch["source"]["label"]):
    assert pool[im.tobytes()] == lab and im.tobytes() not in held


def test_optimizer_fields_frozen_and_lr_mults_are_honoured():
  c = _config(**{"adapt.method": "dann", "model.dropout": 0.0})
  task = AdaptTask(c)
  batch = next(task.train_data(DataContext(global_batch_size=8, seed=0)))
  _, state, plain, _ = _sgd_step_update(c, batch)
  c = _config(**{"adapt.method": "dann", "model.dropout": 0.0,
                 "optimizer.frozen": ("penultimate/.*",),
                 "optimizer.lr_mults": (("head/.*", 0.25),)})
  _, state2, new, _ = _sgd_step_update(c, batch)
  np.testing.assert_array_equal(np.asarray(new.params["penultimate"]["kernel"]),
                                np.asarray(state2.params["penultimate"]["kernel"]))
  for name in ("head", "Conv_0"):
    step_plain = np.asarray(state.params[name]["kernel"] - plain.params[name]["kernel"])
    step = np.asarray(state2.params[name]["kernel"] - new.params[name]["kernel"])
    # Same parameters at step 0, so the same gradients: only the update rules differ.
    np.testing.assert_allclose(step, step_plain * (0.25 if name == "head" else 1.0),
                               rtol=1e-4, atol=1e-8)
  assert np.abs(step_plain).max() > 0


@pytest.mark.parametrize("field,value,match", [
    ("bn_mode", "frozen_stats", "bn_mode='frozen_stats' needs a model with BatchNorm"),
    ("mix", "mixup", "mix='mixup' is not supported"),
])
def test_unsupported_optimizer_fields_are_rejected_by_name(field, value, match, tmp_path):
  with pytest.raises(ValueError, match=match):
    trainer.train_and_evaluate(_config(**{field: value}), str(tmp_path))


@pytest.mark.parametrize("bn_mode", [pytest.param("train", marks=pytest.mark.slow),
                                     "frozen_stats"])
def test_bn_mode_is_honoured_with_a_batchnorm_model(bn_mode):
  """A width/depth-0.25 EfficientNet-Lite: 'frozen_stats' keeps the running statistics
  through a DANN step, 'train' (the control; ~80 s on 2 loaded cores: slow) moves them."""
  import ml_collections
  c = _config(**{"adapt.method": "dann", "bn_mode": bn_mode, "input.channels": 3})
  c.model = ml_collections.ConfigDict(dict(
      name="efficientnet_lite0", num_classes=10, width=0.25, depth=0.25, dropout_rate=0.0,
      drop_connect_rate=0.0, bn_momentum=0.0))
  task = AdaptTask(c)
  batch = next(task.train_data(DataContext(global_batch_size=8, seed=0)))
  _, state, new, metrics = _sgd_step_update(c, batch)
  assert np.isfinite(float(metrics["loss"][0]))
  moved = [not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
           zip(jax.tree.leaves(state.batch_stats), jax.tree.leaves(new.batch_stats))]
  assert len(moved) > 10
  assert all(moved) if bn_mode == "train" else not any(moved)


def test_npz_target_with_split_placeholder_trains_and_evaluates(tmp_path):
  rng = np.random.default_rng(0)
  for split, n in (("train", 300), ("test", 50)):
    np.savez(tmp_path / f"{split}.npz", image=rng.integers(0, 256, (n, 28, 28, 3), np.uint8),
             label=rng.integers(0, 10, n).astype(np.int32))
  c = _config("mnistm", **{"adapt.method": "cdan",
                           "target.name": str(tmp_path / "{split}.npz")})
  out = trainer.train_and_evaluate(c, str(tmp_path / "run"))
  assert int(np.sum(out["confusion"])) == 50 and np.isfinite(out["accuracy"])
  with pytest.raises(ValueError, match="needs a '{split}' placeholder"):
    AdaptTask(_config("mnistm", **{"target.name": "x.npz"})).eval_data(
        DataContext(global_batch_size=16, seed=0))


def test_framing_applies_to_source_and_target_blocks_on_load():
  from research import data
  from research.data import frame, sources
  # The 'frame' variant frames the source (mnist5k) only; the target framed by its fields.
  c = config_lib.apply_overrides(config_lib.load(f"{_CONFIG}:uci,quick,frame"), {
      "target.frame": "bbox", "target.frame_levels": 17, "target.holdout_per_class": 0})
  assert (c.data.frame, c.data.frame_size, c.data.frame_levels) == ("bbox", 8, 17)
  task = AdaptTask(c)
  ctx = DataContext(global_batch_size=16, seed=0)
  want = lambda name, split: sources.resize_uint8(frame.frame_images(
      data.load(name, split)["image"], "bbox", size=8, levels=17), 28)
  sets = [b for b in task.eval_data(ctx)()]
  images = np.concatenate([b["image"][b["mask"] > 0] for b in sets])
  domains = np.concatenate([b["domain"][b["mask"] > 0] for b in sets])
  np.testing.assert_array_equal(images[domains == 0], want("uci_digits", "test"))
  np.testing.assert_array_equal(images[domains == 1], want("mnist5k", "test"))
  # Training streams: every source batch image is a framed mnist5k train image.
  batch = next(task.train_data(ctx))
  framed_train = want("mnist5k", "train").reshape(-1, 28 * 28)
  for im in batch["source"]["image"]:
    assert (framed_train == im.reshape(1, -1)).all(axis=1).any()
