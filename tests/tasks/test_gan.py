"""GAN task: end-to-end on the trainer, 8 devices == 1 device, exact resume."""
import json
import os

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from research import data, parallel, trainer
from research.config_lib import load
from research.tasks.gan import GANTask, to_model_range

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")


def _cgan_quick():
  return load(os.path.join(CONFIGS, "mnist5k_cgan.py") + ":quick")


def _replicated(state, devices):
  """The state placed as pmap returns it, so the first step compiles only once."""
  mesh = Mesh(np.asarray(devices), (parallel.AXIS,))
  return jax.device_put(state, NamedSharding(mesh, PartitionSpec()))


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_cgan_quick_trains_and_writes_a_sample_grid(tmp_path):
  # One step and a 64-image eval: the run is dominated by XLA compiles
  # (init, one train step, one eval step, the sample grid), which this keeps
  # at one each; the multi-step paths are the slow tests below.
  config = _cgan_quick()
  config.num_steps = 1
  config.eval_every = 1
  config.data.eval_split = "test[:64]"
  config.eval_batch_size = 64
  result = trainer.train_and_evaluate(config, str(tmp_path))
  assert result["step"] == 1
  assert np.isfinite(result["d_real"]) and np.isfinite(result["d_fake"])
  from PIL import Image
  grid = Image.open(tmp_path / "samples" / "step_0000001.png")
  # 10 x 10 cells of 28 px with 2 px padding, upscaled x2; a conditional model's rows are
  # labelled with their class names ('0'..'9') in a margin on the left.
  width, height = grid.size
  assert height == 2 * (10 * 30 + 2) and 2 * (10 * 30 + 2) < width < 2 * (10 * 30 + 2) + 40
  margin = np.asarray(grid)[:, :width - 2 * (10 * 30 + 2)]
  assert margin.max() > 128  # the labels are drawn
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  train_rows = [r for r in rows if r["split"] == "train"]
  assert {"d_loss", "g_loss", "d_real", "d_fake", "loss"} <= set(train_rows[-1])


def _train_gan(num_devices, steps=3, global_batch=16, config=None):
  config = _cgan_quick() if config is None else config
  # Plain SGD: Adam divides by sqrt(v) and turns float round-off in tiny
  # gradients into lr-sized differences, which would hide real mismatches.
  for opt in (config.g_optimizer, config.d_optimizer):
    opt.name, opt.lr = "sgd", 0.05
  task = GANTask(config)
  train = data.load("mnist5k", "train")
  images = train["image"][:steps * global_batch].reshape(steps, global_batch, 28, 28, 1)
  labels = train["label"][:steps * global_batch].reshape(steps, global_batch)
  state = task.init_state(jax.random.PRNGKey(0),
                          {"image": images[0, :2], "label": labels[0, :2]})
  dp = parallel.DataParallel(task.train_step, task.eval_step, mode="pmap",
                             devices=jax.local_devices()[:num_devices])
  state = _replicated(dp.put_state(state), jax.local_devices()[:num_devices])
  for s in range(steps):
    batch = parallel.shard({"image": images[s], "label": labels[s]}, num_devices)
    state, metrics = dp.train_step(state, dp.put_batch(batch), jax.random.PRNGKey(1),
                                   np.int32(s))
  return jax.device_get(state), jax.device_get(metrics)


@pytest.mark.slow
def test_eight_devices_give_the_same_generator_as_one():
  # SN + projection + hinge + conditional BatchNorm + DiffAugment + EMA, n_critic 2.
  assert jax.local_device_count() == 8
  one, m1 = _train_gan(1)
  eight, m8 = _train_gan(8)
  assert _max_diff(one.g_params, eight.g_params) <= 1e-4
  assert _max_diff(one.ema_params, eight.ema_params) <= 1e-4
  assert _max_diff(one.d_params, eight.d_params) <= 1e-4
  # Spectral-norm state: sigma is O(100), so compare relatively.
  for a, b in zip(jax.tree.leaves(one.d_batch_stats), jax.tree.leaves(eight.d_batch_stats)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(m1["g_loss"], m8["g_loss"], rtol=1e-5)
  # The generator moved: the test is not comparing two initial states.
  init = GANTask(_cgan_quick()).init_state(
      jax.random.PRNGKey(0), {"image": np.zeros((2, 28, 28, 1), np.uint8),
                              "label": np.zeros(2, np.int32)})
  assert _max_diff(init.g_params, one.g_params) > 1e-3


@pytest.mark.slow
def test_killed_gan_run_resumes_exactly(tmp_path):
  config = _cgan_quick()
  config.num_steps = 4
  config.checkpoint_every = 2
  config.eval_every = 4
  config.async_checkpointing = False
  trainer.train_and_evaluate(config, str(tmp_path / "straight"))
  # "Kill" after step 2 (num_steps may change on resume), then resume to 4.
  config.num_steps = 2
  trainer.train_and_evaluate(config, str(tmp_path / "resumed"))
  config.num_steps = 4
  trainer.train_and_evaluate(config, str(tmp_path / "resumed"))
  _, a = trainer.load_state(str(tmp_path / "straight"))
  _, b = trainer.load_state(str(tmp_path / "resumed"))
  assert int(a.step) == int(b.step) == 4
  assert _max_diff(a, b) == 0.0


def test_class_logits_are_the_label_dependent_part_of_the_projection_discriminator():
  # class_weight's classifier is D read at every label: D(x, c) - D(x, 0)
  # must equal logit_c(x) - logit_0(x) for the same images.
  config = _cgan_quick()
  config.class_weight = 1.0
  task = GANTask(config)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
  state = task.init_state(jax.random.PRNGKey(0),
                          {"image": images, "label": np.zeros(4, np.int32)})
  x = to_model_range(images)
  d = np.stack([task.d_apply(state.d_params, state.d_batch_stats, x,
                             np.full(4, c, np.int32), False)[0] for c in range(10)], 1)
  (_, features), _ = task.d_apply(state.d_params, state.d_batch_stats, x,
                                  np.zeros(4, np.int32), False, return_features=True)
  logits = np.asarray(task.class_logits(state.d_params, features))
  assert logits.shape == (4, 10)
  np.testing.assert_allclose(d - d[:, :1], logits - logits[:, :1], rtol=1e-4, atol=1e-4)


def test_class_weight_adds_both_class_terms_and_needs_a_conditional_model():
  config = _cgan_quick()
  config.class_weight = 1.0
  state, metrics = _train_gan(1, steps=1, config=config)
  for key in ("d_class", "g_class"):  # cross-entropies: finite and positive
    assert np.isfinite(metrics[key]) and float(metrics[key]) > 0
  plain_state, plain = _train_gan(1, steps=1)
  assert "d_class" not in plain and "g_class" not in plain
  # The class terms reach both networks' updates.
  assert _max_diff(state.d_params, plain_state.d_params) > 1e-6
  assert _max_diff(state.g_params, plain_state.g_params) > 1e-6
  unconditional = load(os.path.join(CONFIGS, "mnist5k_dcgan.py") + ":quick")
  unconditional.class_weight = 1.0
  with pytest.raises(ValueError, match="class_weight needs model.conditional"):
    GANTask(unconditional)
