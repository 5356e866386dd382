"""The PyTorch reference cGAN (tests/reference/torch_gan.py, what
benchmarks/bench_gan_torch.py times beside ours) is our cGAN: with our variables
copied in, the same generator and discriminator outputs on real mnist5k
images, and the same losses over a few train steps."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from research import config_lib, data

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_torch_thread")]

REPO = os.path.join(os.path.dirname(__file__), "..")
bench = config_lib.load_module(os.path.join(REPO, "benchmarks", "bench_gan_torch.py"),
                               "_bench_gan_torch")
reference = bench.reference()

BATCH = 16


def _perturbed(tree, seed, scale=0.1):
  """Every leaf plus N(0, scale) noise: zero biases, unit CBN scales and zero
  shifts at init would hide misplaced or permuted parameters."""
  leaves, treedef = jax.tree.flatten(tree)
  rng = np.random.default_rng(seed)
  return jax.tree.unflatten(treedef, [
      np.asarray(v) + rng.normal(0.0, scale, np.shape(v)).astype(np.float32) for v in leaves])


@pytest.fixture(scope="module")
def setup():
  """The benchmark's Flax side (the cpu variant, no DiffAugment, batch 16) and
  16 real mnist5k training images in [-1, 1] with their labels."""
  config = bench.make_config(0, batch_size=BATCH, diff_augment="")
  ours = bench.FlaxGAN(config, 0)
  train = data.load_train(config.data)
  images = train["image"][:BATCH]
  labels = np.asarray(train["label"][:BATCH], np.int32)
  return config, ours, images, labels


def _models(config):
  m = config.model
  g = reference.make_torch_generator(m.latent_dim, m.generator.width, m.num_classes,
                                     m.image_size, m.channels)
  d = reference.make_torch_discriminator(m.discriminator.width, m.num_classes,
                                         m.discriminator.num_downsamples, m.channels)
  return g, d


def _nchw(x):
  return torch.from_numpy(np.array(np.asarray(x).transpose(0, 3, 1, 2)))


@pytest.mark.parametrize("train", [True, False])
def test_generator_matches_ours(setup, train):
  config, ours, _, labels = setup
  task, state = ours.task, ours.init_state
  params = _perturbed(state.g_params, 1)
  stats = jax.tree.map(lambda v: np.abs(v) + 0.5, _perturbed(state.g_batch_stats, 2, 0.3))
  g, _ = _models(config)
  reference.load_state(g, reference.generator_state_dict(g, params, stats))
  z = np.random.default_rng(3).normal(size=(BATCH, task.latent_dim)).astype(np.float32)
  variables = {"params": params, "batch_stats": stats}
  out = (_g_train(task, variables, z, labels) if train
         else task.generator.apply(variables, z, labels))
  g.train(train)
  with torch.no_grad():
    t_out = g(torch.from_numpy(z), torch.from_numpy(labels.astype(np.int64)))
  assert float(np.std(np.asarray(out))) > 0.05
  np.testing.assert_allclose(t_out.numpy(), _nchw(out).numpy(), rtol=1e-4, atol=1e-4)
  # Unflipped transposed-conv kernels give a different image.
  state_dict = reference.generator_state_dict(g, params, stats)
  state_dict["to_image.weight"] = state_dict["to_image.weight"][:, :, ::-1, ::-1].copy()
  reference.load_state(g, state_dict)
  with torch.no_grad():
    wrong = g(torch.from_numpy(z), torch.from_numpy(labels.astype(np.int64)))
  assert np.max(np.abs(wrong.numpy() - _nchw(out).numpy())) > 1e-2


def _g_train(task, variables, z, labels):
  """Our generator in training mode (batch statistics) on one device: the
  cross-device BatchNorm axis bound by a one-device pmap."""
  from research import parallel  # pylint: disable=g-import-not-at-top
  fn = jax.pmap(lambda v, z, y: task.generator.apply(v, z, y, train=True,
                                                     mutable=["batch_stats"])[0],
                axis_name=parallel.AXIS, in_axes=(None, 0, 0),
                devices=jax.local_devices()[:1])
  return np.asarray(fn(variables, z[None], labels[None]))[0]


def test_discriminator_matches_ours_on_mnist5k(setup):
  config, ours, images, labels = setup
  task, state = ours.task, ours.init_state
  params = _perturbed(state.d_params, 4, 0.05)
  x = np.asarray(images, np.float32) / 127.5 - 1.0
  (logits, features), upd = task.discriminator.apply(
      {"params": params, "batch_stats": state.d_batch_stats}, x, labels, train=True,
      return_features=True, mutable=["batch_stats"])
  _, d = _models(config)
  reference.load_state(d, reference.discriminator_state_dict(d, params, state.d_batch_stats))
  with torch.no_grad():
    t_logits, t_features = d(_nchw(x), torch.from_numpy(labels.astype(np.int64)),
                             update_stats=True)
  assert float(np.std(np.asarray(logits))) > 1e-2
  np.testing.assert_allclose(t_logits.numpy(), logits, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(t_features.numpy(), features, rtol=1e-4, atol=1e-4)
  # The power iteration advanced the same vectors.
  after = reference.discriminator_state_dict(d, params, upd["batch_stats"])
  for name, buf in d.named_buffers():
    np.testing.assert_allclose(buf.numpy(), after[name], rtol=1e-5, atol=1e-6)


def _our_noise(task, step, seed, fold):
  """The (z, labels) GANTask.train_step draws at `step` for the update folded
  with `fold` (0: the first critic update, n_critic: the generator's), on one
  device: example i's key is fold_in(fold_in(key(seed + 1), step), i)."""
  from research.tasks import gan  # pylint: disable=g-import-not-at-top
  step_key = jax.random.fold_in(jax.random.PRNGKey(seed + 1), step)
  keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(step_key, jnp.arange(BATCH))
  keys = gan._fold_all(keys, fold)  # pylint: disable=protected-access
  z, y = task.noise(gan._fold_all(keys, 10 if fold < task.n_critic else 20))  # pylint: disable=protected-access
  return torch.from_numpy(np.array(z)), torch.from_numpy(np.array(y, np.int64))


def test_train_steps_losses_match(setup):
  """Three steps from the same variables on the same batches and noise: the
  same D and G losses and class terms (DiffAugment off: its draws differ)."""
  config, _, _, _ = setup
  ours = bench.FlaxGAN(config, 0)
  peer = bench.make_peer(reference, config, ours.init_state)
  it = data.ArrayIterator(data.load_train(config.data), BATCH, 0)
  for step in range(3):
    b = next(it)
    metrics = jax.device_get(ours.train_step(b["image"], b["label"]))
    out = peer(*bench.torch_batch(b["image"], b["label"]),
               d_noise=_our_noise(ours.task, step, 0, 0),
               g_noise=_our_noise(ours.task, step, 0, ours.task.n_critic))
    for k in ("d_loss", "d_class", "g_loss", "g_class"):
      np.testing.assert_allclose(float(out[k]), float(np.asarray(metrics[k])), rtol=1e-4,
                                 atol=1e-5, err_msg=f"step {step} {k}")
