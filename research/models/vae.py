"""Convolutional VAE encoder/decoder, optionally class-conditional.

Images are float32 [N, H, W, C] in [0, 1] with H and W divisible by 4 (28, 32).
The model returns distribution *parameters* only, float32 whatever the
computation `dtype` (bfloat16 for mixed precision); likelihoods, KL and bounds
are in `research.losses.elbo`.

Decoder outputs per `likelihood`:
  'bernoulli'          (logits,)                   each [N, H, W, C]
  'gaussian'           (mean,)        fixed variance set by the loss
  'gaussian_learned'   (mean, log_scale)
  'logistic'           (mean, log_scale)           discretized logistic
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.models import strided_conv

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_learned", "logistic")


def _condition(h, labels, num_classes):
  """Concatenates a one-hot label to a flat feature vector [N, F]."""
  return jnp.concatenate([h, jax.nn.one_hot(labels, num_classes, dtype=h.dtype)],
                         axis=-1)


class Encoder(nn.Module):
  """Conv(w, s2) -> Conv(2w, s2) -> Dense(hidden) -> (mean, log_var), float32 [N, latent]."""
  latent_dim: int = 16
  width: int = 32
  hidden: int = 256
  num_classes: Optional[int] = None  # set for a conditional encoder q(z|x,y)
  fast_strided_convs: bool = True
  dtype: Any = jnp.float32  # computation dtype; parameters are float32

  @nn.compact
  def __call__(self, x, labels=None):
    conv = dict(conv_general_dilated=strided_conv.conv_s2d
                if self.fast_strided_convs else None, dtype=self.dtype)
    h = nn.relu(nn.Conv(self.width, (4, 4), strides=(2, 2), **conv)(x))
    h = nn.relu(nn.Conv(2 * self.width, (4, 4), strides=(2, 2), **conv)(h))
    h = h.reshape(h.shape[0], -1)
    if self.num_classes:
      h = _condition(h, labels, self.num_classes)
    h = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(h))
    mean = nn.Dense(self.latent_dim, dtype=self.dtype, name="mean")(h)
    log_var = nn.Dense(self.latent_dim, dtype=self.dtype, name="log_var")(h)
    # The KL term and the sampled z in float32 (a no-op when computing in float32).
    return mean.astype(jnp.float32), log_var.astype(jnp.float32)


class Decoder(nn.Module):
  """Dense(hidden) -> Dense(H/4 * W/4 * 2w) -> ConvT(w, s2) -> ConvT(out, s2)."""
  image_shape: tuple[int, int, int] = (28, 28, 1)
  width: int = 32
  hidden: int = 256
  likelihood: str = "bernoulli"
  num_classes: Optional[int] = None  # set for a conditional decoder p(x|z,y)
  fast_strided_convs: bool = True
  dtype: Any = jnp.float32  # computation dtype; parameters and outputs are float32

  def _conv_transpose(self, features, index):
    if self.fast_strided_convs:
      # Same parameters and names as nn.ConvTranspose (checkpoints load).
      return strided_conv.SubpixelConvTranspose(
          features, (4, 4), dtype=self.dtype, name=f"ConvTranspose_{index}")
    return nn.ConvTranspose(features, (4, 4), strides=(2, 2), dtype=self.dtype,
                            name=f"ConvTranspose_{index}")

  @nn.compact
  def __call__(self, z, labels=None):
    height, width, channels = self.image_shape
    h = _condition(z, labels, self.num_classes) if self.num_classes else z
    h = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(h))
    h = nn.relu(nn.Dense(height // 4 * width // 4 * 2 * self.width,
                         dtype=self.dtype)(h))
    h = h.reshape(z.shape[0], height // 4, width // 4, 2 * self.width)
    h = nn.relu(self._conv_transpose(self.width, 0)(h))
    two = self.likelihood in ("gaussian_learned", "logistic")
    out = self._conv_transpose(channels * (2 if two else 1), 1)(h).astype(
        jnp.float32)
    if not two:
      return (out,)
    mean, log_scale = jnp.split(out, 2, axis=-1)
    if self.likelihood == "logistic":
      mean = jax.nn.sigmoid(mean)  # logistic location inside the data range
    # A floor on the scale keeps the likelihood from diverging on flat pixels.
    return mean, jnp.maximum(log_scale, -7.0)


class VAE(nn.Module):
  """Encoder + decoder; `__call__` runs x -> q(z|x) -> one z -> p(x|z) params.

  Attributes:
    image_shape: (H, W, C) with H, W divisible by 4.
    latent_dim, width, hidden: sizes.
    likelihood: one of `LIKELIHOODS` (sets the decoder's outputs).
    num_classes: None for an unconditional VAE; else a CVAE (Sohn et al. 2015)
      whose encoder and decoder both see the one-hot label.
    fast_strided_convs: compute the stride-2 convs and transposed convs in
      the forms XLA's CPU backend runs fastest (`research.models.strided_conv`):
      the same function and parameters; XLA on the CPU runs their gradients
      on a slow path otherwise (the train step was ~4x slower than PyTorch's).
    dtype: computation dtype (float32, or bfloat16 for mixed precision);
      parameters, (mean, log_var) and the decoder's outputs are float32.
  """
  image_shape: tuple[int, int, int] = (28, 28, 1)
  latent_dim: int = 16
  width: int = 32
  hidden: int = 256
  likelihood: str = "bernoulli"
  num_classes: Optional[int] = None
  fast_strided_convs: bool = True
  dtype: Any = jnp.float32

  def setup(self):
    if self.likelihood not in LIKELIHOODS:
      raise ValueError(f"models.vae.VAE: likelihood must be one of "
                       f"{LIKELIHOODS}, got {self.likelihood!r}")
    if self.image_shape[0] % 4 or self.image_shape[1] % 4:
      raise ValueError(f"models.vae.VAE: image height and width must be "
                       f"divisible by 4, got {self.image_shape}")
    self.encoder = Encoder(self.latent_dim, self.width, self.hidden,
                           self.num_classes, self.fast_strided_convs, self.dtype)
    self.decoder = Decoder(tuple(self.image_shape), self.width, self.hidden,
                           self.likelihood, self.num_classes,
                           self.fast_strided_convs, self.dtype)

  def encode(self, x, labels=None):
    """x: float [N, H, W, C] in [0, 1] -> (mean, log_var), each [N, latent]."""
    return self.encoder(x, labels)

  def decode(self, z, labels=None):
    """z: float [N, latent] -> tuple of decoder parameters (see module doc)."""
    return self.decoder(z, labels)

  def __call__(self, x, labels=None, *, key):
    """Returns (decoder params, mean, log_var) for one reparameterised z."""
    mean, log_var = self.encode(x, labels)
    z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape)
    return self.decode(z, labels), mean, log_var
