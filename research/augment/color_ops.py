"""Random colour/pixel ops: `PixelOp` (the per-image op type) and the
registered `*_op(...)` factories, which check magnitudes once and return ops
`op(key, image)` drawing per-image parameters. The deterministic functions
they call are in `research/augment/color.py`."""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from research.augment import _checks
from research.augment import registry
from research.augment.color import (adjust_brightness, adjust_color_batch, adjust_contrast,
                                    adjust_gamma, adjust_hue, adjust_saturation,
                                    adjust_sharpness, autocontrast, equalize, gaussian_blur,
                                    invert, posterize, solarize, to_grayscale)


@dataclasses.dataclass(frozen=True)
class PixelOp:
  """A random per-image op `op(key, image) -> image` with a name.

  `batch_fn(keys [N], images [N, H, W, C]) -> images`, when given, is the
  form `augment.build` uses on a batch: the values of
  `jax.vmap(op)(keys, images)` computed in a form XLA compiles better
  (except auto-augment policies with sampling='batch_slices', which assign
  their ops per batch instead of per image).
  """
  name: str
  fn: Callable
  channels: tuple | None = None
  batch_fn: Callable | None = None
  # Optional split of `batch_fn` into a per-pixel head and the rest:
  # batch_fn(keys, x) == batch_tail(keys, batch_head(keys, x)). `build` runs
  # the head inside a preceding warp, before the warp's output is stored.
  batch_head: Callable | None = None
  batch_tail: Callable | None = None

  def __call__(self, key, image):
    _checks.check_image(self.name, image, self.channels)
    return self.fn(key, image)


def _uniform(key, lo_hi):
  return jax.random.uniform(key, (), jnp.float32, lo_hi[0], lo_hi[1])


def _factor_op(name, fn, strength, channels, batch_arg=None):
  """Op drawing a factor ~ U[range] per image; `batch_arg` names its
  keyword in `adjust_color_batch` (if it has one)."""
  rng = _checks.as_range(name, 'strength', strength, 1.0, 0.0, 1e6)
  batch_fn = None
  if batch_arg is not None:

    def batch_fn(keys, images):
      factors = jax.vmap(lambda k: _uniform(k, rng))(keys)
      return adjust_color_batch(images, **{batch_arg: factors})

  def apply(key, img):
    return fn(img, apply.draw(key))

  apply.draw = lambda key: _uniform(key, rng)
  return PixelOp(name, apply, channels, batch_fn)


@registry.register('identity')
def identity_op():
  """Returns the image unchanged (RandAugment's no-op, and a placeholder in specs)."""
  return PixelOp('identity', lambda key, image: image)


@registry.register('brightness')
def brightness_op(strength=0.4):
  """Brightness factor ~ U[max(0, 1 - s), 1 + s] (or a range)."""
  return _factor_op('brightness', adjust_brightness, strength, None,
                    'brightness')


@registry.register('contrast')
def contrast_op(strength=0.4):
  """Contrast factor ~ U[max(0, 1 - s), 1 + s] (or a range)."""
  return _factor_op('contrast', adjust_contrast, strength, (1, 3),
                    'contrast')


@registry.register('saturation')
def saturation_op(strength=0.4):
  """Saturation factor ~ U[max(0, 1 - s), 1 + s] (or a range)."""
  return _factor_op('saturation', adjust_saturation, strength, (3,),
                    'saturation')


@registry.register('sharpness')
def sharpness_op(strength=0.5):
  """Sharpness factor ~ U[max(0, 1 - s), 1 + s] (or a range)."""
  return _factor_op('sharpness', adjust_sharpness, strength, None)


@registry.register('hue')
def hue_op(strength=0.1):
  """Hue shift ~ U[-h, h] turns, h in [0, 0.5] (or a range)."""
  _checks.check_in('hue', 'strength', strength, -0.5, 0.5)
  if not isinstance(strength, (tuple, list)):
    _checks.check_in('hue', 'strength', strength, 0.0, 0.5)
  rng = _checks.as_range('hue', 'strength', strength, 0.0, -0.5, 0.5)
  return PixelOp('hue', lambda key, img: adjust_hue(img, _uniform(key, rng)),
                 (3,))


@registry.register('color_jitter')
def color_jitter_op(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.0):
  """torchvision ColorJitter strengths, applied in the FIXED order
  brightness, contrast, saturation, hue (torchvision permutes the order per
  call; a fixed order keeps one compiled branch). Zero strengths are
  skipped; every non-zero one is applied. On a batch (`augment.build`) the
  first three run as one pass (`adjust_color_batch`), same result."""
  ops = []
  for name, value, make in (('brightness', brightness, brightness_op),
                            ('contrast', contrast, contrast_op),
                            ('saturation', saturation, saturation_op),
                            ('hue', hue, hue_op)):
    if isinstance(value, (tuple, list)) or value != 0:
      ops.append(make(value))

  def fn(key, img):
    keys = jax.random.split(key, max(len(ops), 1))
    for k, op in zip(keys, ops):
      img = op(k, img)
    return img

  def op_keys(keys):
    return jax.vmap(lambda k: jax.random.split(k, max(len(ops), 1)))(keys)

  def draw(op, keys):
    return jax.vmap(op.fn.draw)(keys)

  def batch_fn(keys, images, skip_brightness=False):
    # The same per-image keys and draws as `fn` under vmap.
    ks = op_keys(keys)
    factors = {}
    for j, op in enumerate(ops):
      if op.name == 'hue':
        images = jax.vmap(op)(ks[:, j], images)
      else:
        if not (skip_brightness and op.name == 'brightness'):
          factors[op.name] = draw(op, ks[:, j])
        if (j + 1 == len(ops) or ops[j + 1].name == 'hue') and factors:
          images = adjust_color_batch(images, **factors)
    return images

  head = tail = None
  if ops and ops[0].name == 'brightness':
    # Brightness is per pixel: `build` applies it inside a preceding warp.
    def head(keys, images):
      b = draw(ops[0], op_keys(keys)[:, 0])
      return adjust_color_batch(images, brightness=b)

    def tail(keys, images):
      return batch_fn(keys, images, skip_brightness=True)

  channels = (3,) if any(o.channels == (3,) for o in ops) else None
  return PixelOp('color_jitter', fn, channels, batch_fn, head, tail)


@registry.register('grayscale')
def grayscale_op():
  """Converts to grayscale (use `p=` / random_apply for RandomGrayscale)."""
  return PixelOp('grayscale', lambda key, img: to_grayscale(img), (1, 3))


@registry.register('gamma')
def gamma_op(gamma=(0.7, 1.5)):
  """gamma ~ U[a, b] with 0 < a <= b, or a fixed number."""
  rng = _checks.as_range('gamma', 'gamma', gamma, None, 1e-3, 1e3)
  return PixelOp('gamma', lambda key, img: adjust_gamma(img,
                                                        _uniform(key, rng)))


@registry.register('solarize')
def solarize_op(threshold=0.5):
  """Solarize at a threshold in [0, 1] (fixed or a range)."""
  rng = _checks.as_range('solarize', 'threshold', threshold, None, 0.0, 1.0)
  return PixelOp('solarize', lambda key, img: solarize(img,
                                                       _uniform(key, rng)))


@registry.register('posterize')
def posterize_op(bits=4):
  """Posterize to `bits` in [1, 8] (fixed int or an int range)."""
  rng = _checks.as_range('posterize', 'bits', bits, None, 1, 8)

  def fn(key, img):
    b = jax.random.randint(key, (), int(rng[0]), int(rng[1]) + 1)
    return posterize(img, b)

  return PixelOp('posterize', fn)


@registry.register('equalize')
def equalize_op():
  return PixelOp('equalize', lambda key, img: equalize(img))


@registry.register('autocontrast')
def autocontrast_op():
  return PixelOp('autocontrast', lambda key, img: autocontrast(img))


@registry.register('invert')
def invert_op():
  return PixelOp('invert', lambda key, img: invert(img))


@registry.register('blur')
def blur_op(sigma=(0.1, 2.0), radius: int | None = None):
  """Gaussian blur, sigma ~ U[a, b] pixels; radius defaults to ceil(3 b)."""
  rng = _checks.as_range('blur', 'sigma', sigma, None, 1e-3, 1e3)
  r = int(-(-3 * rng[1] // 1)) if radius is None else int(radius)
  return PixelOp('blur', lambda key, img: gaussian_blur(
      img, _uniform(key, rng), r))


@registry.register('noise')
def noise_op(std=0.05):
  """Additive Gaussian noise, std in [0, 1] fixed or ~ U[a, b], clipped."""
  rng = _checks.as_range('noise', 'std', std, None, 0.0, 1.0)

  def fn(key, img):
    k1, k2 = jax.random.split(key)
    s = _uniform(k1, rng)
    return jnp.clip(img + s * jax.random.normal(k2, img.shape, img.dtype),
                    0.0, 1.0)

  return PixelOp('noise', fn)
