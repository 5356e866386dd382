"""Colour / pixel ops against colorsys, PIL and scipy on real photos."""
import colorsys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi
from PIL import Image, ImageEnhance, ImageOps

from research import augment as A
from tests.augment import _photos

U8 = _photos.chelsea(step=8)  # [38, 57, 3] real photo, uint8
IMG = _photos.to_float(U8)


def _pil(fn, u8=U8):
  return np.asarray(fn(Image.fromarray(u8)), np.float32) / 255


def test_hue_matches_colorsys():
  img = IMG[:16, :16]
  for delta in (0.13, -0.4):
    out = np.asarray(A.adjust_hue(img, delta))
    ref = np.empty_like(img)
    for i in range(16):
      for j in range(16):
        h, s, v = colorsys.rgb_to_hsv(*img[i, j])
        ref[i, j] = colorsys.hsv_to_rgb((h + delta) % 1.0, s, v)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_rgb_hsv_roundtrip_matches_colorsys():
  hsv = np.asarray(A.rgb_to_hsv(IMG[:8, :8]))
  ref = np.array([[colorsys.rgb_to_hsv(*p) for p in row] for row in IMG[:8, :8]])
  np.testing.assert_allclose(hsv, ref, atol=1e-5)
  np.testing.assert_allclose(A.hsv_to_rgb(hsv), IMG[:8, :8], atol=1e-5)


@pytest.mark.parametrize('factor', [0.3, 1.7])
def test_enhance_ops_match_pil(factor):
  # PIL works in uint8 (rounding), so allow ~1.5 levels.
  pairs = [(A.adjust_brightness, ImageEnhance.Brightness),
           (A.adjust_contrast, ImageEnhance.Contrast),
           (A.adjust_saturation, ImageEnhance.Color),
           (A.adjust_sharpness, ImageEnhance.Sharpness)]
  for ours, theirs in pairs:
    out = np.asarray(ours(IMG, factor))
    ref = _pil(lambda im: theirs(im).enhance(factor))
    np.testing.assert_allclose(out, ref, atol=2.5 / 255,
                               err_msg=ours.__name__)


def test_grayscale_matches_pil_convert_L():
  out = np.asarray(A.to_grayscale(IMG))
  ref = np.asarray(Image.fromarray(U8).convert('L'), np.float32) / 255
  np.testing.assert_allclose(out, np.repeat(ref[..., None], 3, -1),
                             atol=0.51 / 255)


@pytest.mark.parametrize('threshold', [0, 77, 128, 255])
def test_solarize_matches_pil(threshold):
  out = np.asarray(A.solarize(IMG, threshold / 255))
  ref = _pil(lambda im: ImageOps.solarize(im, threshold))
  np.testing.assert_allclose(out, ref, atol=1e-6)


@pytest.mark.parametrize('bits', [1, 3, 4, 8])
def test_posterize_matches_pil(bits):
  out = np.asarray(A.posterize(IMG, bits))
  np.testing.assert_allclose(out, _pil(lambda im: ImageOps.posterize(im, bits)),
                             atol=1e-6)


@pytest.mark.parametrize('u8', [U8, _photos.astronaut(step=8),
                                (U8 // 4 + 60).astype(np.uint8)])
def test_equalize_matches_pil_exactly(u8):
  out = np.asarray(A.equalize(_photos.to_float(u8)))
  np.testing.assert_allclose(out, _pil(ImageOps.equalize, u8), atol=1e-6)


def test_autocontrast_matches_pil():
  u8 = (U8 // 2 + 40).astype(np.uint8)  # low contrast
  out = np.asarray(A.autocontrast(_photos.to_float(u8)))
  ref = _pil(ImageOps.autocontrast, u8)
  # PIL truncates to uint8 levels; we keep the exact stretch.
  assert np.all(out - ref >= -1e-6) and np.all(out - ref < 1 / 255 + 1e-6)
  const = np.full((4, 4, 3), 0.3, np.float32)
  np.testing.assert_array_equal(A.autocontrast(const), const)


def test_invert_and_gamma():
  np.testing.assert_allclose(A.invert(IMG), _pil(ImageOps.invert),
                             atol=1e-6)
  # PIL point() with the gamma formula as a reference.
  g = 2.2
  ref = _pil(lambda im: im.point(lambda v: round(255 * (v / 255) ** g)))
  np.testing.assert_allclose(A.adjust_gamma(IMG, g), ref, atol=0.51 / 255)


def test_gaussian_blur_matches_scipy():
  out = np.asarray(A.gaussian_blur(IMG, 1.3, radius=4))
  ref = np.stack([ndi.gaussian_filter(IMG[..., c].astype(np.float64), 1.3,
                                      mode='mirror', radius=4)
                  for c in range(3)], -1)
  np.testing.assert_allclose(out, ref, atol=1e-5)


def test_noise_statistics():
  img = np.full((64, 64, 3), 0.5, np.float32)
  out = np.asarray(A.make_op('noise', std=0.1)(jax.random.key(0), img))
  assert abs(out.std() - 0.1) < 0.005 and abs(out.mean() - 0.5) < 0.005


@pytest.mark.parametrize('name', ['brightness', 'contrast', 'saturation',
                                  'hue', 'color_jitter', 'grayscale',
                                  'gamma', 'solarize', 'posterize',
                                  'equalize', 'autocontrast', 'invert',
                                  'sharpness', 'blur', 'noise'])
def test_random_ops_keys_shape_dtype_range(name):
  op = jax.jit(A.make_op(name))
  a, b = op(jax.random.key(0), IMG), op(jax.random.key(0), IMG)
  np.testing.assert_array_equal(a, b)
  assert a.shape == IMG.shape and a.dtype == jnp.float32
  assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
  if name not in ('grayscale', 'equalize', 'autocontrast', 'invert',
                  'solarize', 'posterize'):  # fixed-magnitude defaults
    outs = [np.asarray(op(jax.random.key(i), IMG)) for i in range(1, 4)]
    assert not all(np.array_equal(outs[0], o) for o in outs[1:]), name


def test_color_errors():
  with pytest.raises(ValueError, match=r'augment.hue: delta must be in '
                     r'\[-0.5, 0.5\], got 0.7'):
    A.adjust_hue(IMG, 0.7)
  with pytest.raises(ValueError, match=r'augment.posterize: bits must be in '
                     r'\[1, 8\], got 9'):
    A.posterize(IMG, 9)
  with pytest.raises(ValueError, match='augment.saturation: image must have '
                     r'\[3\] channels'):
    A.adjust_saturation(IMG[..., :1], 1.2)
  with pytest.raises(TypeError, match='augment.equalize: image must be '
                     'float32 .* got dtype uint8'):
    A.equalize(U8)
  with pytest.raises(ValueError, match=r'augment.brightness: strength must be '
                     r'>= 0, got -0.4'):
    A.make_op('brightness', -0.4)


def test_color_batch_equals_sequential_unfused_ops():
  # Bright and dark photos with strong factors, so every intermediate clip
  # (after brightness, after contrast, after saturation) is active somewhere.
  imgs = np.stack([IMG[:16, :16], np.clip(IMG[:16, 8:24] * 1.6, 0, 1),
                   IMG[8:24, :16] * 0.3])
  b = np.array([1.4, 0.6, 1.3], np.float32)
  c = np.array([1.4, 1.3, 0.6], np.float32)
  s = np.array([1.4, 0.6, 1.4], np.float32)
  batch = jax.jit(A.adjust_color_batch)
  out = np.asarray(batch(imgs, b, c, s))
  seq = jax.jit(lambda x, b, c, s: A.adjust_saturation(
      A.adjust_contrast(A.adjust_brightness(x, b), c), s))
  for i in range(3):
    np.testing.assert_allclose(out[i], seq(imgs[i], b[i], c[i], s[i]),
                               atol=2e-6)
  # PIL's Brightness -> Contrast -> Color chain (uint8 between steps).
  u8 = np.round(imgs * 255).astype(np.uint8)
  ours = np.asarray(batch(u8 / np.float32(255), b, c, s))
  for i in range(3):
    pil = Image.fromarray(u8[i])
    for enh, f in ((ImageEnhance.Brightness, b[i]),
                   (ImageEnhance.Contrast, c[i]),
                   (ImageEnhance.Color, s[i])):
      pil = enh(pil).enhance(float(f))
    np.testing.assert_allclose(ours[i], np.asarray(pil, np.float32) / 255,
                               atol=4.5 / 255)
  # The clips matter: one affine colour map, clipped once, differs.
  luma = lambda x: x @ np.array([0.299, 0.587, 0.114], np.float32)
  x1 = imgs[0] * b[0]
  x2 = luma(x1).mean() + c[0] * (x1 - luma(x1).mean())
  x3 = np.clip(luma(x2)[..., None] + s[0] * (x2 - luma(x2)[..., None]), 0, 1)
  assert np.abs(x3 - out[0]).max() > 5 / 255
  # Skipped steps and a single channel.
  np.testing.assert_allclose(
      A.adjust_color_batch(imgs, None, c, None)[1],
      A.adjust_contrast(imgs[1], c[1]), atol=2e-6)
  np.testing.assert_allclose(
      A.adjust_color_batch(imgs[..., :1], b, c)[0],
      A.adjust_contrast(A.adjust_brightness(imgs[0, ..., :1], b[0]), c[0]),
      atol=2e-6)
