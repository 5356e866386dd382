"""3x3 affine matrices mapping homogeneous OUTPUT pixel coordinates `(y, x, 1)` to
INPUT coordinates (the convention of `scipy.ndimage.affine_transform`).

Pixel centres sit at integers, so an image spans `[-0.5, H - 0.5]`. Every
geometric op is such a matrix, so a run of them fuses into one product and one
resample (`policies.compose`).
"""
from __future__ import annotations


import jax.numpy as jnp

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

