"""Folder datasets ('folder:/path', research/data/folder.py) on real images exported to disk."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from research import config_lib, data, trainer
from research.data import folder

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _export(root, arrays, split=None, ext="png", names=None):
  for i, (image, label) in enumerate(zip(arrays["image"], arrays["label"])):
    cls = names[label] if names else str(label)
    d = os.path.join(root, *( [split] if split else []), cls)
    os.makedirs(d, exist_ok=True)
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
        os.path.join(d, f"{i:05d}.{ext}"))


DIGIT_NAMES = [f"digit_{d}" for d in range(10)]  # sorted like the labels


@pytest.fixture(scope="module")
def mnist_folder(tmp_path_factory):
  """mnist5k exported as PNG files, root/train/<digit>/ and root/test/<digit>/."""
  root = str(tmp_path_factory.mktemp("mnist_png"))
  for split in ("train", "test"):
    _export(root, data.load("mnist5k", split), split, names=DIGIT_NAMES)
  return root


def _sorted_pairs(arrays):
  flat = arrays["image"].reshape(len(arrays["image"]), -1)
  order = np.lexsort(np.concatenate([flat, arrays["label"][:, None]], 1).T[::-1])
  return flat[order], arrays["label"][order]


def test_mnist_png_folder_holds_exactly_the_builtin_dataset(mnist_folder, tmp_path):
  for split in ("train", "test"):
    ours = data.load(f"folder:{mnist_folder}", split, str(tmp_path), image_size=28,
                     folder_channels=1)
    ref = data.load("mnist5k", split)
    assert ours["image"].shape == ref["image"].shape and ours["image"].dtype == np.uint8
    for a, b in zip(_sorted_pairs(ours), _sorted_pairs(ref)):
      np.testing.assert_array_equal(a, b)
  assert folder.class_names(f"folder:{mnist_folder}", str(tmp_path), 28, 1) == DIGIT_NAMES


def test_faces_jpeg_folder_with_a_corrupt_image_and_a_text_file(tmp_path):
  """skimage's lfw_subset (100 faces, 100 non-faces) as JPEG class folders, split here 80/20;
  a truncated JPEG is skipped and reported, a text file ignored."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  faces = np.round(skimage.data.lfw_subset() * 255).astype(np.uint8)[..., None]
  root = tmp_path / "faces"
  _export(str(root), {"image": faces, "label": np.repeat([0, 1], 100)}, ext="jpg",
          names=["face", "not_face"])
  good = (root / "face" / "00000.jpg").read_bytes()
  (root / "face" / "broken.jpg").write_bytes(good[:len(good) // 3])
  (root / "not_face" / "README.txt").write_text("not an image")
  name, cache = f"folder:{root}", str(tmp_path / "tfds")
  train = data.load(name, "train", cache, image_size=32)
  test = data.load(name, "test", cache, image_size=32)
  assert train["image"].shape == (160, 32, 32, 3) and test["image"].shape == (40, 32, 32, 3)
  np.testing.assert_array_equal(np.bincount(test["label"]), [20, 20])
  out = folder.prepare(name, cache, 32)
  report = json.load(open(os.path.join(out, "report.json")))
  assert report["num_skipped"] == 1 and report["skipped"][0]["path"].endswith("broken.jpg")
  assert report["num_ignored"] == 1 and report["ignored"][0].endswith("README.txt")
  assert json.load(open(os.path.join(out, "class_names.json"))) == ["face", "not_face"]
  # Reused while unchanged; rebuilt when a file changes.
  assert folder.prepare(name, cache, 32) == out
  os.remove(root / "face" / "broken.jpg")
  assert folder.prepare(name, cache, 32) != out


def test_decode_crop_and_pad_keep_the_aspect_ratio(tmp_path):
  image = np.zeros((20, 40, 3), np.uint8)
  image[:, :20] = 255  # left half white
  path = str(tmp_path / "wide.png")
  Image.fromarray(image).save(path)
  crop = folder.decode(path, 10, 3, "crop")   # 20x40 -> 10x20, centre 10x10: half white
  pad = folder.decode(path, 10, 3, "pad")     # 20x40 -> 5x10, centred in black rows
  assert crop.shape == pad.shape == (10, 10, 3)
  assert crop[:, :4].min() == 255 and crop[:, 6:].max() == 0
  assert pad[:2].max() == 0 and pad[-2:].max() == 0 and pad[4, :4].min() == 255


def test_folder_errors_name_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match="no directory"):
    data.load(f"folder:{tmp_path}/missing", "train", str(tmp_path), image_size=8)
  (tmp_path / "root" / "cat").mkdir(parents=True)
  (tmp_path / "root" / "cat" / "notes.txt").write_text("x")
  with pytest.raises(ValueError, match="class 'cat' has no readable image"):
    data.load(f"folder:{tmp_path}/root", "train", str(tmp_path / "c"), image_size=8)
  with pytest.raises(ValueError, match="image_size=0: a folder dataset needs a size > 0"):
    data.load(f"folder:{tmp_path}/root", "train", str(tmp_path / "c"))


@pytest.mark.slow  # two quick trainings through the trainer (~2 min): -m slow
def test_quick_classify_config_on_the_png_folder_matches_the_builtin_dataset(mnist_folder,
                                                                             tmp_path):
  """One override turns a config to the user's folder (the completion sweep's --set uses the
  same field); the exported mnist5k trains to the same accuracy as the built-in dataset, and
  the report names the classes by their folders."""
  base = config_lib.apply_overrides(
      config_lib.load(os.path.join(REPO, "configs", "mnist5k_classify.py:quick")),
      {"progress": False})
  folder_cfg = config_lib.apply_overrides(base, {
      "data.name": f"folder:{mnist_folder}", "data.image_size": 28,
      "data.folder_channels": 1, "data.data_dir": str(tmp_path / "tfds")})
  builtin = trainer.train_and_evaluate(base, str(tmp_path / "builtin"))
  mine = trainer.train_and_evaluate(folder_cfg, str(tmp_path / "folder"))
  assert abs(mine["accuracy"] - builtin["accuracy"]) <= 0.005, (mine["accuracy"],
                                                                builtin["accuracy"])
  assert list(mine["per_class"]) == DIGIT_NAMES
  assert list(builtin["per_class"]) == [str(d) for d in range(10)]
  with open(tmp_path / "folder" / "results.json") as f:
    assert list(json.load(f)["per_class"]) == DIGIT_NAMES


def test_concurrent_runs_build_a_folder_dataset_once(tmp_path):
  """A sweep starts several runs at once on the same new folder: each gets the dataset,
  built once under a lock (without it, two builders race to rename the same directory)."""
  import concurrent.futures  # pylint: disable=g-import-not-at-top
  root = tmp_path / "pets"
  rng = np.random.default_rng(0)
  for c in ("cat", "dog"):
    os.makedirs(root / c)
    for i in range(10):
      Image.fromarray(rng.integers(0, 255, (9, 9, 3), np.uint8)).save(root / c / f"{i}.png")
  data_dir = str(tmp_path / "tfds")
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    outs = list(pool.map(lambda _: folder.prepare(f"folder:{root}", data_dir, 8), range(4)))
  assert len(set(outs)) == 1
  for split in ("train", "test"):
    arrays = data.load(f"folder:{root}", split, data_dir, image_size=8)
    assert arrays["image"].shape[1:] == (8, 8, 3)
  # A build that died before writing its report is redone, not tripped over.
  os.remove(os.path.join(outs[0], "report.json"))
  assert folder.prepare(f"folder:{root}", data_dir, 8) == outs[0]
  assert os.path.exists(os.path.join(outs[0], "report.json"))
