"""The PyTorch reference VAE (tests/reference/torch_vae.py, what
benchmarks/bench_vae_torch.py trains beside ours) is our VAE: same layers, init,
loss, schedule."""
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from research import config_lib, data, optim
from research.losses import elbo as elbo_lib

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_torch_thread")]

REPO = os.path.join(os.path.dirname(__file__), "..")


bench = config_lib.load_module(os.path.join(REPO, "benchmarks", "bench_vae_torch.py"),
                               "_bench_vae_torch")
reference = config_lib.load_module(os.path.join(REPO, "tests", "reference", "torch_vae.py"),
                                   "_torch_vae_reference")


NUM_STEPS = 3  # for the update test


@pytest.fixture(scope="module")
def setup():
  """The benchmark's Flax side at the config's sizes (short schedule), its
  model and initial params, 32 real training images and a binarisation."""
  config = bench.make_config(0, NUM_STEPS)
  config.batch_size = 8
  config.optimizer.warmup_steps = 1
  config.kl_warmup_steps = 2
  ours = bench.FlaxRun(config, 0)
  x = data.load("mnist5k", "train")["image"][:32].astype(np.float32) / 255.0
  binary = np.asarray(jax.random.bernoulli(jax.random.PRNGKey(2), x), np.float32)
  return config, ours.task.model, ours.init_params, x, binary, ours


def _nchw(x):
  return torch.from_numpy(np.array(np.asarray(x).transpose(0, 3, 1, 2)))


def _with_random_biases(params):
  """Our initial params with N(0, 0.1) biases (initial biases are zero, so this
  also checks that they land where they should, e.g. the permuted Dense bias)."""
  leaves, treedef = jax.tree.flatten_with_path(params)
  rng = np.random.default_rng(0)
  return jax.tree.unflatten(treedef, [
      jnp.asarray(rng.normal(0.0, 0.1, v.shape), v.dtype)
      if jax.tree_util.keystr(path).endswith("['bias']") else v for path, v in leaves])


def _peer(m, params=None):
  """The PyTorch VAE for model config `m`, with our `params` copied in when given."""
  peer = reference.make_torch_vae((m.image_size, m.image_size, m.channels), m.latent_dim,
                              m.width, m.hidden)
  if params is not None:
    reference.load_flax_params(peer, params)
  return peer


@pytest.mark.parametrize("biases", ["initial", "random"])
def test_torch_model_computes_ours_with_our_params(setup, biases):
  """Encoder mean / log-variance and decoder logits agree on real images."""
  config, model, params, x, _, _ = setup
  if biases == "random":
    params = _with_random_biases(params)
  m = config.model
  peer = _peer(m, params)
  z = np.random.default_rng(1).normal(size=(len(x), m.latent_dim)).astype(np.float32)
  mean, log_var = model.apply({"params": params}, x, method=model.encode)
  logits, = model.apply({"params": params}, z, method=model.decode)
  logits = np.asarray(logits).transpose(0, 3, 1, 2)
  with torch.no_grad():
    t_mean, t_log_var = peer.encode(_nchw(x))
    t_logits = peer.decode(torch.from_numpy(z)).numpy()
  np.testing.assert_allclose(t_mean.numpy(), mean, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(t_log_var.numpy(), log_var, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(t_logits, logits, atol=1e-4, rtol=1e-4)
  for out in (mean, log_var, logits):  # not trivially small
    assert float(np.std(out)) > 0.02
  # The layout-sensitive parts (flatten order, transposed-conv flip) matter:
  # unflipped transposed-conv kernels give different logits.
  state = reference.flax_to_torch_state_dict(params)
  state["dec_deconv2.weight"] = state["dec_deconv2.weight"][:, :, ::-1, ::-1].copy()
  peer.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
  with torch.no_grad():
    assert np.abs(peer.decode(torch.from_numpy(z)).numpy() - logits).max() > 1e-2


def test_torch_bound_terms_match_our_losses(setup):
  """Same x, same eps: log p(x|z) and KL as research.losses.elbo computes them."""
  config, model, params, _, binary, _ = setup
  m = config.model
  peer = _peer(m, params)
  eps = np.random.default_rng(0).normal(size=(len(binary), m.latent_dim)).astype(np.float32)
  mean, log_var = model.apply({"params": params}, binary, method=model.encode)
  z = mean + jnp.exp(0.5 * log_var) * eps
  logits, = model.apply({"params": params}, z, method=model.decode)
  ll = elbo_lib.bernoulli_log_likelihood(logits, binary)
  kl = elbo_lib.gaussian_kl(mean, log_var)
  with torch.no_grad():
    t_ll, t_kl = reference.torch_bound_terms(peer, _nchw(binary), torch.from_numpy(eps))
  np.testing.assert_allclose(t_ll.numpy(), ll, rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(t_kl.numpy(), kl, rtol=1e-5, atol=1e-4)


def test_torch_init_follows_flax_defaults(setup):
  """Own init: the same shapes as ours, zero biases, truncated LeCun-normal kernels."""
  config, _, params, _, _, _ = setup
  m = config.model
  torch.manual_seed(0)
  peer = _peer(m)
  ours = reference.flax_to_torch_state_dict(params)
  theirs = peer.state_dict()
  assert set(ours) == set(theirs)
  for name, value in theirs.items():
    assert tuple(value.shape) == ours[name].shape, name
    if name.endswith("bias"):
      assert not value.any(), name
      continue
    # Same spread as our kernel (both lecun_normal): within 15 %.
    want = float(np.std(ours[name]))
    assert abs(float(value.std()) / want - 1.0) < 0.15, (name, float(value.std()), want)
    assert float(value.abs().max()) <= 2.0 * want / 0.8796 * 1.05, name


def test_torch_run_follows_our_schedules():
  """The LR the torch optimizer applies at each update is optim.schedule's, and
  the KL weight is VAETask.train_step's."""
  num_steps, warmup = 12, 4
  config = bench.make_config(0, num_steps)
  config.optimizer.warmup_steps = warmup
  config.kl_warmup_steps = 5
  run = bench.TorchRun(config, 0, num_steps)
  ours = jax.jit(jax.vmap(optim.schedule(config.optimizer.lr, config.optimizer.schedule,
                                         num_steps, warmup)))(jnp.arange(num_steps))
  images = data.load("mnist5k", "train")["image"][:4]
  for step in range(num_steps):
    assert math.isclose(run.opt.param_groups[0]["lr"], float(ours[step]),
                        rel_tol=1e-5, abs_tol=1e-10), step  # optax: float32
    run.train_step(images)
  assert run.step == num_steps
  assert [reference.kl_weight(t, 1.0, 5) for t in range(6)] == [0.2, 0.4, 0.6, 0.8, 1.0, 1.0]
  assert reference.kl_weight(3, 0.5, 0) == 0.5


def test_torch_updates_follow_ours_from_the_same_start(setup):
  """Same initial params, same binarised batch and posterior noise: three
  updates of the torch side give the parameters of three of our train steps
  (loss, gradients, Adam, LR warm-up + cosine, KL warm-up all agree)."""
  config, _, _, _, _, ours = setup
  peer = bench.TorchRun(config, 0, NUM_STEPS, init_params=ours.init_params)
  train = data.load("mnist5k", "train")
  latent = config.model.latent_dim
  for step in range(NUM_STEPS):
    images = train["image"][8 * step:8 * step + 8]
    # The binarisation and noise VAETask.train_step draws from the trainer's key.
    rng = jax.random.fold_in(jax.random.fold_in(ours.train_rng, step), 0)
    bin_key, z_key = jax.random.split(rng)
    x = np.asarray(ours.task.targets(bin_key, images))
    eps = np.asarray(jax.random.normal(z_key, (len(images), latent)))
    loss = float(ours.train_step(images, train["label"][8 * step:8 * step + 8]))
    t_loss = float(peer.update(_nchw(x), torch.from_numpy(np.array(eps))))
    assert math.isclose(t_loss, loss, rel_tol=1e-5), (step, t_loss, loss)
  got = {k: v.detach().numpy() for k, v in peer.model.state_dict().items()}
  want = reference.flax_to_torch_state_dict(jax.device_get(ours.state.params))
  start = reference.flax_to_torch_state_dict(ours.init_params)
  off = 0
  for name in want:
    # Adam divides by sqrt(v): where a gradient is ~1e-8, float noise moves
    # that element's update by a fraction of the LR (1e-3), so a few may differ.
    np.testing.assert_allclose(got[name], want[name], atol=1e-4, err_msg=name)
    off += int((np.abs(got[name] - want[name]) > 2e-6).sum())
  assert off <= 1e-5 * sum(v.size for v in want.values()), off
  moved = max(np.abs(want[k] - start[k]).max() for k in want)
  assert moved > 1e-4  # the updates did something
