"""Erasing (cutout, random erasing) on one image, and batch mixing
(mixup, cutmix) that mixes one-hot labels too."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from research.augment import _checks
from research.augment import registry
from research.augment.color_ops import PixelOp


def box_mask(shape, top, left, height, width):
  """float32 [H, W, 1]: 1 inside rows [top, top + height) x columns
  [left, left + width) (clipped to the image), else 0. Box values may be
  traced."""
  h, w = shape
  ys = jnp.arange(h, dtype=jnp.float32)[:, None, None]
  xs = jnp.arange(w, dtype=jnp.float32)[None, :, None]
  inside = ((ys >= top) & (ys < top + height) & (xs >= left) &
            (xs < left + width))
  return inside.astype(jnp.float32)


def erase(image, top, left, height, width, fill=0.0):
  """Sets a box to `fill` (a number or an array broadcastable to the image).
  Differentiable with respect to `image`."""
  _checks.check_image('erase', image)
  m = box_mask(image.shape[:2], top, left, height, width)
  return image * (1.0 - m) + m * fill


@registry.register('cutout')
def cutout_op(size=0.5, fill=0.0):
  """Cutout (DeVries & Taylor 2017): a square whose centre is uniform over
  the image (so it may be partly outside) is set to `fill`.

  Args:
    size: side as a fraction of min(H, W) in (0, 1], or an int of pixels.
    fill: value in [0, 1].
  """
  if isinstance(size, bool) or not isinstance(size, (int, float)):
    raise TypeError(f'augment.cutout: size must be a fraction in (0, 1] or '
                    f'an int of pixels, got {size!r}')
  if isinstance(size, float):
    _checks.check_in('cutout', 'size', size, 0.0, 1.0, lo_open=True)
  elif size < 1:
    raise ValueError(f'augment.cutout: size in pixels must be >= 1, got '
                     f'{size}')
  _checks.check_in('cutout', 'fill', fill, 0.0, 1.0)

  def fn(key, image):
    h, w, _ = image.shape
    side = size if isinstance(size, int) else max(1, round(size * min(h, w)))
    cy = jax.random.randint(key, (), 0, h).astype(jnp.float32)
    cx = jax.random.randint(jax.random.fold_in(key, 1), (), 0, w)
    return erase(image, cy - side // 2, cx.astype(jnp.float32) - side // 2,
                 side, side, fill)

  return PixelOp('cutout', fn)


@registry.register('random_erasing')
def random_erasing_op(scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0.0,
                      attempts: int = 10):
  """torchvision RandomErasing (apply it always; use p= for its
  probability): up to 10 boxes of area fraction ~ U(scale) and aspect
  h / w ~ logU(ratio) are drawn, the first that fits is erased, and the
  image is unchanged if none fits.

  Args:
    value: fill in [0, 1], or 'random' for per-pixel U[0, 1) noise.
  """
  op = 'random_erasing'
  sc = _checks.as_range(op, 'scale', tuple(scale), None, 0.0, 1.0)
  rt = _checks.as_range(op, 'ratio', tuple(ratio), None, 1e-6, 1e6)
  if value != 'random':
    _checks.check_in(op, 'value', value, 0.0, 1.0)

  def fn(key, image):
    h, w, _ = image.shape
    ka, kr, kt, kl, kv = jax.random.split(key, 5)
    area = h * w * jax.random.uniform(ka, (attempts,), jnp.float32, *sc)
    aspect = jnp.exp(jax.random.uniform(kr, (attempts,), jnp.float32,
                                        math.log(rt[0]), math.log(rt[1])))
    bh = jnp.round(jnp.sqrt(area * aspect))
    bw = jnp.round(jnp.sqrt(area / aspect))
    ok = (bh < h) & (bw < w)
    i = jnp.argmax(ok)
    bh, bw = bh[i], bw[i]
    top = jnp.floor(jax.random.uniform(kt) * (h - bh + 1))
    left = jnp.floor(jax.random.uniform(kl) * (w - bw + 1))
    bh = jnp.where(jnp.any(ok), bh, 0.0)
    fill = (jax.random.uniform(kv, image.shape, image.dtype)
            if value == 'random' else value)
    return erase(image, top, left, bh, bw, fill)

  return PixelOp(op, fn)


def random_cutout(key, image, size=0.5, fill=0.0):
  """Cutout on image float32 [H, W, C]; see `cutout_op`."""
  return cutout_op(size, fill)(key, image)


def random_erasing(key, image, scale=(0.02, 0.33), ratio=(0.3, 3.3),
                   value=0.0):
  """torchvision RandomErasing on image float32 [H, W, C]."""
  return random_erasing_op(scale, ratio, value)(key, image)


# --------------------------------------------------------------------------
# Batch mixing.

MIX_MODES = ('mixup', 'cutmix', 'none')


def _check_mix(op, images, labels, alpha):
  _checks.check_batch(op, images)
  if jnp.ndim(labels) != 2 or labels.shape[0] != images.shape[0]:
    raise ValueError(f'augment.{op}: labels must be one-hot [N, K] with N = '
                     f'{images.shape[0]}, got shape {jnp.shape(labels)}')
  _checks.check_in(op, 'alpha', alpha, 0.0, float('inf'), lo_open=True)


def mixup(key, images, labels, alpha=0.2):
  """mixup (Zhang et al. 2018): one lam ~ Beta(alpha, alpha) per batch,
  partners from a random permutation.

  Args:
    images: float32 [N, H, W, C]; labels: float [N, K] one-hot or soft.
  Returns:
    (lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]).
  """
  _check_mix('mixup', images, labels, alpha)
  k_lam, k_perm = jax.random.split(key)
  lam = jax.random.beta(k_lam, alpha, alpha)
  perm = jax.random.permutation(k_perm, images.shape[0])
  mixed = lam * images + (1.0 - lam) * images[perm]
  return mixed, lam * labels + (1.0 - lam) * labels[perm]


def cutmix(key, images, labels, alpha=1.0):
  """CutMix (Yun et al. 2019): one box per batch with area fraction
  1 - lam, lam ~ Beta(alpha, alpha), centre uniform, clipped to the image;
  labels mixed by the box's actual area.

  Args:
    images: float32 [N, H, W, C]; labels: float [N, K].
  Returns:
    (images with the box pasted from x[perm], mixed labels).
  """
  _check_mix('cutmix', images, labels, alpha)
  n, h, w, _ = images.shape
  k_lam, k_perm, k_y, k_x = jax.random.split(key, 4)
  lam = jax.random.beta(k_lam, alpha, alpha)
  cut = jnp.sqrt(1.0 - lam)
  ch, cw = jnp.floor(h * cut), jnp.floor(w * cut)
  cy = jax.random.randint(k_y, (), 0, h).astype(jnp.float32)
  cx = jax.random.randint(k_x, (), 0, w).astype(jnp.float32)
  y0 = jnp.clip(cy - jnp.floor(ch / 2), 0, h)
  y1 = jnp.clip(cy + jnp.floor(ch / 2), 0, h)
  x0 = jnp.clip(cx - jnp.floor(cw / 2), 0, w)
  x1 = jnp.clip(cx + jnp.floor(cw / 2), 0, w)
  m = box_mask((h, w), y0, x0, y1 - y0, x1 - x0)
  perm = jax.random.permutation(k_perm, n)
  mixed = images * (1.0 - m) + images[perm] * m
  lam_area = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
  return mixed, lam_area * labels + (1.0 - lam_area) * labels[perm]


def mix(key, images, labels_onehot, mode: str = 'none', alpha: float = 1.0):
  """Batch mixing entry point for tasks.

  Args:
    key: PRNG key.
    images: float32 [N, H, W, C] in [0, 1].
    labels_onehot: float [N, K] (one-hot or already soft).
    mode: 'mixup', 'cutmix' or 'none' (returns the inputs unchanged).
    alpha: Beta(alpha, alpha) concentration, > 0.
  Returns:
    (images float32 [N, H, W, C] in [0, 1], labels float [N, K], rows sum
    to 1 when the inputs' do).
  """
  if mode == 'mixup':
    return mixup(key, images, labels_onehot, alpha)
  if mode == 'cutmix':
    return cutmix(key, images, labels_onehot, alpha)
  if mode in ('none', None, ''):
    return images, labels_onehot
  raise ValueError(f'augment.mix: mode must be one of {list(MIX_MODES)}, '
                   f'got {mode!r}')
