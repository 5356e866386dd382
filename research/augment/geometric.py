"""Geometric ops: flips, one affine warp, random resized crop, pad-crop, resize.

Every geometric op is an affine map of pixel coordinates, so a run of them
fuses into ONE coordinate map and ONE resample (see `policies.compose`). Each
op therefore comes in two forms:

* `*_matrix(...)`: the 3x3 matrix `M` mapping homogeneous OUTPUT pixel
  coordinates `(y, x, 1)` to INPUT coordinates (the convention of
  `scipy.ndimage.affine_transform`); pixel centres sit at integers, so the
  image spans `[-0.5, H - 0.5]`.
* the op itself, `op(key, image, ...)` (random) or `op(image, ...)`
  (deterministic), which builds the matrix and calls `warp_affine`.

Resampling gathers whole pixels (all channels at once), four rows per output
pixel, which is much faster on the CPU than gathering single elements.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp

from research.augment import _checks
from research.augment import registry
from research.augment.matrices import _eye
from research.augment.matrices import affine_matrix
from research.augment.matrices import crop_resize_matrix
from research.augment.matrices import flip_lr_matrix
from research.augment.matrices import flip_ud_matrix
from research.augment.matrices import translation_matrix
from research.augment.resample import BORDERS
from research.augment.resample import INTERPOLATIONS
from research.augment.resample import _check_mode
from research.augment.resample import sample
from research.augment.resample import warp_affine
from research.augment.resample import warp_affine_batch

# --------------------------------------------------------------------------
# Geometric op objects, fusable by `policies.compose`.


@dataclasses.dataclass(frozen=True)
class GeometricOp:
  """A random geometric op as a matrix generator.

  `matrix_fn(key, (H, W)) -> (M [3, 3], (Ho, Wo))` returns the output->input
  matrix (traced) and the static output size. Calling the op warps once.
  """
  name: str
  matrix_fn: Callable
  interpolation: str = 'bilinear'
  border: str = 'constant'
  fill: float = 0.0
  is_flip: bool = False  # pure flips are done by indexing, not a warp.
  # border None (crops, resizes): reads at most half a pixel past the edge,
  # so it fuses with any border; alone it uses 'edge'.

  def __call__(self, key, image):
    _checks.check_image(self.name, image)
    if self.is_flip:
      return apply_flips(self.matrix_fn(key, image.shape[:2])[0], image)
    m, out = self.matrix_fn(key, image.shape[:2])
    return warp_affine(image, m, out, self.interpolation,
                       self.border or 'edge', self.fill)


def apply_flips(m, image):
  """Applies a flip-only matrix (diagonal entries +-1) by indexing."""
  image = jnp.where(m[0, 0] < 0, image[::-1], image)
  return jnp.where(m[1, 1] < 0, image[:, ::-1], image)


def _random_flip(name, axis, p):
  _checks.check_in(name, 'p', p, 0.0, 1.0)

  def matrix_fn(key, shape):
    m = flip_ud_matrix(shape[0]) if axis == 0 else flip_lr_matrix(shape[1])
    do = jax.random.bernoulli(key, p)
    return jnp.where(do, m, _eye()), tuple(shape)

  return GeometricOp(name, matrix_fn, 'nearest', 'edge', is_flip=True)


@registry.register('flip_lr')
def flip_lr_op(p: float = 0.5) -> GeometricOp:
  """Horizontal flip with probability `p`."""
  return _random_flip('flip_lr', 1, p)


@registry.register('flip_ud')
def flip_ud_op(p: float = 0.5) -> GeometricOp:
  """Vertical flip with probability `p`."""
  return _random_flip('flip_ud', 0, p)


@registry.register('affine')
def affine_op(rotate=0.0, scale=(1.0, 1.0), translate=(0.0, 0.0),
              shear=0.0, interpolation='bilinear', border='constant',
              fill=0.0) -> GeometricOp:
  """Random affine (torchvision RandomAffine semantics).

  Args:
    rotate: degrees `d` in [0, 180] (angle ~ U[-d, d]) or a range `(a, b)`.
    scale: zoom range `(a, b)`, 0 < a <= b, or a number `s` in [0, 1) for
      `[1 - s, 1 + s]`.
    translate: max fractions `(fy, fx)` of the height / width in [0, 1] (or
      one number for both); shift ~ U[-f * size, f * size].
    shear: degrees `s` in [0, 90) for an x-shear ~ U[-s, s], or a range.
    interpolation, border, fill: see `sample`.
  """
  op = 'affine'
  _check_mode(op, interpolation, border)
  _checks.check_in(op, 'fill', fill, 0.0, 1.0)
  rot = _checks.as_range(op, 'rotate', rotate, 0.0, -180.0, 180.0)
  if isinstance(rotate, (int, float)):
    _checks.check_in(op, 'rotate', rotate, 0.0, 180.0)
  sc = _checks.as_range(op, 'scale', scale, 1.0, 1e-3, 1e3)
  if sc[0] <= 0:
    raise ValueError(f'augment.{op}: scale must be > 0, got {scale!r}')
  if isinstance(translate, (int, float)):
    translate = (translate, translate)
  _checks.check_in(op, 'translate', tuple(translate), 0.0, 1.0)
  sh = _checks.as_range(op, 'shear', shear, 0.0, -89.0, 89.0)

  def matrix_fn(key, shape):
    k = jax.random.split(key, 4)
    u = lambda kk, r: jax.random.uniform(kk, (), jnp.float32, r[0], r[1])
    t = jax.random.uniform(k[2], (2,), jnp.float32, -1.0, 1.0)
    ty = t[0] * translate[0] * shape[0]
    tx = t[1] * translate[1] * shape[1]
    m = affine_matrix(shape, u(k[0], rot), u(k[1], sc), (ty, tx),
                      (u(k[3], sh), 0.0))
    return m, tuple(shape)

  return GeometricOp(op, matrix_fn, interpolation, border, fill)


@registry.register('rotate')
def rotate_op(degrees=15.0, interpolation='bilinear', border='constant',
              fill=0.0) -> GeometricOp:
  """Random rotation by U[-degrees, degrees] (or a range)."""
  g = affine_op(rotate=degrees, interpolation=interpolation, border=border,
                fill=fill)
  return dataclasses.replace(g, name='rotate')


@registry.register('translate')
def translate_op(fraction=0.125, interpolation='bilinear', border='constant',
                 fill=0.0) -> GeometricOp:
  """Random translation by up to `fraction` of the size on each axis."""
  g = affine_op(translate=fraction, interpolation=interpolation,
                border=border, fill=fill)
  return dataclasses.replace(g, name='translate')


def random_resized_crop_params(key, shape, scale=(0.08, 1.0),
                               ratio=(3 / 4, 4 / 3), attempts: int = 10):
  """Draws a crop box exactly as torchvision's RandomResizedCrop.get_params.

  Ten candidate boxes are drawn at once; the first that fits is used, else the
  centre crop with the aspect ratio clamped to `ratio`.

  Returns:
    (top, left, height, width) as float32 scalars (integers in value).
  """
  h, w = shape
  area = float(h * w)
  k_area, k_ratio, k_top, k_left = jax.random.split(key, 4)
  target = area * jax.random.uniform(k_area, (attempts,), jnp.float32,
                                     scale[0], scale[1])
  log_r = jax.random.uniform(k_ratio, (attempts,), jnp.float32,
                             math.log(ratio[0]), math.log(ratio[1]))
  aspect = jnp.exp(log_r)
  cw = jnp.round(jnp.sqrt(target * aspect))
  ch = jnp.round(jnp.sqrt(target / aspect))
  ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
  first = jnp.argmax(ok)
  any_ok = jnp.any(ok)
  # Fallback: centre crop, ratio clamped.
  in_ratio = w / h
  if in_ratio < ratio[0]:
    fw, fh = float(w), float(round(w / ratio[0]))
  elif in_ratio > ratio[1]:
    fh, fw = float(h), float(round(h * ratio[1]))
  else:
    fw, fh = float(w), float(h)
  bh = jnp.where(any_ok, ch[first], fh)
  bw = jnp.where(any_ok, cw[first], fw)
  top = jnp.floor(jax.random.uniform(k_top) * (h - bh + 1))
  left = jnp.floor(jax.random.uniform(k_left) * (w - bw + 1))
  top = jnp.where(any_ok, top, float((h - fh) // 2))
  left = jnp.where(any_ok, left, float((w - fw) // 2))
  return top, left, bh, bw


@registry.register('random_resized_crop')
def random_resized_crop_op(size=None, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                           interpolation='bilinear') -> GeometricOp:
  """Random resized crop (torchvision semantics; no antialiasing).

  Args:
    size: output `(Ho, Wo)` or one int; None keeps the input size.
    scale: range of the crop's area as a fraction of the image, in (0, 1].
    ratio: range of the crop's aspect ratio w / h, > 0.
    interpolation: 'bilinear' or 'nearest'.
  """
  op = 'random_resized_crop'
  _check_mode(op, interpolation, 'edge')
  sc = _checks.as_range(op, 'scale', tuple(scale), None, 0.0, 1.0)
  if sc[0] <= 0:
    raise ValueError(f'augment.{op}: scale must be in (0, 1], got {scale!r}')
  rt = _checks.as_range(op, 'ratio', tuple(ratio), None, 1e-6, 1e6)
  size = _size(op, size)

  def matrix_fn(key, shape):
    out = tuple(shape) if size is None else size
    box = random_resized_crop_params(key, shape, sc, rt)
    return crop_resize_matrix(*box, out), out

  return GeometricOp(op, matrix_fn, interpolation, None)


def _size(op, size):
  if size is None:
    return None
  if isinstance(size, int):
    size = (size, size)
  size = tuple(size)
  if len(size) != 2 or any((not isinstance(s, int)) or s < 1 for s in size):
    raise ValueError(f'augment.{op}: size must be a positive int or a pair '
                     f'(height, width), got {size!r}')
  return size


@registry.register('pad_crop')
def pad_crop_op(padding: int = 4, border='constant', fill=0.0) -> GeometricOp:
  """Pads by `padding` pixels on each side, then crops the input size at a
  random integer offset (the CIFAR 'random crop with padding')."""
  op = 'pad_crop'
  _check_mode(op, 'nearest', border)
  if not isinstance(padding, int) or padding < 0:
    raise ValueError(f'augment.{op}: padding must be an int >= 0, got '
                     f'{padding!r}')

  def matrix_fn(key, shape):
    off = jax.random.randint(key, (2,), 0, 2 * padding + 1) - padding
    off = off.astype(jnp.float32)
    return translation_matrix(-off[0], -off[1]), tuple(shape)

  return GeometricOp(op, matrix_fn, 'nearest', border, fill)


@registry.register('resize')
def resize_op(size, interpolation='bilinear') -> GeometricOp:
  """Resizes to `size` (no antialiasing; half-pixel centres)."""
  size = _size('resize', size)
  if size is None:
    raise ValueError('augment.resize: size is required, got None')

  def matrix_fn(key, shape):
    del key
    return crop_resize_matrix(0.0, 0.0, shape[0], shape[1], size), size

  return GeometricOp('resize', matrix_fn, interpolation, None)


# --------------------------------------------------------------------------
# Public per-image functions.


def flip_left_right(image):
  """Mirrors columns. image: float [H, W, C]."""
  return _checks.check_image('flip_left_right', image)[:, ::-1]


def flip_up_down(image):
  """Mirrors rows. image: float [H, W, C]."""
  return _checks.check_image('flip_up_down', image)[::-1]


def random_flip_left_right(key, image, p: float = 0.5):
  """Horizontal flip with probability `p`. image: float32 [H, W, C]."""
  return flip_lr_op(p)(key, image)


def random_flip_up_down(key, image, p: float = 0.5):
  """Vertical flip with probability `p`. image: float32 [H, W, C]."""
  return flip_ud_op(p)(key, image)


def rotate(image, degrees, interpolation='bilinear', border='constant',
           fill=0.0):
  """Rotates counter-clockwise (as displayed) about the centre.

  image: float32 [H, W, C] in [0, 1]; degrees: scalar (may be traced).
  Multiples of 90 degrees are exact pixel permutations.
  """
  _checks.check_image('rotate', image)
  m = affine_matrix(image.shape[:2], rotate=degrees)
  return warp_affine(image, m, None, interpolation, border, fill)


def random_affine(key, image, rotate=0.0, scale=(1.0, 1.0),
                  translate=(0.0, 0.0), shear=0.0, interpolation='bilinear',
                  border='constant', fill=0.0):
  """Random affine warp; see `affine_op`. image: float32 [H, W, C]."""
  return affine_op(rotate, scale, translate, shear, interpolation, border,
                   fill)(key, image)


def random_rotate(key, image, degrees=15.0, interpolation='bilinear',
                  border='constant', fill=0.0):
  """Rotation by U[-degrees, degrees]. image: float32 [H, W, C]."""
  return rotate_op(degrees, interpolation, border, fill)(key, image)


def random_resized_crop(key, image, size=None, scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3), interpolation='bilinear'):
  """torchvision RandomResizedCrop. image: float32 [H, W, C] -> [*size, C]."""
  return random_resized_crop_op(size, scale, ratio, interpolation)(key, image)


def random_pad_crop(key, image, padding=4, border='constant', fill=0.0):
  """Random crop with padding. image: float32 [H, W, C] -> same shape."""
  return pad_crop_op(padding, border, fill)(key, image)


def resize(image, size, interpolation='bilinear'):
  """Resizes image: float32 [H, W, C] -> [*size, C] (no antialiasing)."""
  return resize_op(size, interpolation)(None, image)
