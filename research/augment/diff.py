"""DiffAugment (Zhao et al. 2020) for data-efficient GANs.

Batched, per-image random parameters, and differentiable with respect to
the images, so it can sit between the generator and the discriminator.
Faithful to the reference implementation (data-efficient-gans,
DiffAugment_pytorch.py): no clipping, so it works for images in [-1, 1]
(the reference's range, which its brightness shift U[-0.5, 0.5] assumes) as
well as [0, 1].
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from research.augment import _checks
from research.augment import geometric as geo

POLICIES = ('color', 'translation', 'cutout')


def _color(key, x):
  n = x.shape[0]
  kb, ks, kc = jax.random.split(key, 3)
  u = lambda k: jax.random.uniform(k, (n, 1, 1, 1), x.dtype)
  x = x + (u(kb) - 0.5)
  mean = jnp.mean(x, axis=3, keepdims=True)
  x = (x - mean) * (u(ks) * 2.0) + mean
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  return (x - mean) * (u(kc) + 0.5) + mean


def _translation(key, x, ratio=0.125):
  n, h, w, _ = x.shape
  sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
  ky, kx = jax.random.split(key)
  ty = jax.random.randint(ky, (n,), -sy, sy + 1).astype(jnp.float32)
  tx = jax.random.randint(kx, (n,), -sx, sx + 1).astype(jnp.float32)
  mats = jax.vmap(geo.translation_matrix)(ty, tx)
  return geo.warp_affine_batch(x, mats, None, 'nearest', 'constant', 0.0)


def _cutout(key, x, ratio=0.5):
  n, h, w, _ = x.shape
  ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
  ky, kx = jax.random.split(key)
  oy = jax.random.randint(ky, (n, 1, 1, 1), 0, h + (1 - ch % 2))
  ox = jax.random.randint(kx, (n, 1, 1, 1), 0, w + (1 - cw % 2))
  ys = jnp.arange(h)[None, :, None, None]
  xs = jnp.arange(w)[None, None, :, None]
  y0, x0 = oy - ch // 2, ox - cw // 2
  inside = (ys >= y0) & (ys < y0 + ch) & (xs >= x0) & (xs < x0 + cw)
  return x * (1.0 - inside.astype(x.dtype))


def diff_augment(key, images, policy: str = 'color,translation,cutout'):
  """DiffAugment on a batch.

  Args:
    key: PRNG key.
    images: float [N, H, W, C] (real or generated; any range, typically
      [-1, 1] or [0, 1]).
    policy: comma-separated subset of 'color', 'translation', 'cutout',
      applied in that order; '' is the identity.

  Returns:
    float [N, H, W, C], differentiable with respect to `images`.
  """
  _checks.check_batch('diff_augment', images)
  names = [p.strip() for p in policy.split(',') if p.strip()]
  for name in names:
    if name not in POLICIES:
      raise ValueError(f'augment.diff_augment: unknown policy {name!r}; '
                       f'valid: {", ".join(POLICIES)}')
  fns = dict(color=_color, translation=_translation, cutout=_cutout)
  keys = jax.random.split(key, max(len(names), 1))
  for k, name in zip(keys, names):
    images = fns[name](k, images)
  return images
