"""Digit framing (research/data/frame.py) against numpy references on real digits."""
import ml_collections
import numpy as np
import pytest

from research import data
from research.data import frame


def _box_by_loops(image, threshold):
  """Reference bounding box: scan rows and columns one by one."""
  h, w = image.shape[:2]
  ink = lambda y, x: max(image[y, x]) > threshold
  rows = [y for y in range(h) if any(ink(y, x) for x in range(w))]
  cols = [x for x in range(w) if any(ink(y, x) for y in range(h))]
  return (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) if rows else None


def _area_by_supersampling(image, size):
  """Reference area resize: repeat every pixel `size` times per axis, then take the
  plain block mean over blocks of H x W (exact area averaging for any ratio)."""
  h, w, c = image.shape
  big = np.repeat(np.repeat(image.astype(np.float64), size, 0), size, 1)
  return big.reshape(size, h, size, w, c).mean(axis=(1, 3))


@pytest.fixture(scope="module")
def digits():
  mnist = data.load("mnist5k", "test")["image"][:40]
  uci = data.load("uci_digits", "test")["image"][:40]
  blank, full = np.zeros((28, 28, 1), np.uint8), np.full((28, 28, 1), 255, np.uint8)
  return {"mnist": mnist, "uci": uci, "blank_full": np.stack([blank, full])}


@pytest.mark.parametrize("threshold", [0, 64, 200])
def test_bounding_box_matches_a_loop_reference_on_real_digits(digits, threshold):
  for name in ("mnist", "uci", "blank_full"):
    for im in digits[name]:
      assert frame.bounding_box(im, threshold) == _box_by_loops(im, threshold), name


def test_bounding_box_of_blank_and_full_images_and_their_crops(digits):
  blank, full = digits["blank_full"]
  assert frame.bounding_box(blank) is None
  assert frame.bounding_box(full) == (0, 28, 0, 28)
  np.testing.assert_array_equal(frame.bbox_crop(blank), blank)  # whole frame kept
  np.testing.assert_array_equal(frame.bbox_crop(full), full)
  out = frame.frame_images(digits["blank_full"], "bbox", size=8)
  np.testing.assert_array_equal(out[0], 0)
  np.testing.assert_array_equal(out[1], 255)


def test_bbox_crop_keeps_all_ink_centred_in_a_square(digits):
  for im in list(digits["mnist"]) + list(digits["uci"]):
    top, bottom, left, right = _box_by_loops(im, 0)
    crop = frame.bbox_crop(im)
    s = max(bottom - top, right - left)
    assert crop.shape == (s, s, 1)
    assert crop.sum() == im.sum()  # every ink pixel kept, only zeros added
    # The tight box sits at the centre (the odd extra pixel after it).
    oy, ox = (s - (bottom - top)) // 2, (s - (right - left)) // 2
    np.testing.assert_array_equal(crop[oy:oy + bottom - top, ox:ox + right - left],
                                  im[top:bottom, left:right])


@pytest.mark.parametrize("shape,size", [((28, 28, 1), 7), ((28, 28, 1), 4), ((8, 8, 3), 4),
                                        ((24, 24, 1), 8)])
def test_area_resize_is_the_block_mean_for_integer_ratios(shape, size):
  image = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
  k = shape[0] // size
  block_mean = image.astype(np.float64).reshape(size, k, size, k, shape[2]).mean(axis=(1, 3))
  np.testing.assert_allclose(frame.area_resize(image, size), block_mean, atol=1e-9)


@pytest.mark.parametrize("shape,size", [((20, 20, 1), 8), ((13, 13, 1), 8), ((5, 5, 1), 8),
                                        ((28, 28, 3), 10)])
def test_area_resize_matches_supersampled_block_mean_for_any_ratio(shape, size):
  image = np.random.default_rng(1).integers(0, 256, shape).astype(np.uint8)
  np.testing.assert_allclose(frame.area_resize(image, size),
                             _area_by_supersampling(image, size), atol=1e-9)
  np.testing.assert_allclose(frame.area_weights(shape[0], size).sum(axis=1), 1.0)


def test_center20_and_bbox_framing_of_mnist_against_the_references(digits):
  mnist = digits["mnist"]
  center = frame.frame_images(mnist, "center20", size=8)
  ref = np.stack([_area_by_supersampling(im[4:24, 4:24], 8) for im in mnist])
  np.testing.assert_array_equal(center, np.round(ref).astype(np.uint8))
  bbox = frame.frame_images(mnist, "bbox", size=8, levels=17)
  levels = np.round(np.arange(17) * 255 / 16).astype(np.uint8)
  assert bbox.shape == (len(mnist), 8, 8, 1) and np.isin(bbox, levels).all()
  # A framed MNIST digit reaches the border of its 8x8 grid, like a UCI digit.
  assert (bbox[:, [0, -1]].max(axis=(1, 2, 3)) > 0).mean() > 0.9


def test_quantize_to_17_levels_leaves_uci_digits_unchanged(digits):
  uci = digits["uci"]  # stored as round(v * 255 / 16), v in 0..16
  np.testing.assert_array_equal(frame.quantize(uci, 17), uci)
  np.testing.assert_array_equal(frame.quantize(np.array([0, 127, 128, 255]), 2), [0, 0, 255, 255])


def test_bad_framing_fields_are_named():
  images = np.zeros((2, 8, 8, 1), np.uint8)
  with pytest.raises(ValueError, match="data.frame must be one of"):
    frame.frame_images(images, "box")
  with pytest.raises(ValueError, match="center20.*at least 20x20"):
    frame.frame_images(images, "center20")
  with pytest.raises(ValueError, match="frame_levels"):
    frame.frame_images(images, "bbox", levels=1)


def test_framing_end_to_end_through_data_loading(digits):
  cfg = ml_collections.ConfigDict(dict(
      name="mnist5k", train_split="train", eval_split="test", data_dir="", image_size=28,
      frame="bbox", frame_size=8, frame_threshold=0, frame_levels=17))
  stored = data.load("mnist5k", "test")
  framed = data.load_split(cfg, "test")
  expected = data.sources.resize_uint8(
      frame.frame_images(stored["image"], "bbox", size=8, levels=17), 28)
  np.testing.assert_array_equal(framed["image"], expected)
  np.testing.assert_array_equal(framed["label"], stored["label"])
  # The training set is framed the same way (train split, few-shot path included).
  cfg.few_shot_k = 5
  train = data.load_train(cfg)
  assert train["image"].shape == (50, 28, 28, 1)
  stored_train = data.load("mnist5k", "train")
  idx = data.train_val_indices(stored_train["label"], 5, 0, 0)[0]
  np.testing.assert_array_equal(
      train["image"], data.sources.resize_uint8(
          frame.frame_images(stored_train["image"][idx], "bbox", size=8, levels=17), 28))
  # Off (frame='' or the fields absent): the stored images, resized as before.
  cfg.frame = ""
  np.testing.assert_array_equal(data.load_split(cfg, "test")["image"],
                                data.load("mnist5k", "test", image_size=28)["image"])
