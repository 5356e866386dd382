"""Geometric ops against scipy.ndimage / PIL / numpy on real photos."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi
from PIL import Image

from research import augment as A
from research.augment import geometric as geo
from tests.augment import _photos

# A generic affine map (no exact .5 ties for nearest rounding).
M = np.array([[0.93, 0.31, -2.7], [-0.27, 1.07, 1.9], [0, 0, 1]], np.float64)


def _scipy_warp(img, m, out_shape, order, mode, cval=0.0):
  return np.stack([ndi.affine_transform(img[..., c].astype(np.float64), m,
                                        output_shape=out_shape, order=order,
                                        mode=mode, cval=cval)
                   for c in range(img.shape[-1])], -1)


@pytest.mark.parametrize('interp,order', [('bilinear', 1), ('nearest', 0)])
@pytest.mark.parametrize('border,mode', [('constant', 'grid-constant'),
                                         ('edge', 'nearest'),
                                         ('reflect', 'mirror')])
def test_warp_affine_matches_scipy(interp, order, border, mode):
  img = _photos.to_float(_photos.chelsea())  # [75, 113, 3]
  out = np.asarray(A.warp_affine(img, M.astype(np.float32), (80, 100),
                                 interp, border, 0.25))
  ref = _scipy_warp(img, M, (80, 100), order, mode, 0.25)
  tol = 2e-5 if interp == 'bilinear' else 0.0
  if interp == 'nearest':
    # float32 vs float64 coordinates may round a handful of near-ties apart.
    assert np.mean(np.abs(out - ref) > 1e-6) < 1e-3
  else:
    np.testing.assert_allclose(out, ref, atol=tol)


def test_warp_affine_batch_uint8_matches_per_image_float():
  u8 = np.stack([_photos.chelsea(), _photos.chelsea()[::-1]])
  mats = np.stack([M, np.linalg.inv(M)]).astype(np.float32)
  out = np.asarray(A.warp_affine_batch(jnp.asarray(u8), mats, (60, 70)))
  for i in range(2):
    ref = _scipy_warp(_photos.to_float(u8[i]), mats[i].astype(np.float64),
                      (60, 70), 1, 'grid-constant')
    np.testing.assert_allclose(out[i], ref, atol=2e-5)


@pytest.mark.parametrize('k', [1, 2, 3])
def test_rotate_multiples_of_90_are_exact(k):
  img = _photos.to_float(_photos.astronaut())  # [128, 128, 3]
  out = np.asarray(A.rotate(img, 90.0 * k))
  np.testing.assert_array_equal(out, np.rot90(img, k))


def test_rotate_matches_scipy_and_pil_inside():
  img = _photos.to_float(_photos.astronaut())
  h, w, _ = img.shape
  out = np.asarray(A.rotate(img, 17.0))
  ref = np.stack([ndi.rotate(img[..., c], 17.0, reshape=False, order=1,
                             mode='grid-constant') for c in range(3)], -1)
  yy, xx = np.mgrid[:h, :w]
  inside = (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2 < (0.45 * h) ** 2
  np.testing.assert_allclose(out[inside], ref[inside], atol=1e-4)
  # PIL: same direction (counter-clockwise), uint8 rounding.
  pil = np.asarray(Image.fromarray(_photos.astronaut()).rotate(
      17.0, resample=Image.BILINEAR), np.float32) / 255
  assert np.abs(out[inside] - pil[inside]).mean() < 1.5 / 255
  assert np.abs(np.asarray(A.rotate(img, -17.0))[inside]
                - pil[inside]).mean() > 10 / 255


def test_flips_and_random_flip():
  img = _photos.to_float(_photos.chelsea())
  np.testing.assert_array_equal(A.flip_left_right(img), img[:, ::-1])
  np.testing.assert_array_equal(A.flip_up_down(img), img[::-1])
  outs = [np.asarray(A.random_flip_left_right(jax.random.key(i), img))
          for i in range(16)]
  flipped = [np.array_equal(o, img[:, ::-1]) for o in outs]
  same = [np.array_equal(o, img) for o in outs]
  assert all(f or s for f, s in zip(flipped, same))
  assert 0 < sum(flipped) < 16


def _pil_resize(img, size):
  """Per-channel float PIL bilinear resize (size = (H, W))."""
  return np.stack([np.asarray(Image.fromarray(img[..., c], 'F').resize(
      (size[1], size[0]), Image.BILINEAR)) for c in range(img.shape[-1])], -1)


def test_resize_upsampling_matches_pil():
  img = _photos.to_float(_photos.chelsea(step=8))  # [38, 57, 3]
  out = np.asarray(A.resize(img, (61, 90)))
  ref = _pil_resize(img, (61, 90))
  np.testing.assert_allclose(out[1:-1, 1:-1], ref[1:-1, 1:-1], atol=1e-4)


def test_random_resized_crop_box_semantics():
  h, w = 75, 113
  draw = jax.jit(jax.vmap(lambda k: jnp.stack(geo.random_resized_crop_params(
      k, (h, w), (0.08, 1.0), (3 / 4, 4 / 3)))))
  boxes = np.asarray(draw(jax.random.split(jax.random.key(0), 200)))
  top, left, bh, bw = boxes.T
  assert np.all(boxes == np.round(boxes))
  assert np.all((top >= 0) & (left >= 0) & (top + bh <= h) & (left + bw <= w))
  area = bh * bw / (h * w)
  # torchvision rounds the sides, so allow the rounding slack.
  slack = (bh + bw + 1) / (h * w)
  assert np.all((area >= 0.08 - slack) & (area <= 1.0 + slack))
  ratio = bw / bh
  assert np.all((ratio > 3 / 4 * 0.8) & (ratio < 4 / 3 * 1.25))
  assert len(np.unique(boxes, axis=0)) > 150  # random per key


def test_random_resized_crop_fallback_is_torchvision_centre_crop():
  # Ratios far from the image's make every attempt fail for a full-area
  # crop, so torchvision falls back to a centre crop with clamped ratio.
  box = np.asarray(geo.random_resized_crop_params(
      jax.random.key(0), (60, 60), (1.0, 1.0), (4.0, 5.0)))
  np.testing.assert_array_equal(box, [(60 - 15) // 2, 0, 15, 60])


def test_random_resized_crop_pixels_match_pil_crop_resize():
  img = _photos.to_float(_photos.chelsea())
  key = jax.random.key(3)
  out = np.asarray(A.random_resized_crop(key, img, (96, 96), (0.05, 0.2)))
  t, l, bh, bw = (int(v) for v in geo.random_resized_crop_params(
      key, img.shape[:2], (0.05, 0.2), (3 / 4, 4 / 3)))
  ref = _pil_resize(np.ascontiguousarray(img[t:t + bh, l:l + bw]), (96, 96))
  # Near the box edge we read the neighbouring pixels of the full image,
  # PIL only the cropped ones; compare where both read inside the box.
  m = int(np.ceil(0.5 * 96 / min(bh, bw))) + 1
  np.testing.assert_allclose(out[m:-m, m:-m], ref[m:-m, m:-m], atol=1e-4)


def test_pad_crop_is_a_window_of_the_padded_image():
  img = _photos.to_float(_photos.astronaut(step=16))  # [32, 32, 3]
  padded = np.pad(img, ((4, 4), (4, 4), (0, 0)))
  crop = jax.jit(lambda k: A.random_pad_crop(k, img, 4))
  for i in range(4):
    out = np.asarray(crop(jax.random.key(i)))
    hits = [(dy, dx) for dy in range(9) for dx in range(9)
            if np.array_equal(out, padded[dy:dy + 32, dx:dx + 32])]
    assert hits, 'output is not a 32x32 window of the zero-padded image'


def test_affine_keys_shape_dtype_range():
  img = _photos.to_float(_photos.astronaut(step=8))
  f = jax.jit(lambda k: A.random_affine(k, img, rotate=30, scale=(0.8, 1.2),
                                        translate=0.1, shear=10))
  a, b, c = f(jax.random.key(0)), f(jax.random.key(0)), f(jax.random.key(1))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  assert a.shape == img.shape and a.dtype == jnp.float32
  assert float(a.min()) >= 0 and float(a.max()) <= 1


def test_geometric_errors():
  img = np.zeros((8, 8, 3), np.float32)
  with pytest.raises(ValueError, match=r'augment.affine: rotate must be in '
                     r'\[0.0, 180.0\], got 270'):
    A.random_affine(jax.random.key(0), img, rotate=270)
  with pytest.raises(ValueError, match='interpolation must be one of'):
    A.warp_affine(img, np.eye(3), interpolation='cubic')
  with pytest.raises(ValueError, match='border must be one of'):
    A.rotate(img, 10.0, border='wrap')
  with pytest.raises(ValueError, match=r'rank 3 \[H, W, C\], got shape '
                     r'\(2, 8, 8, 3\); map over the batch with jax.vmap'):
    A.rotate(np.zeros((2, 8, 8, 3), np.float32), 10.0)
  with pytest.raises(TypeError, match='must be float32 .* got dtype uint8'):
    A.random_rotate(jax.random.key(0), np.zeros((8, 8, 3), np.uint8))
  with pytest.raises(ValueError, match='random_resized_crop: scale'):
    A.random_resized_crop(jax.random.key(0), img, scale=(0.0, 1.0))
