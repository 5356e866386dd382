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
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from research.augment import _checks

INTERPOLATIONS = ('bilinear', 'nearest')
BORDERS = ('constant', 'reflect', 'edge')


def _check_mode(op, interpolation, border):
  if interpolation not in INTERPOLATIONS:
    raise ValueError(f'augment.{op}: interpolation must be one of '
                     f'{list(INTERPOLATIONS)}, got {interpolation!r}')
  if border not in BORDERS:
    raise ValueError(f'augment.{op}: border must be one of {list(BORDERS)}, '
                     f'got {border!r}')


def _mirror(s, n: int):
  """Whole-sample symmetric reflection of coordinates into [0, n - 1].

  `... 2 1 | 0 1 2 ... n-1 | n-2 ...` as `np.pad(mode='reflect')` and
  `scipy.ndimage` mode 'mirror'.
  """
  if n == 1:
    return jnp.zeros_like(s)
  period = 2.0 * (n - 1)
  t = jnp.mod(jnp.abs(s), period)
  return jnp.where(t > n - 1, period - t, t)


def _border_coords(s, n: int, border: str):
  """Maps coordinates along one axis of size `n` for `border`.

  'reflect' mirrors them into [0, n - 1], 'edge' clamps them there, and
  'constant' clamps them to [-1, n] (anything beyond one pixel outside reads
  only `fill`); `_taps` then marks the taps outside the image.
  """
  if border == 'reflect':
    return _mirror(s, n)
  if border == 'edge':
    return jnp.clip(s, 0.0, n - 1.0)
  return jnp.clip(s, -1.0, float(n))


def _taps(s, n: int, border: str):
  """The two bilinear taps along one axis: pixels `b` and `b + 1` (b int32,
  clamped into the image) and their weights `(wb, wb1)`.

  For border 'constant' a coordinate in [-1, 0) or (n - 1, n] has one tap
  outside the image; that tap gets no weight (the fill is added by the
  caller with the missing weight), which replaces padding the image.
  """
  s = _border_coords(s, n, border)
  hi = float(n - 1) if border == 'constant' else float(max(n - 2, 0))
  i0 = jnp.clip(jnp.floor(s), -1.0, hi)
  w1 = s - i0
  w0 = 1.0 - w1
  b = jnp.clip(i0, 0.0, float(max(n - 2, 0)))
  if border != 'constant' and n >= 2:
    return b.astype(jnp.int32), w0, w1
  low, high = i0 < 0.0, i0 > n - 2.0
  zero = jnp.zeros_like(w0)
  wb = jnp.where(low, w1, jnp.where(high, zero, w0))
  wb1 = jnp.where(low, zero, jnp.where(high, w0, w1))
  return b.astype(jnp.int32), wb, wb1


def sample(image, sy, sx, interpolation: str = 'bilinear',
           border: str = 'constant', fill: float = 0.0):
  """Samples `image` at real-valued pixel coordinates.

  Args:
    image: float [H, W, C].
    sy, sx: float [Ho, Wo], input row / column of each output pixel (pixel
      centres at integers).
    interpolation: 'bilinear' or 'nearest'.
    border: 'constant' (outside reads `fill`), 'reflect' (whole-sample
      mirror, as np.pad 'reflect') or 'edge' (nearest edge pixel).
    fill: value read outside the image for border='constant'.

  Returns:
    float [Ho, Wo, C]. Differentiable with respect to `image` and to the
    coordinates (bilinear).
  """
  h, w, c = image.shape
  _check_mode('sample', interpolation, border)
  flat = image.reshape(h * w, c)
  return _resample(flat, h, w, sy, sx, interpolation, border, fill)


def _resample(flat, h: int, w: int, sy, sx, interpolation, border, fill,
              base=None, scale=None):
  """Resamples images stored as rows of whole pixels, without padding.

  Args:
    flat: [P, C] pixels of an [H, W] image (or a batch of them), any dtype.
    h, w: image height and width.
    sy, sx: float [..., Ho, Wo] input coordinates of each output pixel.
    interpolation, border, fill: see `sample` (fill in output units).
    base: optional int [..., 1, 1] offset of each image in `flat`.
    scale: optional factor applied after conversion to float32 (1 / 255 for
      uint8 sources).
  Whole RGB pixels are gathered (one row of `flat` per tap), which is much
  faster on the CPU than a patch gather or element gathers. Taps outside the
  image (border 'constant') are clamped into it and given weight 0, and
  `fill` is added with the missing weight: no padded copy of the input.
  """
  def take(i):
    v = jnp.take(flat, i if base is None else base + i, axis=0, mode='clip')
    v = v.astype(jnp.float32) if v.dtype != jnp.float32 else v
    return v if scale is None else v * scale

  constant = border == 'constant'
  if interpolation == 'nearest':
    py = _border_coords(sy, h, border)
    px = _border_coords(sx, w, border)
    # Rounded in the frame shifted by one pixel, as scipy's reference tests
    # were matched with (float32 near-ties round the same way).
    ry = jnp.floor((py + 1.0) + 0.5) - 1.0
    rx = jnp.floor((px + 1.0) + 0.5) - 1.0
    iy = jnp.clip(ry, 0, h - 1).astype(jnp.int32)
    ix = jnp.clip(rx, 0, w - 1).astype(jnp.int32)
    out = take(iy * w + ix)
    if constant:
      inside = (ry >= 0) & (ry <= h - 1) & (rx >= 0) & (rx <= w - 1)
      out = jnp.where(inside[..., None], out, jnp.asarray(fill, out.dtype))
    return out
  has_fill = constant and not (isinstance(fill, (int, float)) and
                               fill == 0.0)
  y0, wy0, wy1 = _taps(sy, h, border)
  x0, wx0, wx1 = _taps(sx, w, border)
  dy = 1 if h > 1 else 0
  dx = 1 if w > 1 else 0
  i00 = y0 * w + x0
  p00, p01 = take(i00), take(i00 + dx)
  p10, p11 = take(i00 + dy * w), take(i00 + dy * w + dx)
  ex = lambda v: v[..., None]
  top = ex(wx0) * p00 + ex(wx1) * p01
  bottom = ex(wx0) * p10 + ex(wx1) * p11
  out = ex(wy0) * top + ex(wy1) * bottom
  if has_fill:
    out = out + ex(1.0 - (wy0 + wy1) * (wx0 + wx1)) * fill
  return out


def _grid(matrix, out_shape):
  """Input coordinates [..., Ho, Wo] of each output pixel."""
  ho, wo = out_shape
  m = matrix[..., None, None]
  ys = jnp.arange(ho, dtype=jnp.float32)[:, None]
  xs = jnp.arange(wo, dtype=jnp.float32)[None, :]
  sy = m[..., 0, 0, :, :] * ys + m[..., 0, 1, :, :] * xs + m[..., 0, 2, :, :]
  sx = m[..., 1, 0, :, :] * ys + m[..., 1, 1, :, :] * xs + m[..., 1, 2, :, :]
  return sy, sx


def warp_affine_batch(images, matrices, out_shape=None,
                      interpolation: str = 'bilinear',
                      border: str = 'constant', fill: float = 0.0):
  """`warp_affine` on a batch with one matrix per image, in one gather.

  Args:
    images: float32 [N, H, W, C] in [0, 1], or uint8 [N, H, W, C] in
      [0, 255] (converted to float32 / 255 after the gather, which reads 4x
      less memory than converting first).
    matrices: float32 [N, 3, 3] output->input.
    out_shape, interpolation, border, fill: see `warp_affine` (fill is in
      [0, 1] units; rounded to a multiple of 1/255 for uint8 images).

  Returns:
    float32 [N, Ho, Wo, C].
  """
  _check_mode('warp_affine_batch', interpolation, border)
  n, h, w, c = images.shape
  out_shape = (h, w) if out_shape is None else tuple(out_shape)
  is_int = not jnp.issubdtype(images.dtype, jnp.floating)
  scale = 1.0 / 255.0 if is_int else None
  if is_int:
    fill = round(fill * 255) / 255.0
  sy, sx = _grid(jnp.asarray(matrices, jnp.float32), out_shape)
  flat = images.reshape(n * h * w, c)
  base = (jnp.arange(n, dtype=jnp.int32) * (h * w))[:, None, None]
  return _resample(flat, h, w, sy, sx, interpolation, border, fill, base,
                   scale)


def warp_affine(image, matrix, out_shape: Sequence[int] | None = None,
                interpolation: str = 'bilinear', border: str = 'constant',
                fill: float = 0.0):
  """Resamples `image` through an affine map of pixel coordinates.

  Args:
    image: float32 [H, W, C] in [0, 1].
    matrix: float [3, 3] (or [2, 3]) mapping output `(y, x, 1)` to input
      `(y, x, 1)`, as `scipy.ndimage.affine_transform`.
    out_shape: static `(Ho, Wo)`; defaults to `(H, W)`.
    interpolation, border, fill: see `sample`.

  Returns:
    float32 [Ho, Wo, C] in [0, 1] (for `fill` in [0, 1]).
  """
  _checks.check_image('warp_affine', image)
  _check_mode('warp_affine', interpolation, border)
  h, w, _ = image.shape
  ho, wo = (h, w) if out_shape is None else tuple(int(s) for s in out_shape)
  m = jnp.asarray(matrix, jnp.float32)
  if m.shape not in ((3, 3), (2, 3)):
    raise ValueError(f'augment.warp_affine: matrix must have shape (3, 3) or '
                     f'(2, 3), got {m.shape}')
  if m.shape == (2, 3):
    m = jnp.concatenate([m, jnp.array([[0.0, 0.0, 1.0]])])
  sy, sx = _grid(m, (ho, wo))
  return sample(image, sy, sx, interpolation, border, fill)


# --------------------------------------------------------------------------
# Matrices (output -> input coordinates).


def _eye():
  return jnp.eye(3, dtype=jnp.float32)


def _mat(a, b, c, d, e, f):
  """[[a, b, c], [d, e, f], [0, 0, 1]] from scalars (traced or not)."""
  z = jnp.zeros((), jnp.float32)
  o = jnp.ones((), jnp.float32)
  rows = [jnp.stack([jnp.asarray(v, jnp.float32) for v in r])
          for r in ((a, b, c), (d, e, f), (z, z, o))]
  return jnp.stack(rows)


def translation_matrix(ty, tx):
  """Moves content by `(ty, tx)` pixels (down, right)."""
  return _mat(1.0, 0.0, -ty, 0.0, 1.0, -tx)


def flip_lr_matrix(width: int):
  return _mat(1.0, 0.0, 0.0, 0.0, -1.0, width - 1.0)


def flip_ud_matrix(height: int):
  return _mat(-1.0, 0.0, height - 1.0, 0.0, 1.0, 0.0)


def _snap(v):
  """Rounds cos/sin values within 1e-6 of -1, 0, 1 so 90-degree turns are
  exact permutations of pixels."""
  r = jnp.round(v)
  return jnp.where(jnp.abs(v - r) < 1e-6, r, v)


def affine_matrix(shape, rotate=0.0, scale=1.0, translate=(0.0, 0.0),
                  shear=(0.0, 0.0)):
  """Output->input matrix of a rotation/scale/shear about the centre, then a
  translation (torchvision's RandomAffine order).

  Args:
    shape: static `(H, W)` of the image.
    rotate: degrees, counter-clockwise as displayed (PIL / torchvision).
    scale: zoom factor (> 1 enlarges the content).
    translate: `(ty, tx)` pixels, positive moves content down / right.
    shear: `(sx, sy)` degrees; `sx` shears along x (as torchvision).
  Returns:
    float32 [3, 3].
  """
  h, w = shape
  cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
  t = jnp.deg2rad(jnp.asarray(rotate, jnp.float32))
  cos, sin = _snap(jnp.cos(t)), _snap(jnp.sin(t))
  shx = jnp.tan(jnp.deg2rad(jnp.asarray(shear[0], jnp.float32)))
  shy = jnp.tan(jnp.deg2rad(jnp.asarray(shear[1], jnp.float32)))
  inv_s = 1.0 / jnp.asarray(scale, jnp.float32)
  # Forward (input -> output) linear part on (dy, dx): A = R @ Sh @ S, with
  # R = [[cos, -sin], [sin, cos]] on (dy, dx) turning content CCW on screen
  # and Sh = [[1, shy], [shx, 1]] ((dx' = dx + shx * dy).
  a = cos + (-sin) * shx
  b = cos * shy - sin
  c = sin + cos * shx
  d = sin * shy + cos
  det = a * d - b * c
  ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
  ia, ib, ic, id_ = ia * inv_s, ib * inv_s, ic * inv_s, id_ * inv_s
  ty = jnp.asarray(translate[0], jnp.float32)
  tx = jnp.asarray(translate[1], jnp.float32)
  # input = A^-1 (output - centre - t) + centre.
  oy = cy - (ia * (cy + ty) + ib * (cx + tx))
  ox = cx - (ic * (cy + ty) + id_ * (cx + tx))
  return _mat(ia, ib, oy, ic, id_, ox)


def crop_resize_matrix(top, left, height, width, out_shape):
  """Maps an `out_shape` grid onto the box `(top, left, height, width)` with
  half-pixel centres (torchvision / PIL resize, align_corners=False)."""
  ho, wo = out_shape
  sy = jnp.asarray(height, jnp.float32) / ho
  sx = jnp.asarray(width, jnp.float32) / wo
  return _mat(sy, 0.0, 0.5 * sy - 0.5 + top, 0.0, sx, 0.5 * sx - 0.5 + left)


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


def flip_lr_op(p: float = 0.5) -> GeometricOp:
  """Horizontal flip with probability `p`."""
  return _random_flip('flip_lr', 1, p)


def flip_ud_op(p: float = 0.5) -> GeometricOp:
  """Vertical flip with probability `p`."""
  return _random_flip('flip_ud', 0, p)


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


def rotate_op(degrees=15.0, interpolation='bilinear', border='constant',
              fill=0.0) -> GeometricOp:
  """Random rotation by U[-degrees, degrees] (or a range)."""
  g = affine_op(rotate=degrees, interpolation=interpolation, border=border,
                fill=fill)
  return dataclasses.replace(g, name='rotate')


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
