"""Colour and pixel functions on one float32 image [H, W, C] in [0, 1].

Deterministic ops `adjust_*(image, value)` / `equalize(image)` take explicit
parameters (which may be traced). Their random, registered forms (`*_op`
factories returning `PixelOp`s) are in `research/augment/color_ops.py`.

The arithmetic is written as explicit per-channel multiply-adds: XLA on the
CPU runs `r * 0.299 + g * 0.587 + b * 0.114` many times faster than
`sum(x * w, -1)` or `x @ w`.

Colour ops need C == 3 (grayscale/contrast also accept C == 1, where they
treat the single channel as luma).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from research.augment import _checks

# ITU-R 601-2 luma, as PIL's convert('L') and torchvision.
LUMA = (0.299, 0.587, 0.114)


def _luma(image):
  """[H, W] luma of an RGB (or single-channel) image."""
  if image.shape[-1] == 1:
    return image[..., 0]
  r, g, b = image[..., 0], image[..., 1], image[..., 2]
  return r * LUMA[0] + g * LUMA[1] + b * LUMA[2]


def _blend(a, b, factor):
  """clip(b + factor * (a - b)): factor 1 gives a, 0 gives b."""
  return jnp.clip(b + factor * (a - b), 0.0, 1.0)


def adjust_brightness(image, factor):
  """Multiplies by `factor` >= 0 (torchvision / PIL Brightness), clipped."""
  _checks.check_in('brightness', 'factor', factor, 0.0, float('inf'))
  return jnp.clip(image * factor, 0.0, 1.0)


def adjust_contrast(image, factor):
  """Blends with the mean luma (torchvision / PIL Contrast), clipped."""
  _checks.check_in('contrast', 'factor', factor, 0.0, float('inf'))
  _checks.check_image('contrast', image, (1, 3))
  mean = jnp.mean(_luma(image))
  return _blend(image, mean, factor)


def adjust_saturation(image, factor):
  """Blends with the luma image (torchvision / PIL Color), clipped."""
  _checks.check_in('saturation', 'factor', factor, 0.0, float('inf'))
  _checks.check_image('saturation', image, (3,))
  return _blend(image, _luma(image)[..., None], factor)


def _channel_means(images):
  """Per-image channel means: float32 [N, H, W, C] -> [N, C].

  Rows are summed first, keeping W * C values side by side: XLA on the CPU
  runs this ~50x faster than `mean(luma, axis=(1, 2))` under vmap.
  """
  n, h, w, c = images.shape
  rows = jnp.sum(images.reshape(n, h, w * c), axis=1)
  return jnp.sum(rows.reshape(n, w, c), axis=1) * (1.0 / (h * w))


def adjust_color_batch(images, brightness=None, contrast=None,
                       saturation=None):
  """Brightness, then contrast, then saturation on a batch, in one pass.

  Exactly `adjust_saturation(adjust_contrast(adjust_brightness(x, b), c), s)`
  per image, with the clip to [0, 1] after every step (so this is NOT one
  colour matrix: the intermediate clips change the result wherever a step
  leaves [0, 1]). None skips a step.

  Args:
    images: float32 [N, H, W, 3] in [0, 1] ([N, H, W, 1] without saturation).
    brightness, contrast, saturation: float32 [N] factors >= 0, or None.

  Returns:
    float32 [N, H, W, C] in [0, 1].
  """
  images = jnp.asarray(_checks.check_batch('adjust_color_batch', images))
  c = images.shape[-1]
  if c not in (1, 3) or (saturation is not None and c != 3):
    raise ValueError(f'augment.adjust_color_batch: images must have 3 '
                     f'channels (1 without saturation), got shape '
                     f'{tuple(images.shape)}')
  per_image = lambda v: jnp.asarray(v, jnp.float32)[:, None, None, None]
  if brightness is not None:
    images = jnp.clip(images * per_image(brightness), 0.0, 1.0)
  if contrast is not None:
    means = _channel_means(images)
    mean = means[:, 0] if c == 1 else (means[:, 0] * LUMA[0] +
                                        means[:, 1] * LUMA[1] +
                                        means[:, 2] * LUMA[2])
    images = _blend(images, per_image(mean), per_image(contrast))
  if saturation is not None:
    images = _blend(images, _luma(images)[..., None], per_image(saturation))
  return images


def rgb_to_hsv(image):
  """float RGB [..., 3] in [0, 1] -> HSV [..., 3], hue in [0, 1) (colorsys)."""
  r, g, b = image[..., 0], image[..., 1], image[..., 2]
  maxc = jnp.maximum(jnp.maximum(r, g), b)
  minc = jnp.minimum(jnp.minimum(r, g), b)
  delta = maxc - minc
  s = jnp.where(maxc > 0, delta / jnp.where(maxc > 0, maxc, 1.0), 0.0)
  safe = jnp.where(delta > 0, delta, 1.0)
  rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
  h = jnp.where(r == maxc, bc - gc,
                jnp.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
  h = jnp.where(delta > 0, jnp.mod(h / 6.0, 1.0), 0.0)
  return jnp.stack([h, s, maxc], axis=-1)


def hsv_to_rgb(hsv):
  """HSV [..., 3] (hue in [0, 1)) -> RGB [..., 3] in [0, 1] (colorsys)."""
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  h6 = jnp.mod(h, 1.0) * 6.0

  def channel(n):
    k = jnp.mod(n + h6, 6.0)
    return v - v * s * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)

  return jnp.stack([channel(5.0), channel(3.0), channel(1.0)], axis=-1)


def adjust_hue(image, delta):
  """Rotates hue by `delta` in [-0.5, 0.5] turns (torchvision hue)."""
  _checks.check_in('hue', 'delta', delta, -0.5, 0.5)
  _checks.check_image('hue', image, (3,))
  hsv = rgb_to_hsv(image)
  hsv = hsv.at[..., 0].set(jnp.mod(hsv[..., 0] + delta, 1.0))
  return jnp.clip(hsv_to_rgb(hsv), 0.0, 1.0)


def to_grayscale(image):
  """Luma broadcast to all channels (PIL convert('L'))."""
  _checks.check_image('grayscale', image, (1, 3))
  return jnp.broadcast_to(_luma(image)[..., None], image.shape)


def adjust_gamma(image, gamma, gain=1.0):
  """gain * image ** gamma, clipped; gamma > 0."""
  _checks.check_in('gamma', 'gamma', gamma, 0.0, float('inf'), lo_open=True)
  return jnp.clip(gain * jnp.power(image, gamma), 0.0, 1.0)


def invert(image):
  """1 - image."""
  _checks.check_image('invert', image)
  return 1.0 - image


def solarize(image, threshold=0.5):
  """Inverts pixels >= threshold (PIL ImageOps.solarize on image * 255)."""
  _checks.check_in('solarize', 'threshold', threshold, 0.0, 1.0)
  return jnp.where(image >= threshold, 1.0 - image, image)


def _to_levels(image):
  """Nearest uint8 level of each value, as float32 in [0, 255]."""
  return jnp.round(jnp.clip(image, 0.0, 1.0) * 255.0)


def posterize(image, bits):
  """Keeps the top `bits` in [1, 8] of each uint8 level (PIL posterize).

  `bits` may be traced. Values are first rounded to the nearest 1/255.
  """
  _checks.check_in('posterize', 'bits', bits, 1, 8)
  step = jnp.exp2(8.0 - jnp.asarray(bits, jnp.float32))
  return jnp.floor(_to_levels(image) / step) * step / 255.0


def _histogram256(levels):
  """Counts of each level in [0, 255]: levels float [P] -> float32 [256].

  Computed as a 16x16 outer product of one-hot codes (a matmul), which XLA
  runs far faster on the CPU than a 256-bin scatter-add.
  """
  hi = jnp.floor(levels / 16.0)
  lo = levels - 16.0 * hi
  codes = jnp.arange(16, dtype=jnp.float32)
  one_hi = (hi[:, None] == codes).astype(jnp.float32)
  one_lo = (lo[:, None] == codes).astype(jnp.float32)
  return (one_hi.T @ one_lo).reshape(256)


def equalize(image):
  """Per-channel histogram equalization, exactly PIL ImageOps.equalize on
  the image's uint8 levels. image: float32 [H, W, C] in [0, 1]."""
  _checks.check_image('equalize', image)
  h, w, c = image.shape
  levels = _to_levels(image).reshape(h * w, c)
  out = []
  for ch in range(c):
    u = levels[:, ch]
    hist = _histogram256(u)
    total = float(h * w)
    last = jnp.max(u).astype(jnp.int32)
    step = jnp.floor((total - hist[last]) / 255.0)
    cum_before = jnp.cumsum(hist) - hist
    safe = jnp.maximum(step, 1.0)
    lut = jnp.minimum(jnp.floor((jnp.floor(step / 2.0) + cum_before) / safe),
                      255.0)
    lut = jnp.where(step > 0, lut, jnp.arange(256, dtype=jnp.float32))
    out.append(jnp.take(lut, u.astype(jnp.int32), mode='clip'))
  return (jnp.stack(out, -1) / 255.0).reshape(h, w, c)


def autocontrast(image):
  """Stretches each channel's [min, max] to [0, 1] (PIL autocontrast with
  cutoff 0, without its rounding to uint8); constant channels unchanged."""
  _checks.check_image('autocontrast', image)
  lo = jnp.min(image, axis=(0, 1))
  hi = jnp.max(image, axis=(0, 1))
  ok = hi > lo
  scale = jnp.where(ok, 1.0 / jnp.where(ok, hi - lo, 1.0), 1.0)
  lo = jnp.where(ok, lo, 0.0)
  return jnp.clip((image - lo) * scale, 0.0, 1.0)


def _shift_sum(padded, weights, axis, size):
  """sum_k weights[k] * padded shifted by k along `axis` (explicit adds)."""
  out = 0.0
  for k in range(len(weights)):
    out = out + weights[k] * jax.lax.slice_in_dim(padded, k, k + size,
                                                  axis=axis)
  return out


def adjust_sharpness(image, factor):
  """PIL ImageEnhance.Sharpness: blends with the 3x3 SMOOTH-filtered image
  (border pixels unfiltered), factor 0 = smooth, 1 = identity, > 1 sharper."""
  _checks.check_in('sharpness', 'factor', factor, 0.0, float('inf'))
  image = _checks.check_image('sharpness', image)
  h, w, _ = image.shape
  if h < 3 or w < 3:
    return image
  # [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 = (box 3x3 + 4 * centre) / 13.
  rows = image[:-2] + image[1:-1] + image[2:]
  box = rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]
  centre = image[1:-1, 1:-1]
  smooth = (box + 4.0 * centre) * (1.0 / 13.0)
  degenerate = image.at[1:-1, 1:-1].set(smooth)
  return _blend(image, degenerate, factor)


def gaussian_blur(image, sigma, radius: int):
  """Separable Gaussian blur with whole-sample reflect borders.

  Args:
    image: float32 [H, W, C].
    sigma: standard deviation in pixels, > 0 (may be traced).
    radius: static kernel radius; the kernel has 2 * radius + 1 taps.
  """
  _checks.check_image('blur', image)
  _checks.check_in('blur', 'sigma', sigma, 0.0, float('inf'), lo_open=True)
  h, w, _ = image.shape
  if radius < 1:
    return image
  if radius >= min(h, w):
    raise ValueError(f'augment.blur: radius must be < min(H, W) = '
                     f'{min(h, w)}, got {radius}')
  x = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  k = jnp.exp(-0.5 * (x / sigma) ** 2)
  k = k / jnp.sum(k)
  taps = [k[i] for i in range(2 * radius + 1)]
  r = radius
  p = jnp.pad(image, ((r, r), (0, 0), (0, 0)), mode='reflect')
  image = _shift_sum(p, taps, 0, h)
  p = jnp.pad(image, ((0, 0), (r, r), (0, 0)), mode='reflect')
  return _shift_sum(p, taps, 1, w)
