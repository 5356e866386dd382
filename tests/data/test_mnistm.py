"""mnistm5k: the MNIST-M blend against numpy references on real photographs."""
import numpy as np
import pytest

from research import data
from research.data import builders


def test_blend_is_abs_difference_with_a_window_of_a_real_photo():
  photo = builders.photo("astronaut")[::8, ::8]  # a 64x64 real photograph
  digits = data.load("mnist5k", "test")["image"][:5]
  windows = builders.mnistm_windows(5, [photo.shape], seed=3)
  out = builders.mnistm_blend(digits, [photo], windows)
  assert out.shape == (5, 28, 28, 3) and out.dtype == np.uint8
  for im, d in zip(out, digits[..., 0].astype(np.int16)):
    # Background pixels (digit 0) show the photo itself: find the window by brute force.
    bg = d == 0
    hits = [(y, x) for y in range(64 - 27) for x in range(64 - 27)
            if np.array_equal(photo[y:y + 28, x:x + 28][bg], im[bg])]
    assert hits
    y, x = hits[0]
    want = np.abs(photo[y:y + 28, x:x + 28].astype(np.int16) - d[:, :, None])
    np.testing.assert_array_equal(im, want.astype(np.uint8))


@pytest.fixture(scope="module")
def splits():
  return {s: (data.load("mnist5k", s), data.load("mnistm5k", s)) for s in ("train", "test")}


@pytest.mark.parametrize("split,n", [("train", 4000), ("test", 1000)])
def test_mnistm5k_is_mnist5k_blended_with_its_splits_photos(splits, split, n):
  mnist, mnistm = splits[split]
  assert mnistm["image"].shape == (n, 28, 28, 3) and mnistm["image"].dtype == np.uint8
  np.testing.assert_array_equal(mnistm["label"], mnist["label"])  # same order and labels
  # The windows of the builder's (sorted) order, matched to the loaded order by digit.
  digits, _, idx = builders._mnist5k_arrays()  # pylint: disable=protected-access
  order = {d.tobytes(): i for i, d in enumerate(digits[idx[split]])}
  windows = builders.mnistm_split(digits[idx[split]], split)[1]
  photos = [builders.photo(name) for name in builders.MNISTM_PHOTOS[split]]
  for j in range(0, n, 97):
    k, y, x = windows[order[mnist["image"][j].tobytes()]]
    patch = photos[k][y:y + 28, x:x + 28].astype(np.int16)
    want = np.abs(patch - mnist["image"][j].astype(np.int16))  # [28, 28, 3] - [28, 28, 1]
    np.testing.assert_array_equal(mnistm["image"][j], want.astype(np.uint8))


def test_train_and_test_patches_come_from_disjoint_photographs(splits):
  train, test = builders.MNISTM_PHOTOS["train"], builders.MNISTM_PHOTOS["test"]
  assert not set(train) & set(test)
  train_photos = [builders.photo(n) for n in train]
  test_photos = [builders.photo(n) for n in test]
  # No test photograph is a train photograph under another name.
  for a in test_photos:
    assert not any(a.shape == b.shape and np.array_equal(a, b) for b in train_photos)
  # No test patch (taken where the digit is 0, so the image shows the photo) occurs
  # anywhere in a train photograph: search every window, filtered on a 3-pixel probe.
  mnist, mnistm = splits["test"]
  views = [np.lib.stride_tricks.sliding_window_view(p, (28, 28), axis=(0, 1))
           for p in train_photos]  # [H-27, W-27, 3, 28, 28]
  checked = 0
  for j in range(0, 1000, 50):
    bg = mnist["image"][j][..., 0] == 0
    im = mnistm["image"][j]
    ys, xs = np.nonzero(bg)
    probe = [(ys[i], xs[i]) for i in (0, len(ys) // 2, -1)]
    if np.ptp(im[bg]) == 0:  # a flat patch says nothing about where it came from
      continue
    checked += 1
    for v in views:
      cand = np.ones(v.shape[:2], bool)
      for y, x in probe:
        cand &= (v[:, :, :, y, x] == im[y, x]).all(axis=-1)
      for cy, cx in zip(*np.nonzero(cand)):
        assert not np.array_equal(v[cy, cx].transpose(1, 2, 0)[bg], im[bg])
  assert checked >= 15
