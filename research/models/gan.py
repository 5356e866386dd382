"""DCGAN / SNGAN generator and discriminator, optionally class-conditional.

Images are float32 [N, H, W, C] in [-1, 1] (the generator ends in tanh), with
H = W in {28, 32} (more generally H = base * 2^k with base in {4, 7}) and any C.

* `Generator`: z [N, latent_dim] (+ labels int [N]) -> images. Conditioning
  is `'embed'` (a learned label embedding concatenated to z, as in cGAN) or
  `'cbn'` (conditional BatchNorm: per-class scale and shift, as in
  Miyato & Koyama 2018 / BigGAN). BatchNorm is cross-device when `axis_name`
  is set, so 8 devices x 8 images normalise like 1 device x 64.
* `Discriminator`: images (+ labels) -> one real logit per image [N]. No
  BatchNorm (gradient penalties need per-example outputs). `spectral_norm=True`
  wraps every Conv/Dense in `nn.SpectralNorm` (SNGAN, Miyato et al. 2018); the
  power-iteration vectors live in the `batch_stats` collection and advance
  when `train=True` (apply with `mutable=['batch_stats']`). Conditioning is the
  projection discriminator (Miyato & Koyama 2018): logit = psi(h) + <embed(y), h>.

Both take `dtype`, the computation dtype (bfloat16 for mixed precision).
Parameters, BatchNorm statistics and spectral-norm vectors are float32 either
way, and so are the generated images and the discriminator's logits/features.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from research.models import strided_conv

CONDITIONINGS = (None, "embed", "cbn")


def _base_and_steps(image_size: int) -> tuple[int, int]:
  """image_size = base * 2^steps with base in {4, 7}."""
  for base in (7, 4):
    steps = math.log2(image_size / base)
    if image_size % base == 0 and steps >= 1 and steps == int(steps):
      return base, int(steps)
  raise ValueError(f"models.gan: image_size must be 4 * 2^k or 7 * 2^k "
                   f"(e.g. 28, 32, 64), got {image_size}")


class ConditionalBatchNorm(nn.Module):
  """BatchNorm without its own affine part, then a per-class scale and shift.

  gamma_y starts at 1 and beta_y at 0, so at init this is plain BatchNorm.
  """
  num_classes: int
  momentum: float = 0.9
  axis_name: Optional[str] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, labels, train: bool):
    features = x.shape[-1]
    x = nn.BatchNorm(use_running_average=not train, momentum=self.momentum,
                     use_scale=False, use_bias=False, dtype=self.dtype,
                     axis_name=self.axis_name if train else None)(x)
    gamma = nn.Embed(self.num_classes, features, name="gamma", dtype=self.dtype,
                     embedding_init=nn.initializers.ones)(labels)
    beta = nn.Embed(self.num_classes, features, name="beta", dtype=self.dtype,
                    embedding_init=nn.initializers.zeros)(labels)
    return x * gamma[:, None, None, :] + beta[:, None, None, :]


class Generator(nn.Module):
  """DCGAN generator: Dense -> (ConvTranspose stride 2, BN, ReLU)* -> tanh.

  Attributes:
    image_size: output height = width (28 or 32, or base * 2^k).
    channels: output channels (1 grayscale, 3 RGB).
    width: channels of the last hidden layer; earlier layers double it.
    num_classes: classes for conditioning (ignored when `conditioning=None`).
    conditioning: None, 'embed' or 'cbn'.
    axis_name: device axis for cross-device BatchNorm in training.
    fast_strided_convs: compute the transposed convs' kernel gradients as
      strided convolutions' (`research.models.strided_conv`; same function
      and parameters, much faster gradients on the CPU).
    dtype: computation dtype (float32, or bfloat16 for mixed precision).
  """
  image_size: int = 28
  channels: int = 1
  width: int = 64
  num_classes: int = 10
  conditioning: Optional[str] = None
  axis_name: Optional[str] = None
  fast_strided_convs: bool = True
  dtype: Any = jnp.float32

  def _up(self, features, name):
    if self.fast_strided_convs:
      return strided_conv.SubpixelConvTranspose(features, (4, 4), dtype=self.dtype,
                                                name=name)
    return nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME",
                            dtype=self.dtype, name=name)

  @nn.compact
  def __call__(self, z, labels=None, train: bool = False):
    """z: float [N, latent_dim] ~ N(0, I); labels: int [N] in [0, num_classes).

    Returns: float32 [N, image_size, image_size, channels] in [-1, 1].
    """
    if self.conditioning not in CONDITIONINGS:
      raise ValueError(f"models.gan.Generator: conditioning must be one of "
                       f"{CONDITIONINGS}, got {self.conditioning!r}")
    if self.conditioning and labels is None:
      raise ValueError("models.gan.Generator: conditioning="
                       f"{self.conditioning!r} needs labels, got None")
    base, steps = _base_and_steps(self.image_size)

    def norm_relu(h, name):
      if self.conditioning == "cbn":
        h = ConditionalBatchNorm(self.num_classes, axis_name=self.axis_name,
                                 dtype=self.dtype, name=name)(h, labels, train)
      else:
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                         axis_name=self.axis_name if train else None,
                         dtype=self.dtype, name=name)(h)
      return nn.relu(h)

    if self.conditioning == "embed":
      z = jnp.concatenate(
          [z, nn.Embed(self.num_classes, z.shape[-1], dtype=self.dtype,
                       name="label_embed")(labels).astype(z.dtype)],
          axis=-1)
    top = self.width * 2 ** (steps - 1)
    h = nn.Dense(base * base * top, dtype=self.dtype, name="project")(z)
    h = norm_relu(h.reshape(z.shape[0], base, base, top), "bn_project")
    for i in range(steps - 1):
      h = self._up(top // 2 ** (i + 1), f"up_{i}")(h)
      h = norm_relu(h, f"bn_up_{i}")
    h = self._up(self.channels, "to_image")(h)
    return jnp.tanh(h.astype(jnp.float32))


class Discriminator(nn.Module):
  """DCGAN discriminator: (Conv stride 2, LeakyReLU)* -> sum pool -> logit.

  Attributes:
    width: channels of the first conv; later layers double it.
    num_classes: classes for the projection (when `conditional`).
    conditional: projection discriminator on labels.
    spectral_norm: SNGAN-style spectral normalisation of every layer.
    num_downsamples: stride-2 stages (2 for 28x28 -> 7x7, 3 for 32 -> 4).
    fast_strided_convs: compute the stride-2 convs on the space-to-depth
      input (`research.models.strided_conv`; same function and parameters).
    dtype: computation dtype (float32, or bfloat16 for mixed precision); the
      spectral norm's power iteration runs on the float32 parameters.
  """
  width: int = 64
  num_classes: int = 10
  conditional: bool = False
  spectral_norm: bool = False
  num_downsamples: int = 2
  fast_strided_convs: bool = True
  dtype: Any = jnp.float32

  def _layer(self, layer, x, train):
    if self.spectral_norm:
      return nn.SpectralNorm(layer, name=f"{layer.name}_sn")(
          x, update_stats=train)
    return layer(x)

  @nn.compact
  def __call__(self, images, labels=None, train: bool = False,
               return_features: bool = False):
    """images: float [N, H, W, C] in [-1, 1]; labels: int [N].

    Returns: logits float32 [N]; with `return_features`, also the pooled
    features float32 [N, width * 2^num_downsamples].
    """
    if self.conditional and labels is None:
      raise ValueError("models.gan.Discriminator: conditional=True needs "
                       "labels, got None")
    h = images
    h = nn.leaky_relu(self._layer(nn.Conv(self.width, (3, 3), dtype=self.dtype,
                                          name="stem"),
                                  h, train), 0.1)
    for i in range(self.num_downsamples):
      w = self.width * 2 ** (i + 1)
      conv = strided_conv.conv_s2d if self.fast_strided_convs else None
      h = self._layer(nn.Conv(w, (4, 4), strides=(2, 2), name=f"down_{i}",
                              conv_general_dilated=conv, dtype=self.dtype), h, train)
      h = nn.leaky_relu(h, 0.1)
      h = self._layer(nn.Conv(w, (3, 3), dtype=self.dtype, name=f"conv_{i}"), h,
                      train)
      h = nn.leaky_relu(h, 0.1)
    features = jnp.sum(h, axis=(1, 2))  # SNGAN's global sum pooling
    logits = self._layer(nn.Dense(1, dtype=self.dtype, name="head"), features,
                         train)[:, 0]
    if self.conditional:
      embed = nn.Embed(self.num_classes, features.shape[-1], dtype=self.dtype,
                       name="projection")(labels)
      logits = logits + jnp.sum(embed * features, axis=-1)
    # Losses in float32 (no-ops when computing in float32).
    logits, features = logits.astype(jnp.float32), features.astype(jnp.float32)
    return (logits, features) if return_features else logits
