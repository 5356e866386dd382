"""Builds an MNIST-M-style target domain from mnist5k as .npz files (offline, seeded).

  python scripts/make_mnistm_npz.py --out runs/data/mnistm5k
  python scripts/train.py --config configs/digits_adapt.py:mnistm --workdir runs/m \
      --config.target.name=runs/data/mnistm5k/{split}.npz

The recipe of Ganin et al. (2016): each mnist5k digit d (uint8 [28, 28]) is
blended with a random 28x28 patch p of a colour photograph, output = |p - d|
per channel. The original draws patches from BSDS500; here they come from
photographs that ship with scikit-image and scikit-learn, the train split's
from one set of photographs and the test split's from a disjoint set, so no
patch is shared between the splits:
  train: skimage astronaut, coffee, chelsea, immunohistochemistry,
         hubble_deep_field; sklearn china.jpg
  test:  skimage rocket, retina; sklearn flower.jpg
Same 4,000 / 1,000 split and labels as mnist5k. Each file holds
{'image': uint8 [N, 28, 28, 3], 'label': int32 [N]}.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

TRAIN_PHOTOS = ("astronaut", "coffee", "chelsea", "immunohistochemistry",
                "hubble_deep_field", "china.jpg")
TEST_PHOTOS = ("rocket", "retina", "flower.jpg")


def photo(name: str) -> np.ndarray:
  """uint8 [H, W, 3] colour photograph from scikit-image or scikit-learn (offline)."""
  if name.endswith(".jpg"):
    from sklearn.datasets import load_sample_image  # pylint: disable=g-import-not-at-top
    return load_sample_image(name)
  import skimage.data  # pylint: disable=g-import-not-at-top
  return getattr(skimage.data, name)()[..., :3]


def blend(digits: np.ndarray, photos: list[np.ndarray], seed: int) -> np.ndarray:
  """|patch - digit| per channel: uint8 [N, 28, 28(, 1)] digits -> uint8 [N, 28, 28, 3].

  Each image takes a uniformly random photo and a uniformly random 28x28 window of it.
  """
  rng = np.random.default_rng(seed)
  d = digits.reshape(len(digits), 28, 28, 1).astype(np.int16)
  out = np.empty((len(digits), 28, 28, 3), np.uint8)
  for i in range(len(digits)):
    im = photos[rng.integers(len(photos))]
    y = rng.integers(im.shape[0] - 28 + 1)
    x = rng.integers(im.shape[1] - 28 + 1)
    patch = im[y:y + 28, x:x + 28].astype(np.int16)
    out[i] = np.abs(patch - d[i]).astype(np.uint8)
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True, help="directory for train.npz and test.npz")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  import sys  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from research import data  # pylint: disable=g-import-not-at-top
  os.makedirs(args.out, exist_ok=True)
  for k, (split, names) in enumerate((("train", TRAIN_PHOTOS), ("test", TEST_PHOTOS))):
    source = data.load("mnist5k", split)
    image = blend(source["image"], [photo(n) for n in names], args.seed * 2 + k)
    path = os.path.join(args.out, f"{split}.npz")
    np.savez(path, image=image, label=source["label"].astype(np.int32))
    print(f"{path}: {image.shape}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
