"""The adaptation terms of research.tasks.adapt, one function per method family.

Each term takes the classifier's outputs on one device's batch (source rows
first, then target rows) and returns (loss to add, metrics). `f` are the
classifier's features (the penultimate layer, or the feature extractor's
output for `dann_mnist`), `g` its class probabilities.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from research import models
from research.losses import domain

METHODS = ("source_only", "dann", "cdan", "cdan_e", "coral", "mmd", "importance", "oracle")
ADVERSARIAL = ("dann", "cdan", "cdan_e")
NEEDS_DISC = ADVERSARIAL + ("importance",)


class MethodConfig:
  """The `adapt` block, checked: every field with its default.

  Fields: method, weight (>= 0), schedule ('warm' | 'constant'), gamma,
  disc_hidden, disc_depth, disc_input ('features' | 'inputs'), disc_width,
  max_weight, mmd_kernels, mmd_kernel_mul, cdan_out_dim, cdan_random_threshold,
  cdan_seed, standardize ('none' | 'per_image').
  """

  def __init__(self, a):
    self.method = a.get("method", "source_only")
    if self.method not in METHODS:
      raise ValueError(f"adapt.method must be one of {METHODS}, got {self.method!r}")
    self.weight = float(a.get("weight", 1.0))
    if self.weight < 0:
      raise ValueError(f"adapt.weight must be >= 0, got {self.weight}")
    self.schedule = a.get("schedule", "warm")
    if self.schedule not in ("warm", "constant"):
      raise ValueError(f"adapt.schedule must be 'warm' or 'constant', got {self.schedule!r}")
    self.gamma = float(a.get("gamma", 10.0))
    self.disc_hidden = int(a.get("disc_hidden", 256))
    self.disc_depth = int(a.get("disc_depth", 2))
    if self.disc_depth < 1:
      raise ValueError(f"adapt.disc_depth must be >= 1, got {self.disc_depth}")
    self.disc_input = a.get("disc_input", "features")
    if self.disc_input not in ("features", "inputs"):
      raise ValueError(f"adapt.disc_input must be 'features' or 'inputs', "
                       f"got {self.disc_input!r}")
    if self.disc_input == "inputs" and self.method != "importance":
      raise ValueError(f"adapt.disc_input='inputs' is for method 'importance'; "
                       f"{self.method!r}'s discriminator must see the features")
    self.disc_width = int(a.get("disc_width", 8))
    self.max_weight = float(a.get("max_weight", 10.0))
    self.mmd_kernels = int(a.get("mmd_kernels", 5))
    self.mmd_kernel_mul = float(a.get("mmd_kernel_mul", 2.0))
    self.cdan_out_dim = int(a.get("cdan_out_dim", 1024))
    self.cdan_random_threshold = int(a.get("cdan_random_threshold", 4096))
    self.cdan_seed = int(a.get("cdan_seed", 0))
    self.standardize = a.get("standardize", "none")
    if self.standardize not in ("none", "per_image"):
      raise ValueError(f"adapt.standardize must be 'none' or 'per_image', "
                       f"got {self.standardize!r}")

  @property
  def uses_target(self) -> bool:
    """Whether a step needs the target images at all."""
    return self.method not in ("source_only", "oracle")

  @property
  def needs_target_features(self) -> bool:
    return self.uses_target and not (self.method == "importance"
                                     and self.disc_input == "inputs")

  def lambda_p(self, progress: jax.Array) -> jax.Array:
    """The adaptation term's ramp: Ganin's 2 / (1 + exp(-gamma p)) - 1, or 1."""
    if self.schedule == "warm":
      return domain.grl_schedule(progress, self.gamma)
    return jnp.ones((), jnp.float32)

  def discriminator(self, dtype=jnp.float32):
    """The domain classifier module computing in `dtype` (the classifier's), or
    None for methods without one."""
    if self.method not in NEEDS_DISC:
      return None
    if self.disc_input == "inputs":
      # A small CNN on the images (no shared features with the classifier).
      return models.get_model("small_cnn", num_classes=1, width=self.disc_width,
                              dtype=dtype)
    return models.get_model("domain_discriminator", hidden=self.disc_hidden,
                            depth=self.disc_depth, dtype=dtype)

  def cdan_matrices(self, feature_dim: int, num_classes: int):
    """(R_f, R_g) when CDAN's map is randomized (d_f * d_g > threshold), else None."""
    if feature_dim * num_classes <= self.cdan_random_threshold:
      return None
    return domain.random_matrices(feature_dim, num_classes, self.cdan_out_dim,
                                  self.cdan_seed)

  def cdan_input(self, feats: jax.Array, probs: jax.Array) -> jax.Array:
    """The CDAN discriminator's input: f (x) g, or its randomized map. [N, D], [N, C]."""
    mats = self.cdan_matrices(feats.shape[-1], probs.shape[-1])
    if mats is None:
      return domain.multilinear_map(feats, probs)
    return domain.randomized_multilinear_map(feats, probs, jnp.asarray(mats[0]),
                                             jnp.asarray(mats[1]))

  def disc_example(self, feats: jax.Array, logits: jax.Array, images: jax.Array):
    """An input of the discriminator's shape, for its init."""
    if self.disc_input == "inputs":
      return images
    if self.method in ("cdan", "cdan_e"):
      return self.cdan_input(feats, jax.nn.softmax(logits))
    return feats


def adaptation_term(cfg: MethodConfig, disc_apply, disc_params: Any, logits: jax.Array,
                    feats: jax.Array | None, n: int, lam: jax.Array,
                    x_s: jax.Array | None = None, x_t: jax.Array | None = None):
  """(ce_weights [n] or None, loss to add to the mean CE, metrics) of `cfg.method`.

  Args:
    disc_apply: (params, inputs) -> logits [M] of the domain classifier.
    logits: float [n (+ m), classes], source rows first (target rows when the
      method needs target features).
    feats: float [n (+ m), D] or None.
    n: the number of source rows.
    lam: the ramp lambda_p (float scalar).
    x_s, x_t: the model inputs, for importance weighting on inputs.
  """
  aux = {}
  method = cfg.method
  if method in ("source_only", "oracle"):
    return None, jnp.zeros((), jnp.float32), aux
  if method in ADVERSARIAL:
    f = domain.gradient_reversal(feats, cfg.weight * lam)
    if method == "dann":
      d = disc_apply(disc_params, f)
    else:
      # The reference code conditions on g without gradient through it.
      probs = lax.stop_gradient(jax.nn.softmax(logits))
      d = disc_apply(disc_params, cfg.cdan_input(f, probs))
    if method == "cdan_e":
      w = domain.entropy_weights(probs)
      loss = domain.weighted_domain_classifier_loss(d[:n], d[n:], w[:n], w[n:])
      aux["entropy_weight_mean"] = jnp.mean(w)
    else:
      loss = domain.domain_classifier_loss(d[:n], d[n:])
    aux["domain_loss"] = loss
    aux["domain_accuracy"] = domain.domain_accuracy(d[:n], d[n:])
    return None, loss, aux
  if method in ("coral", "mmd"):
    f_s, f_t = feats[:n], feats[n:]
    align = (domain.coral_loss(f_s, f_t) if method == "coral"
             else domain.mmd_loss(f_s, f_t, num_kernels=cfg.mmd_kernels,
                                  kernel_mul=cfg.mmd_kernel_mul))
    aux[f"{method}_loss"] = align
    return None, cfg.weight * lam * align, aux
  # importance: the discriminator trains on detached inputs; the weights carry no gradient.
  d_in = (lax.stop_gradient(feats) if cfg.disc_input == "features"
          else jnp.concatenate([x_s, x_t]))
  d = disc_apply(disc_params, d_in)
  w = domain.importance_weights(jax.nn.sigmoid(d[:n]), cfg.max_weight)
  loss = domain.domain_classifier_loss(d[:n], d[n:])
  aux.update(domain_loss=loss, domain_accuracy=domain.domain_accuracy(d[:n], d[n:]),
             weight_ess=domain.effective_sample_size(w), weight_max=jnp.max(w))
  return w, loss, aux


def as_numpy_channels(sets: dict, channels: int) -> dict:
  """Host-side: repeats gray [N, H, W, 1] images of each set to `channels` (eval batches)."""
  out = {}
  for key, arrays in sets.items():
    image = arrays["image"]
    if channels and image.shape[-1] == 1 and channels > 1:
      image = np.repeat(image, channels, axis=-1)
    out[key] = {**arrays, "image": image}
  return out
