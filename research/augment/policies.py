"""Policies: compose, random_apply, one_of, RandAugment, TrivialAugmentWide.

All take and return per-image ops `op(key, image) -> image`. `compose`
fuses every run of consecutive geometric ops into ONE coordinate map and ONE
resample, which is both faster and sharper than chained resamples.

Sampling under `jax.vmap`: a per-image random choice (`one_of`, the op
choice in RandAugment / TrivialAugmentWide) is a `lax.switch` on a traced
index, which vmap turns into computing every branch and selecting. To keep
that affordable, RandAugment / TrivialAugmentWide draw the geometric
branch's matrix by selection (cheap) and warp ONCE per layer, so each layer
costs one warp plus the pixel ops, and the op per image stays exactly
uniform (no per-batch quotas).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from research.augment import _checks
from research.augment import color
from research.augment import geometric as geo
from research.augment.color import PixelOp
from research.augment.geometric import GeometricOp


def _mode(g: GeometricOp):
  """(interpolation, border, fill) a geometric op needs; None entries fit
  anything. Flips fit anything (pixel centres map onto pixel centres);
  crops/resizes (border None) read only inside the image, up to half a
  pixel past its edge."""
  if g.is_flip:
    return (None, None, None)
  if g.border is None:
    return (g.interpolation, None, None)
  return (g.interpolation, g.border, g.fill)


def _merge(a, b):
  """Merged mode of two compatible modes, or None if they conflict."""
  out = []
  for x, y in zip(a, b):
    if x is not None and y is not None and x != y:
      return None
    out.append(x if x is not None else y)
  return tuple(out)


def _fuse(run: Sequence[GeometricOp], mode) -> GeometricOp:
  """One GeometricOp whose matrix is the product of the run's matrices."""
  defaults = ('bilinear', 'edge', 0.0)
  mode = tuple(m if m is not None else d for m, d in zip(mode, defaults))

  def matrix_fn(key, shape):
    keys = jax.random.split(key, len(run))
    total = jnp.eye(3, dtype=jnp.float32)
    for k, g in zip(keys, run):
      m, shape = g.matrix_fn(k, shape)
      # Ops apply in order, so output coordinates of the last op map back
      # through each earlier op's matrix: M_1 @ M_2 @ ... @ M_n.
      total = total @ m
    return total, shape

  if len(run) == 1 and run[0].border is not None:
    return run[0]
  name = '+'.join(g.name for g in run)
  return GeometricOp(name, matrix_fn, *mode,
                     is_flip=all(g.is_flip for g in run))


def fuse_geometric(ops):
  """Groups consecutive geometric ops with compatible (interpolation,
  border, fill) into single fused ops (see `_mode`)."""
  out, run, mode = [], [], (None, None, None)
  for op in ops:
    if isinstance(op, GeometricOp):
      merged = _merge(mode, _mode(op))
      if run and merged is None:
        out.append(_fuse(run, mode))
        run, merged = [], _mode(op)
      run.append(op)
      mode = merged
      continue
    if run:
      out.append(_fuse(run, mode))
      run, mode = [], (None, None, None)
    out.append(op)
  if run:
    out.append(_fuse(run, mode))
  return out


def compose(*ops):
  """Applies ops in order; consecutive geometric ops warp once.

  Returns an op `op(key, image)`; geometric-only compositions stay
  GeometricOps (so they can be fused further).
  """
  if len(ops) == 1 and isinstance(ops[0], (list, tuple)):
    ops = tuple(ops[0])
  for op in ops:
    if not callable(op):
      raise TypeError(f'augment.compose: ops must be callables op(key, '
                      f'image), got {op!r}')
  stages = fuse_geometric(ops)
  if len(stages) == 1:
    return stages[0]
  if not stages:
    return PixelOp('identity', lambda key, image: image)

  def fn(key, image):
    keys = jax.random.split(key, len(stages))
    for k, op in zip(keys, stages):
      image = op(k, image)
    return image

  return PixelOp('compose', fn)


def random_apply(op, p: float = 0.5):
  """Applies `op` with probability `p` per image.

  A shape-preserving geometric op stays geometric (its matrix becomes the
  identity with probability 1 - p), so it still fuses. Other ops compute
  both outcomes and select (the cost of a per-image choice under vmap).
  """
  _checks.check_in('random_apply', 'p', p, 0.0, 1.0)
  if isinstance(op, GeometricOp):

    def matrix_fn(key, shape):
      k1, k2 = jax.random.split(key)
      m, out = op.matrix_fn(k1, shape)
      if tuple(out) != tuple(shape):
        raise ValueError(f'augment.random_apply: {op.name} changes the '
                         f'image size {tuple(shape)} -> {tuple(out)}, so it '
                         f'cannot be applied with p={p} < 1')
      return jnp.where(jax.random.bernoulli(k2, p), m, jnp.eye(3)), out

    return dataclasses.replace(op, matrix_fn=matrix_fn)

  def fn(key, image):
    k1, k2 = jax.random.split(key)
    return jnp.where(jax.random.bernoulli(k2, p), op(k1, image), image)

  return PixelOp(f'random_apply({getattr(op, "name", "op")})', fn)


def one_of(ops, weights=None):
  """Applies one op chosen per image (uniformly or by `weights`). Every op
  must keep the image shape. Under vmap all ops run and one is selected."""
  ops = list(ops)
  if not ops:
    raise ValueError('augment.one_of: needs at least one op, got []')
  if weights is None:
    logits = jnp.zeros(len(ops))
  else:
    w = np.asarray(weights, np.float64)
    if w.shape != (len(ops),) or np.any(w < 0) or w.sum() <= 0:
      raise ValueError(f'augment.one_of: weights must be {len(ops)} '
                       f'non-negative numbers, not all 0, got {weights!r}')
    logits = jnp.log(jnp.asarray(w / w.sum(), jnp.float32))

  def fn(key, image):
    k1, k2 = jax.random.split(key)
    i = jax.random.categorical(k1, logits)
    return jax.lax.switch(i, [lambda im, o=o: o(k2, im) for o in ops], image)

  return PixelOp('one_of', fn)


# --------------------------------------------------------------------------
# RandAugment and TrivialAugmentWide (torchvision's op sets and magnitudes).

_GEOMETRIC = ('shear_x', 'shear_y', 'translate_x', 'translate_y', 'rotate')
_PIXEL = ('identity', 'brightness', 'color', 'contrast', 'sharpness',
          'posterize', 'solarize', 'autocontrast', 'equalize')
AUTO_OPS = _PIXEL[:1] + _GEOMETRIC + _PIXEL[1:]


def _magnitudes(bins: int, width: int, wide: bool):
  """Per-op magnitude tables [bins] (torchvision's _augmentation_space)."""
  lin = lambda hi: np.linspace(0.0, hi, bins)
  shear = lin(0.99 if wide else 0.3)
  translate = lin(32.0 if wide else 150.0 / 331.0 * width)
  rotate = lin(135.0 if wide else 30.0)
  enhance = lin(0.99 if wide else 0.9)
  post = 8 - np.round(np.arange(bins) / ((bins - 1) / (6 if wide else 4)))
  return dict(shear_x=shear, shear_y=shear, translate_x=translate,
              translate_y=translate, rotate=rotate, brightness=enhance,
              color=enhance, contrast=enhance, sharpness=enhance,
              posterize=post, solarize=np.linspace(1.0, 0.0, bins))


def _layer(key, image, op_index, bin_index, table):
  """One RandAugment layer: op AUTO_OPS[op_index] at magnitude bin."""
  h, w, _ = image.shape
  k_sign, k_pix = jax.random.split(key)
  sign = jnp.where(jax.random.bernoulli(k_sign), 1.0, -1.0)
  mag = {k: jnp.asarray(v, jnp.float32)[bin_index] for k, v in table.items()}
  signed = lambda k: sign * mag[k]
  deg = lambda t: jnp.rad2deg(jnp.arctan(t))
  eye = jnp.eye(3, dtype=jnp.float32)
  mats = [
      geo.affine_matrix((h, w), shear=(deg(signed('shear_x')), 0.0)),
      geo.affine_matrix((h, w), shear=(0.0, deg(signed('shear_y')))),
      geo.affine_matrix((h, w), translate=(0.0, signed('translate_x'))),
      geo.affine_matrix((h, w), translate=(signed('translate_y'), 0.0)),
      geo.affine_matrix((h, w), rotate=signed('rotate')),
  ]
  gi = op_index - 1  # geometric ops are AUTO_OPS[1:6]
  is_geo = (gi >= 0) & (gi < len(mats))
  m = jax.lax.switch(jnp.clip(gi, 0, len(mats) - 1),
                     [lambda mm=mm: mm for mm in mats])
  m = jnp.where(is_geo, m, eye)
  warped = geo.warp_affine(image, m, None, 'nearest', 'constant', 0.0)
  image = jnp.where(is_geo, warped, image)
  f = lambda k: 1.0 + signed(k)
  pixel = [
      lambda im: im,
      lambda im: color.adjust_brightness(im, f('brightness')),
      lambda im: color.adjust_saturation(im, f('color')),
      lambda im: color.adjust_contrast(im, f('contrast')),
      lambda im: color.adjust_sharpness(im, f('sharpness')),
      lambda im: color.posterize(im, mag['posterize']),
      lambda im: color.solarize(im, mag['solarize']),
      color.autocontrast,
      color.equalize,
  ]
  pi = jnp.where(is_geo, 0, jnp.where(op_index == 0, 0,
                                      op_index - len(mats)))
  del k_pix
  return jax.lax.switch(pi, pixel, image)


def rand_augment(num_ops: int = 2, magnitude: int = 9,
                 num_magnitude_bins: int = 31):
  """RandAugment (Cubuk et al. 2020) with torchvision's 14 ops and
  magnitudes: `num_ops` layers, each a uniformly chosen op at bin
  `magnitude`, sign random. Geometric ops use nearest resampling and fill 0;
  shear is about the image centre. Needs RGB images."""
  op = 'rand_augment'
  if not isinstance(num_ops, int) or num_ops < 0:
    raise ValueError(f'augment.{op}: num_ops must be an int >= 0, got '
                     f'{num_ops!r}')
  if not isinstance(num_magnitude_bins, int) or num_magnitude_bins < 2:
    raise ValueError(f'augment.{op}: num_magnitude_bins must be an int >= 2,'
                     f' got {num_magnitude_bins!r}')
  if not isinstance(magnitude, int) or not (
      0 <= magnitude < num_magnitude_bins):
    raise ValueError(f'augment.{op}: magnitude must be an int in [0, '
                     f'{num_magnitude_bins - 1}], got {magnitude!r}')

  def fn(key, image):
    table = _magnitudes(num_magnitude_bins, image.shape[1], wide=False)
    for k in jax.random.split(key, num_ops):
      k1, k2 = jax.random.split(k)
      i = jax.random.randint(k1, (), 0, len(AUTO_OPS))
      image = _layer(k2, image, i, magnitude, table)
    return image

  return PixelOp(op, fn, (3,))


def trivial_augment_wide(num_magnitude_bins: int = 31):
  """TrivialAugmentWide (Mueller & Hutter 2021): one uniformly chosen op at
  a uniformly chosen magnitude bin, torchvision's wide magnitudes."""
  op = 'trivial_augment_wide'
  if not isinstance(num_magnitude_bins, int) or num_magnitude_bins < 2:
    raise ValueError(f'augment.{op}: num_magnitude_bins must be an int >= 2,'
                     f' got {num_magnitude_bins!r}')

  def fn(key, image):
    table = _magnitudes(num_magnitude_bins, image.shape[1], wide=True)
    k1, k2, k3 = jax.random.split(key, 3)
    i = jax.random.randint(k1, (), 0, len(AUTO_OPS))
    b = jax.random.randint(k2, (), 0, num_magnitude_bins)
    return _layer(k3, image, i, b, table)

  return PixelOp(op, fn, (3,))
