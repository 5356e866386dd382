"""Class names from the dataset reach the reports and the sample grids."""
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from research import data
from research.metrics import classification
from research.tasks import sample_grid


def _folder(root, classes=("cat", "dog", "zebra"), n=6):
  rng = np.random.default_rng(0)
  for c in classes:
    os.makedirs(root / c)
    for i in range(n):
      Image.fromarray(rng.integers(0, 255, (12, 12, 3), np.uint8)).save(root / c / f"{i}.png")
  return ml_collections.ConfigDict(dict(name=f"folder:{root}", image_size=8,
                                        data_dir=str(root.parent / "tfds")))


def test_folder_dataset_class_names_are_its_folder_names(tmp_path):
  cfg = _folder(tmp_path / "pets")
  assert data.class_names(cfg) == ["cat", "dog", "zebra"]
  assert data.class_names(cfg, num_classes=4) == ["cat", "dog", "zebra", "3"]


def test_builtin_digit_datasets_are_named_by_their_digits():
  cfg = ml_collections.ConfigDict(dict(name="uci_digits"))
  assert data.class_names(cfg) == [str(d) for d in range(10)]


def test_per_class_metrics_against_a_hand_count():
  # true class in rows: 'a' 3 right 1 wrong (as 'b'); 'b' 2 right; 'c' absent, predicted once.
  confusion = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
  confusion[1, 2] = 1  # one 'b' predicted as 'c'
  out = classification.per_class(confusion, ["a", "b", "c"])
  assert out["a"] == {"precision": 1.0, "recall": 0.75, "f1": 2 * 0.75 / 1.75, "support": 4}
  assert out["b"]["precision"] == pytest.approx(2 / 3) and out["b"]["recall"] == pytest.approx(2 / 3)
  assert out["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
  with pytest.raises(ValueError, match="2 names for 3 classes"):
    classification.per_class(confusion, ["a", "b"])


def test_grid_row_labels_add_a_text_margin_and_keep_the_images(tmp_path):
  images = np.random.default_rng(0).random((20, 8, 8, 3)).astype(np.float32)
  plain = np.asarray(Image.open(sample_grid.save_image_grid(images, str(tmp_path / "a.png"), 10)))
  labelled = np.asarray(Image.open(sample_grid.save_image_grid(
      images, str(tmp_path / "b.png"), 10, row_labels=["cat", "zebra"])))
  margin = labelled.shape[1] - plain.shape[1]
  assert margin > 0 and labelled.shape[0] == plain.shape[0]
  np.testing.assert_array_equal(labelled[:, margin:], plain)  # the cells are untouched
  row = (8 + 2) * 2
  for r in range(2):  # each row's band of the margin holds text (white pixels)
    assert labelled[2 * 2 + r * row: 2 * 2 + (r + 1) * row, :margin].max() > 128
  with pytest.raises(ValueError, match="3 row labels for 2 rows"):
    sample_grid.save_image_grid(images, str(tmp_path / "c.png"), 10, row_labels=["a", "b", "c"])
