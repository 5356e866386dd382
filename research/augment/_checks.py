"""Argument checks shared by the augmentation ops.

Checks run in Python while tracing, so they cost nothing per call. Shapes and
dtypes are always static; magnitudes are checked when they are Python numbers
(random magnitudes drawn inside an op are traced and cannot be checked).
"""
from __future__ import annotations

import numbers
from typing import Sequence

import jax.numpy as jnp
import numpy as np


def check_image(op: str, image, channels: Sequence[int] | None = None):
  """Checks one float image `[H, W, C]`; returns it as a jax array.

  Args:
    op: the op's name, used in error messages.
    image: the image to check; must be a floating array of rank 3.
    channels: allowed channel counts, or None for any.
  """
  shape = jnp.shape(image)
  if len(shape) != 3:
    hint = ('; map over the batch with jax.vmap (or use augment.build)'
            if len(shape) == 4 else '')
    raise ValueError(f'augment.{op}: image must have rank 3 [H, W, C], got '
                     f'shape {tuple(shape)}{hint}')
  dtype = jnp.result_type(image)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f'augment.{op}: image must be float32 with values in '
                    f'[0, 1], got dtype {dtype}; convert with '
                    f'augment.to_float(image)')
  if channels is not None and shape[-1] not in channels:
    raise ValueError(f'augment.{op}: image must have {list(channels)} '
                     f'channels, got shape {tuple(shape)}')
  return jnp.asarray(image)


def check_batch(op: str, images):
  """Checks a float batch `[N, H, W, C]`; returns it unchanged."""
  shape = jnp.shape(images)
  if len(shape) != 4:
    raise ValueError(f'augment.{op}: images must have rank 4 [N, H, W, C], '
                     f'got shape {tuple(shape)}')
  dtype = jnp.result_type(images)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f'augment.{op}: images must be float32 with values in '
                    f'[0, 1], got dtype {dtype}; convert with '
                    f'augment.to_float(images)')
  return images


def is_concrete(x) -> bool:
  """True for Python/numpy numbers and concrete arrays (not tracers)."""
  if isinstance(x, (numbers.Number, np.ndarray, np.generic)):
    return True
  try:
    np.asarray(x)
    return True
  except Exception:  # A tracer cannot be converted.
    return False


def check_in(op: str, name: str, value, lo: float, hi: float,
             lo_open: bool = False, hi_open: bool = False):
  """Checks a concrete scalar (or every entry of a tuple) lies in [lo, hi]."""
  if not is_concrete(value):
    return value
  values = np.atleast_1d(np.asarray(value, dtype=np.float64))
  bad_lo = values <= lo if lo_open else values < lo
  bad_hi = values >= hi if hi_open else values > hi
  if values.size == 0 or np.any(bad_lo | bad_hi) or not np.all(
      np.isfinite(values)):
    left = '(' if lo_open else '['
    right = ')' if hi_open else ']'
    shown = value if not isinstance(value, np.ndarray) else value.tolist()
    raise ValueError(f'augment.{op}: {name} must be in {left}{lo}, {hi}{right},'
                     f' got {shown}')
  return value


def as_range(op: str, name: str, value, center: float | None,
             lo: float, hi: float) -> tuple[float, float]:
  """Turns a magnitude into a sampling range `(low, high)`.

  A number `m` means `[center - m, center + m]` clipped to `[lo, hi]` (or
  `[m, m]` when `center` is None); a pair `(a, b)` means `[a, b]` and must
  satisfy `lo <= a <= b <= hi`.
  """
  if isinstance(value, (tuple, list)):
    if len(value) != 2:
      raise ValueError(f'augment.{op}: {name} must be a number or a pair '
                       f'(low, high), got {value!r}')
    a, b = (float(v) for v in value)
    check_in(op, name, (a, b), lo, hi)
    if a > b:
      raise ValueError(f'augment.{op}: {name} must be (low, high) with '
                       f'low <= high, got {value!r}')
    return a, b
  if not isinstance(value, numbers.Real) or isinstance(value, bool):
    raise TypeError(f'augment.{op}: {name} must be a number or a pair '
                    f'(low, high), got {value!r}')
  value = float(value)
  if center is None:
    check_in(op, name, value, lo, hi)
    return value, value
  if value < 0 or not np.isfinite(value):
    raise ValueError(f'augment.{op}: {name} must be >= 0, got {value}')
  return max(lo, center - value), min(hi, center + value)
