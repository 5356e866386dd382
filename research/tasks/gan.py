"""GAN training (DCGAN / SNGAN / conditional with projection) on the shared trainer.

One state holds both networks, both optimizers, the batch_stats of both (the
generator's BatchNorm statistics and the discriminator's spectral-norm
power-iteration vectors) and an exponential moving average of the generator
weights, which is what sampling uses. One `train_step` makes `n_critic`
discriminator updates, each on the same real batch with fresh noise and fresh
DiffAugment, then one generator update.

Randomness is a function of (seed, step, global example index) only: every
example's noise, fake label, DiffAugment draw and gradient-penalty weight come
from `fold_in(fold_in(key(seed), step), example)`. Together with cross-device
BatchNorm in the generator, the same global batch gives the same update on 1 or
on 8 devices, and a resumed run repeats the killed one exactly.

Config fields read here (beside the trainer's):
  model.image_size, model.channels, model.latent_dim, model.num_classes
  model.conditional (bool), model.generator.{width, conditioning}
    ('embed' | 'cbn' when conditional), model.discriminator.{width,
    spectral_norm, num_downsamples}
  loss ('non_saturating' | 'hinge' | 'least_squares' | 'wasserstein'),
  n_critic, gp_weight (WGAN-GP lambda), r1_weight (R1 gamma),
  class_weight (conditional only: weight of a cross-entropy term that reads
    the projection discriminator as a classifier, logits_c = <embed(c), h>:
    D minimises it on real (image, label) pairs, G on its samples and their
    labels; 0 = off, plain projection GAN),
  ema_decay, diff_augment (DiffAugment policy, '' = off),
  g_optimizer.*, d_optimizer.* (research.optim; separate learning rates).
"""
from __future__ import annotations

import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from research import models, optim, parallel
from research.losses import adversarial
from research.models import gan as gan_models
from research.tasks import base, generation, train_state
from research.tasks.sample_grid import save_image_grid


@flax.struct.dataclass
class GANState:
  """Both networks' arrays; their optimizers (train_state.Optimizer) as static fields."""
  step: jax.Array
  g_params: Any
  g_batch_stats: Any
  d_params: Any
  d_batch_stats: Any
  g_opt_state: Any
  d_opt_state: Any
  ema_params: Any
  g_optimizer: Any = flax.struct.field(pytree_node=False)
  d_optimizer: Any = flax.struct.field(pytree_node=False)


def to_model_range(images: jax.Array) -> jax.Array:
  """uint8 [N, H, W, C] in [0, 255] -> float32 in [-1, 1]."""
  return images.astype(jnp.float32) / 127.5 - 1.0


def _fold_all(keys, data: int):
  return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, data)


class GANTask(base.Task, generation.Generative):
  """Adversarial training of a (conditional) generator and discriminator."""

  def __init__(self, config):
    super().__init__(config)
    m = config.model
    self.latent_dim = m.latent_dim
    self.num_classes = m.get("num_classes", 10)
    self.conditional = bool(m.get("conditional", False))
    self.image_shape = (m.image_size, m.image_size, m.channels)
    g, d = m.generator, m.discriminator
    dtype = models.compute_dtype(config.get("dtype", "float32"))
    self.generator = gan_models.Generator(
        image_size=m.image_size, channels=m.channels, width=g.width,
        num_classes=self.num_classes,
        conditioning=g.get("conditioning", "cbn") if self.conditional else None,
        axis_name=parallel.batchnorm_axis_name(), dtype=dtype)
    self.discriminator = gan_models.Discriminator(
        width=d.width, num_classes=self.num_classes, conditional=self.conditional,
        spectral_norm=d.get("spectral_norm", False),
        num_downsamples=d.get("num_downsamples", 2), dtype=dtype)
    self.loss_kind = config.get("loss", "non_saturating")
    if self.loss_kind not in adversarial.kinds():
      raise ValueError(f"gan task: loss must be one of {adversarial.kinds()}, got "
                       f"{self.loss_kind!r}")
    self.n_critic = config.get("n_critic", 1)
    if self.n_critic < 1:
      raise ValueError(f"gan task: n_critic must be >= 1, got {self.n_critic}")
    self.gp_weight = config.get("gp_weight", 0.0)
    self.r1_weight = config.get("r1_weight", 0.0)
    self.class_weight = config.get("class_weight", 0.0)
    if self.class_weight and not self.conditional:
      raise ValueError("gan task: class_weight needs model.conditional=True "
                       "(it trains the projection discriminator's class embedding)")
    self.ema_decay = config.get("ema_decay", 0.999)
    self.policy = config.get("diff_augment", "")
    self.seed = config.get("seed", 0)
    if self.grad_accum_steps != 1:
      raise ValueError(f"gan task: grad_accum_steps={self.grad_accum_steps} is not "
                       f"supported (n_critic alternating updates share one batch); use 1")

  # ---- model plumbing ----
  def _labels(self, labels):
    return labels if self.conditional else None

  def g_apply(self, params, batch_stats, z, labels, train: bool):
    """Generator forward: (images in [-1, 1], new batch_stats)."""
    variables = {"params": params, "batch_stats": batch_stats}
    if not train:
      return self.generator.apply(variables, z, self._labels(labels)), batch_stats
    out, upd = self.generator.apply(variables, z, self._labels(labels), train=True,
                                    mutable=["batch_stats"])
    return out, upd["batch_stats"]

  def d_apply(self, params, batch_stats, images, labels, train: bool,
              return_features: bool = False):
    """Discriminator forward: (logits [N], new batch_stats); with
    `return_features`, ((logits, pooled features [N, F]), new batch_stats)."""
    variables = {"params": params}
    if batch_stats:
      variables["batch_stats"] = batch_stats
    if not train or not batch_stats:
      return self.discriminator.apply(variables, images, self._labels(labels),
                                      return_features=return_features), batch_stats
    out, upd = self.discriminator.apply(variables, images, self._labels(labels),
                                        train=True, return_features=return_features,
                                        mutable=["batch_stats"])
    return out, upd["batch_stats"]

  @staticmethod
  def class_logits(d_params, features):
    """The projection discriminator read as a classifier: float32 [N, classes].

    logit_c(x) = <embed(c), h(x)> for D's pooled features h(x) [N, F]: the
    label-dependent part of D(x, c), so a softmax over c is D's belief about
    x's class.
    """
    embed = d_params["projection"]["embedding"]
    return (features @ embed.T).astype(jnp.float32)

  def class_loss(self, d_params, features, labels):
    """Mean cross-entropy of `class_logits` against int labels [N]."""
    logits = self.class_logits(d_params, features)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

  def augment(self, keys, images):
    """DiffAugment with one key per example (so results ignore the device split)."""
    if not self.policy:
      return images
    from research import augment  # pylint: disable=g-import-not-at-top
    return jax.vmap(lambda k, x: augment.diff_augment(k, x[None], self.policy)[0])(
        keys, images)

  def noise(self, keys):
    """Per-example latent z [N, latent_dim] ~ N(0, I) and labels int [N]."""
    z = jax.vmap(lambda k: jax.random.normal(k, (self.latent_dim,)))(_fold_all(keys, 0))
    y = jax.vmap(lambda k: jax.random.randint(k, (), 0, self.num_classes))(
        _fold_all(keys, 1))
    return z, y

  def sample(self, state, z, labels=None, use_ema: bool = True):
    """Images float32 [N, H, W, C] in [0, 1] from the (EMA) generator, eval mode."""
    params = state.ema_params if use_ema else state.g_params
    if labels is None:
      labels = jnp.zeros(z.shape[0], jnp.int32)
    x, _ = self.g_apply(params, state.g_batch_stats, z, labels, False)
    return (x + 1.0) / 2.0

  def images_from_latents(self, state, z, labels):
    return self.sample(state, z, labels)

  # ---- host side ----
  def init_state(self, rng, batch):
    g_rng, d_rng = jax.random.split(rng)
    x = to_model_range(jnp.asarray(batch["image"]))
    if tuple(x.shape[1:]) != self.image_shape:
      raise ValueError(f"gan task: images are {tuple(x.shape[1:])} but "
                       f"model.image_size/channels say {self.image_shape}")
    n = x.shape[0]
    y = jnp.zeros((n,), jnp.int32)
    g_vars = self.generator.init(g_rng, jnp.zeros((n, self.latent_dim)),
                                 self._labels(y))
    d_vars = self.discriminator.init(d_rng, x, self._labels(y))
    g_opt, d_opt = (
        train_state.Optimizer(optim.make(cfg, v["params"], self.config.num_steps),
                              tuple(cfg.get("frozen", ()) or ()))
        for cfg, v in ((self.config.g_optimizer, g_vars), (self.config.d_optimizer, d_vars)))
    return GANState(step=jnp.zeros((), jnp.int32),
                    g_params=g_vars["params"],
                    g_batch_stats=g_vars.get("batch_stats", {}),
                    d_params=d_vars["params"],
                    d_batch_stats=d_vars.get("batch_stats", {}),
                    g_opt_state=g_opt.init(g_vars["params"]),
                    d_opt_state=d_opt.init(d_vars["params"]),
                    ema_params=g_vars["params"],
                    g_optimizer=g_opt, d_optimizer=d_opt)

  def params_for_export(self, state):
    return {"params": state.ema_params, "batch_stats": state.g_batch_stats}

  def on_eval(self, state, step, workdir):
    """Writes workdir/samples/step_XXXXXXX.png: 10x10 EMA samples, one class per row."""
    state = jax.device_get(state)
    z = jax.random.normal(jax.random.PRNGKey(self.seed + 3), (100, self.latent_dim))
    labels = jnp.repeat(jnp.arange(10) % self.num_classes, 10)
    images = jax.jit(self.sample)(state, z, labels)
    save_image_grid(np.asarray(images),
                    os.path.join(workdir, "samples", f"step_{step:07d}.png"), 10,
                    row_labels=self.row_labels(np.arange(10) % self.num_classes))

  # ---- per device ----
  def _d_update(self, state, real, y_real, keys):
    z, y_fake = self.noise(_fold_all(keys, 10))
    fake, _ = self.g_apply(state.g_params, state.g_batch_stats, z, y_fake, True)
    fake = lax.stop_gradient(fake)
    real_aug = self.augment(_fold_all(keys, 11), real)
    fake_aug = self.augment(_fold_all(keys, 12), fake)
    n = real.shape[0]

    def loss_fn(d_params, _, __):
      (logits, features), stats = self.d_apply(
          d_params, state.d_batch_stats, jnp.concatenate([real_aug, fake_aug]),
          jnp.concatenate([y_real, y_fake]), True, return_features=True)
      real_logits, fake_logits = logits[:n], logits[n:]
      loss = adversarial.discriminator_loss(real_logits, fake_logits, self.loss_kind)
      d_real = lambda v: self.d_apply(d_params, stats, v, y_real, False)[0]
      penalty = jnp.zeros(())
      if self.gp_weight:
        eps = jax.vmap(lambda k: jax.random.uniform(k, ()))(_fold_all(keys, 13))
        penalty += self.gp_weight * adversarial.gradient_penalty(
            d_real, real_aug, fake_aug, None, eps=eps)
      if self.r1_weight:
        penalty += 0.5 * self.r1_weight * adversarial.r1_penalty(d_real, real_aug)
      aux = {"d_loss": loss, "penalty": penalty,
             "d_real": jnp.mean(real_logits), "d_fake": jnp.mean(fake_logits)}
      total = loss + penalty
      if self.class_weight:
        d_class = self.class_loss(d_params, features[:n], y_real)
        aux["d_class"] = d_class
        total = total + self.class_weight * d_class
      return total, (stats, aux)

    d_params, opt_state, _, (stats, aux) = train_state.update(
        loss_fn, state.d_params, state.d_opt_state, state.d_optimizer)
    state = state.replace(d_params=d_params, d_opt_state=opt_state,
                          d_batch_stats=parallel.mean(stats))
    return state, aux

  def _g_update(self, state, keys):
    z, y_fake = self.noise(_fold_all(keys, 20))

    def loss_fn(g_params, _, __):
      fake, stats = self.g_apply(g_params, state.g_batch_stats, z, y_fake, True)
      fake_aug = self.augment(_fold_all(keys, 21), fake)
      (logits, features), _ = self.d_apply(state.d_params, state.d_batch_stats,
                                           fake_aug, y_fake, False, return_features=True)
      loss = adversarial.generator_loss(logits, self.loss_kind)
      g_class = jnp.zeros(())
      if self.class_weight:
        g_class = self.class_loss(state.d_params, features, y_fake)
      return loss + self.class_weight * g_class, (stats, (loss, g_class))

    params, opt_state, _, (stats, (loss, g_class)) = train_state.update(
        loss_fn, state.g_params, state.g_opt_state, state.g_optimizer)
    # EMA with a warm-up so short runs are not dominated by the initial weights.
    t = state.step.astype(jnp.float32)
    decay = jnp.minimum(self.ema_decay, (1.0 + t) / (10.0 + t))
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p,
                       state.ema_params, params)
    return state.replace(g_params=params, g_opt_state=opt_state,
                         g_batch_stats=parallel.mean(stats),
                         ema_params=ema), (loss, g_class)

  def train_step(self, state, batch, rng):
    del rng  # randomness is per (seed, step, global example): see module doc
    real = to_model_range(batch["image"])
    y_real = batch["label"].astype(jnp.int32)
    n = real.shape[0]
    step_key = jax.random.fold_in(jax.random.PRNGKey(self.seed + 1), state.step)
    keys = parallel.example_keys(step_key, n)
    d_aux = []
    for i in range(self.n_critic):
      state, aux = self._d_update(state, real, y_real, _fold_all(keys, i))
      d_aux.append(aux)
    state, (g_loss, g_class) = self._g_update(state, _fold_all(keys, self.n_critic))
    metrics = {k: jnp.mean(jnp.stack([a[k] for a in d_aux])) for k in d_aux[0]}
    metrics["g_loss"] = g_loss
    if self.class_weight:
      metrics["g_class"] = g_class
    metrics["loss"] = metrics["d_loss"] + g_loss
    return state.replace(step=state.step + 1), parallel.mean(metrics)

  def eval_step(self, state, batch):
    """Sums of D's mean logits on real test images and on EMA samples."""
    real = to_model_range(batch["image"])
    labels = batch["label"].astype(jnp.int32)
    mask = batch["mask"].astype(jnp.float32)
    n = real.shape[0]
    keys = parallel.example_keys(jax.random.PRNGKey(self.seed + 2), n)
    z, _ = self.noise(keys)
    fake = self.sample(state, z, labels) * 2.0 - 1.0
    d_real, _ = self.d_apply(state.d_params, state.d_batch_stats, real, labels, False)
    d_fake, _ = self.d_apply(state.d_params, state.d_batch_stats, fake, labels, False)
    return {"d_real_sum": jnp.sum(d_real * mask), "d_fake_sum": jnp.sum(d_fake * mask),
            "count": jnp.sum(mask)}
