"""VAE / conditional VAE training on the shared trainer, with an IWAE test NLL.

Training maximises the (beta-weighted, KL-warmed-up) ELBO with one
reparameterised sample. Evaluation reports, per test example, the one-sample
ELBO, its reconstruction and KL terms and, when `iwae_samples` > 0, the
importance-weighted bound L_k, whose negative is the test NLL in nats
(`nll`, and `bits_per_dim` for the discrete likelihoods).

Config fields read here (beside the trainer's):
  model.image_size, model.channels, model.latent_dim, model.width,
  model.hidden, model.num_classes, model.conditional (bool),
  model.likelihood ('bernoulli' | 'gaussian' | 'gaussian_learned' | 'logistic')
  gaussian_log_scale (log sd of the fixed-variance Gaussian),
  binarize (dynamic binarisation for 'bernoulli': training images are
    resampled every step; test images once, with a fixed key),
  beta, kl_warmup_steps (beta ramps linearly from 0 over these steps),
  iwae_samples (k for the eval bound, 0 = off), iwae_chunk,
  optimizer.* (research.optim).
"""
from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from research import models, optim, parallel
from research.losses import elbo as elbo_lib
from research.models import vae as vae_models
from research.tasks import base, generation
from research.tasks.sample_grid import save_image_grid
from research.tasks.train_state import Optimizer, TrainState


# model.likelihood -> log p(x | z) per example from (decoder outputs, x, the fixed
# Gaussian log-scale); every likelihood the decoder can parameterise has a row.
LOG_LIKELIHOODS = {
    "bernoulli": lambda out, x, _: elbo_lib.bernoulli_log_likelihood(out[0], x),
    "gaussian": lambda out, x, log_scale: elbo_lib.gaussian_log_likelihood(out[0], x, log_scale),
    "gaussian_learned": lambda out, x, _: elbo_lib.gaussian_log_likelihood(out[0], x, out[1]),
    "logistic": lambda out, x, _: elbo_lib.discretized_logistic_log_likelihood(out[0], out[1], x),
}


class VAETask(base.Task, generation.Generative):
  """(Conditional) VAE with a choice of likelihoods."""

  def __init__(self, config):
    super().__init__(config)
    m = config.model
    self.conditional = bool(m.get("conditional", False))
    self.num_classes = m.get("num_classes", 10)
    self.likelihood = m.get("likelihood", "bernoulli")
    if self.likelihood not in LOG_LIKELIHOODS:
      raise ValueError(f"vae task: model.likelihood must be one of {sorted(LOG_LIKELIHOODS)}, "
                       f"got {self.likelihood!r}")
    self.image_shape = (m.image_size, m.image_size, m.channels)
    self.model = vae_models.VAE(
        image_shape=self.image_shape, latent_dim=m.latent_dim, width=m.width,
        hidden=m.hidden, likelihood=self.likelihood,
        num_classes=self.num_classes if self.conditional else None,
        dtype=models.compute_dtype(config.get("dtype", "float32")))
    self.binarize = bool(config.get("binarize", True)) and self.likelihood == "bernoulli"
    self.gaussian_log_scale = config.get("gaussian_log_scale", math.log(0.1))
    self.beta = config.get("beta", 1.0)
    self.kl_warmup_steps = config.get("kl_warmup_steps", 0)
    self.iwae_samples = config.get("iwae_samples", 0)
    self.iwae_chunk = config.get("iwae_chunk", 100)
    self.seed = config.get("seed", 0)

  # ---- model plumbing ----
  def _labels(self, labels):
    return labels.astype(jnp.int32) if self.conditional else None

  def targets(self, key, images):
    """uint8 [N, H, W, C] -> float32 targets in [0, 1] (binarised for Bernoulli)."""
    x = images.astype(jnp.float32) / 255.0
    if self.binarize:
      x = jax.random.bernoulli(key, x).astype(jnp.float32)
    return x

  def log_likelihood(self, decoder_out, x):
    """log p(x | z) per example, float32 [N], from the decoder's parameters."""
    return LOG_LIKELIHOODS[self.likelihood](decoder_out, x, self.gaussian_log_scale)

  def decode_mean(self, params, z, labels=None):
    """Mean image float32 [N, H, W, C] in [0, 1] for latents z [N, latent_dim]."""
    out = self.model.apply({"params": params}, z, self._labels(labels),
                           method=self.model.decode)
    mean = jax.nn.sigmoid(out[0]) if self.likelihood == "bernoulli" else out[0]
    return jnp.clip(mean, 0.0, 1.0)

  def reconstruct(self, state, images, labels=None):
    """uint8 images [N, H, W, C] -> mean reconstructions from z = E[q(z|x)]."""
    params = state.params
    x = images.astype(jnp.float32) / 255.0
    mean, _ = self.model.apply({"params": params}, x, self._labels(labels),
                               method=self.model.encode)
    return self.decode_mean(params, mean, labels)

  # ---- generation (research.tasks.generation) ----
  can_reconstruct = True

  @property
  def latent_dim(self):
    return self.model.latent_dim

  def images_from_latents(self, state, z, labels):
    return self.decode_mean(state.params, z, labels)

  def _bound_terms(self, params, x, labels, key):
    out, mean, log_var = self.model.apply({"params": params}, x, self._labels(labels),
                                          key=key)
    return self.log_likelihood(out, x), elbo_lib.gaussian_kl(mean, log_var)

  # ---- host side ----
  def init_state(self, rng, batch):
    x = jnp.asarray(batch["image"]).astype(jnp.float32) / 255.0
    if tuple(x.shape[1:]) != self.image_shape:
      raise ValueError(f"vae task: images are {tuple(x.shape[1:])} but "
                       f"model.image_size/channels say {self.image_shape}")
    labels = jnp.zeros(x.shape[0], jnp.int32)
    params = self.model.init(rng, x, self._labels(labels), key=rng)["params"]
    # optim.make applies optimizer.frozen / lr_mults; the update gates frozen gradients.
    frozen = tuple(self.config.optimizer.get("frozen", ()) or ())
    return TrainState.create(
        params, Optimizer(optim.make(self.config.optimizer, params, self.config.num_steps),
                          frozen))

  def summarize_eval(self, sums):
    out = super().summarize_eval(sums)
    num_dims = int(np.prod(self.image_shape))
    out["nll"] = -out.get("iwae", out["elbo"])  # nats per example
    if self.likelihood in ("bernoulli", "logistic"):
      out["bits_per_dim"] = float(elbo_lib.bits_per_dim(out["nll"], num_dims))
    return out

  def on_eval(self, state, step, workdir):
    """Writes workdir/samples/step_XXXXXXX.png: 10x10 prior samples (mean images)."""
    params = jax.device_get(state.params)
    z = jax.random.normal(jax.random.PRNGKey(self.seed + 3),
                          (100, self.model.latent_dim))
    labels = jnp.repeat(jnp.arange(10) % self.num_classes, 10)
    images = jax.jit(self.decode_mean)(params, z, labels)
    save_image_grid(np.asarray(images),
                    os.path.join(workdir, "samples", f"step_{step:07d}.png"), 10,
                    row_labels=self.row_labels(np.arange(10) % self.num_classes))

  # ---- per device ----
  def train_step(self, state, batch, rng):
    bin_key, z_key = jax.random.split(rng)
    x = self.targets(bin_key, batch["image"])
    labels = batch["label"]
    warm = (jnp.minimum(1.0, (state.step + 1) / self.kl_warmup_steps)
            if self.kl_warmup_steps else 1.0)
    beta = self.beta * warm

    def loss_fn(params, b, key):
      ll, kl = self._bound_terms(params, b["x"], b["label"], key)
      loss = -jnp.mean(elbo_lib.elbo(ll, kl, beta))
      return loss, {"elbo": jnp.mean(ll - kl), "recon": jnp.mean(ll),
                    "kl": jnp.mean(kl)}

    params, opt_state, loss, aux = state.apply_loss(
        loss_fn, {"x": x, "label": labels}, z_key, self.grad_accum_steps)
    metrics = parallel.mean({"loss": loss, "beta": jnp.asarray(beta, jnp.float32), **aux})
    return state.replace(step=state.step + 1, params=params,
                         opt_state=opt_state), metrics

  def eval_step(self, state, batch):
    """Sums over real examples of the ELBO, its terms and the IWAE bound."""
    n = batch["image"].shape[0]
    device_key = parallel.device_key(jax.random.PRNGKey(self.seed + 4))
    bin_key, z_key, iwae_key = jax.random.split(device_key, 3)
    x = self.targets(bin_key, batch["image"])
    labels = batch["label"]
    mask = batch["mask"].astype(jnp.float32)
    ll, kl = self._bound_terms(state.params, x, labels, z_key)
    sums = {"elbo_sum": jnp.sum((ll - kl) * mask), "recon_sum": jnp.sum(ll * mask),
            "kl_sum": jnp.sum(kl * mask), "count": jnp.sum(mask)}
    if self.iwae_samples:
      mean, log_var = self.model.apply({"params": state.params}, x,
                                       self._labels(labels), method=self.model.encode)

      def log_px_given_z(z, x_):
        out = self.model.apply({"params": state.params}, z, self._labels(labels),
                               method=self.model.decode)
        return self.log_likelihood(out, x_)

      bound = elbo_lib.iwae_bound(iwae_key, x, mean, log_var, log_px_given_z,
                                  self.iwae_samples,
                                  min(self.iwae_chunk, self.iwae_samples))
      sums["iwae_sum"] = jnp.sum(bound * mask)
    del n
    return sums
