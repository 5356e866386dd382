"""Resampling images at arbitrary coordinates: the engine under every geometric op.

`warp_affine(image, M, ...)` samples `image` at `M @ (y, x, 1)` for every output
pixel (bilinear or nearest, constant / reflect / edge borders). Resampling
gathers whole pixels (all channels at once), four rows per output pixel, which
is much faster on the CPU than gathering single elements. Matrices follow the
convention of research/augment/matrices.py.
"""
from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp

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

