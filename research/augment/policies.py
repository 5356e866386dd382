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

`sampling='batch_slices'` trades that independence for speed on a batch
(`augment.build`): a random permutation splits the batch into one equal
slice per op and each op runs on its slice only (see `batch_slices`).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from research.augment import _checks
from research.augment import registry
from research.augment import color
from research.augment import geometric as geo
from research.augment.color_ops import PixelOp
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


def _slots(key, n: int, num_ops: int):
  """Slot of each image [n]: a uniform draw of n of the num_ops * q slots
  without replacement (q = ceil(n / num_ops)); slot s belongs to op s // q."""
  q = -(-n // num_ops)
  return jax.random.permutation(key, num_ops * q)[:n], q


def batch_slice_ops(key, n: int, num_ops: int):
  """Which op each image gets under batch-slice sampling: int32 [n].

  Each op owns q = ceil(n / num_ops) slots; the n images take n of the
  num_ops * q slots uniformly at random without replacement (the rest are
  padding, computed and dropped). So every image gets exactly one op, each
  op with probability 1 / num_ops, and op k gets between q - (num_ops * q -
  n) and q images per batch: exactly n / num_ops when num_ops divides n.
  This is the assignment that `batch_slices(key, ...)` uses.
  """
  slots, q = _slots(key, n, num_ops)
  return (slots // q).astype(jnp.int32)


def batch_slices(key, images, ops):
  """Applies one of `ops` to each image, assigned by `batch_slice_ops`.

  Each op runs (vmapped) on its own slice of q = ceil(N / len(ops)) images
  only, instead of every op on every image as a per-image choice under vmap
  does: with 14 ops that is ~14x less work (plus < len(ops) padding
  images). The cost: how many images get each op in a batch is nearly
  fixed, so op choices within a batch are not independent.

  Args:
    key: PRNG key.
    images: float32 [N, H, W, C] in [0, 1].
    ops: per-image ops `op(key, image) -> image` keeping the image shape.

  Returns:
    float32 [N, H, W, C].
  """
  n, k = images.shape[0], len(ops)
  slots, q = _slots(key, n, k)
  # Image in each slot (padding slots repeat image 0; their output is
  # dropped).
  source = jnp.zeros(k * q, jnp.int32).at[slots].set(jnp.arange(n))
  x = images[source]
  keys = jax.random.split(jax.random.fold_in(key, 1), k * q)
  outs = [jax.vmap(op)(keys[i * q:(i + 1) * q], x[i * q:(i + 1) * q])
          for i, op in enumerate(ops)]
  return jnp.concatenate(outs)[slots]


def _check_sampling(op, sampling):
  if sampling not in SAMPLINGS:
    raise ValueError(f'augment.{op}: sampling must be one of '
                     f'{list(SAMPLINGS)}, got {sampling!r}')


SAMPLINGS = ('per_image', 'batch_slices')


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
  del k_pix
  if isinstance(op_index, int):  # static (batch slices): build one op only
    if 0 <= gi < len(mats):
      return geo.warp_affine(image, mats[gi], None, 'nearest', 'constant',
                             0.0)
    return pixel[0 if op_index == 0 else op_index - len(mats)](image)
  is_geo = (gi >= 0) & (gi < len(mats))
  m = jax.lax.switch(jnp.clip(gi, 0, len(mats) - 1),
                     [lambda mm=mm: mm for mm in mats])
  m = jnp.where(is_geo, m, eye)
  warped = geo.warp_affine(image, m, None, 'nearest', 'constant', 0.0)
  image = jnp.where(is_geo, warped, image)
  pi = jnp.where(is_geo, 0, jnp.where(op_index == 0, 0,
                                      op_index - len(mats)))
  return jax.lax.switch(pi, pixel, image)


def _auto_augment_op(op, layer_fn, num_layers, sampling):
  """PixelOp running `num_layers` layers; layer_fn(key, image, i) applies
  AUTO_OPS[i] (i traced for per-image sampling, static for slices)."""
  _check_sampling(op, sampling)

  def fn(key, image):
    for k in jax.random.split(key, num_layers):
      k1, k2 = jax.random.split(k)
      i = jax.random.randint(k1, (), 0, len(AUTO_OPS))
      image = layer_fn(k2, image, i)
    return image

  def batch_fn(keys, images):
    # One key for the batch, derived from the per-image keys.
    key = jax.random.fold_in(keys[0], images.shape[0])
    per_op = [lambda k, im, i=i: layer_fn(k, im, i)
              for i in range(len(AUTO_OPS))]
    for k in jax.random.split(key, num_layers):
      images = batch_slices(k, images, per_op)
    return images

  return PixelOp(op, fn, (3,),
                 batch_fn if sampling == 'batch_slices' else None)


@registry.register('rand_augment')
def rand_augment(num_ops: int = 2, magnitude: int = 9,
                 num_magnitude_bins: int = 31, sampling: str = 'per_image'):
  """RandAugment (Cubuk et al. 2020) with torchvision's 14 ops and
  magnitudes: `num_ops` layers, each a uniformly chosen op at bin
  `magnitude`, sign random. Geometric ops use nearest resampling and fill 0;
  shear is about the image centre. Needs RGB images.

  sampling: 'per_image' (each image draws its op independently; under vmap
  every op runs on every image) or 'batch_slices' (on a batch via
  `augment.build`, each layer splits the batch into equal random slices,
  one per op; see `batch_slices` and the README). A single image
  always samples per image.
  """
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

  def layer(key, image, i):
    table = _magnitudes(num_magnitude_bins, image.shape[1], wide=False)
    return _layer(key, image, i, magnitude, table)

  return _auto_augment_op(op, layer, num_ops, sampling)


@registry.register('trivial_augment_wide')
def trivial_augment_wide(num_magnitude_bins: int = 31,
                         sampling: str = 'per_image'):
  """TrivialAugmentWide (Mueller & Hutter 2021): one uniformly chosen op at
  a uniformly chosen magnitude bin, torchvision's wide magnitudes.
  `sampling`: see `rand_augment`."""
  op = 'trivial_augment_wide'
  if not isinstance(num_magnitude_bins, int) or num_magnitude_bins < 2:
    raise ValueError(f'augment.{op}: num_magnitude_bins must be an int >= 2,'
                     f' got {num_magnitude_bins!r}')

  def layer(key, image, i):
    table = _magnitudes(num_magnitude_bins, image.shape[1], wide=True)
    k1, k2 = jax.random.split(key)
    b = jax.random.randint(k1, (), 0, num_magnitude_bins)
    return _layer(k2, image, i, b, table)

  return _auto_augment_op(op, layer, 1, sampling)
