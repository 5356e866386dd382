"""Feature extraction over devices and the on-disk feature cache."""
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.transfer import features


def _feature_fn(variables, images):
  x = images.astype(jnp.float32).reshape(images.shape[0], -1) / 255.0
  return jnp.tanh(x @ variables["w"])


@pytest.fixture
def setup(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (37, 6, 6, 1), dtype=np.uint8)  # 37: a padded last batch
  variables = {"w": rng.normal(size=(36, 5)).astype(np.float32)}
  key = features.FeatureKey(weights=features.weights_hash(variables), model="toy",
                            input_size=6, normalize="unit", dataset="rand", split="train")
  return images, variables, key, features.FeatureCache(str(tmp_path))


@pytest.mark.parametrize("mode", ["pmap", "shard_map"])
def test_extract_matches_numpy_on_all_devices(setup, mode):
  images, variables, _, _ = setup
  assert jax.local_device_count() == 8
  got = features.extract(_feature_fn, variables, images, batch_size=16, mode=mode,
                         progress=False)
  ref = np.tanh(images.reshape(37, -1).astype(np.float64) / 255.0 @ variables["w"])
  np.testing.assert_allclose(got, ref, atol=1e-5)


def test_cache_hit_and_miss_on_every_key_field(setup):
  images, variables, key, cache = setup
  labels = np.arange(37) % 3
  calls = []

  def extract():
    calls.append(1)
    return features.extract(_feature_fn, variables, images, 16, progress=False), labels

  f1, l1, hit1 = cache.get_or_extract(key, extract)
  f2, l2, hit2 = cache.get_or_extract(key, extract)
  assert (hit1, hit2, len(calls)) == (False, True, 1)
  np.testing.assert_array_equal(f1, f2)
  np.testing.assert_array_equal(l1, l2)
  changes = dict(weights="other", model="toy2", input_size=7, normalize="imagenet",
                 dataset="rand2", split="test", subset=features.subset_name([1, 2]))
  assert set(changes) == {f.name for f in dataclasses.fields(key)}
  for field, value in changes.items():
    other = dataclasses.replace(key, **{field: value})
    assert cache.load(other) is None, field
    _, _, hit = cache.get_or_extract(other, extract)
    assert not hit, field
  assert len(calls) == 1 + len(changes)


def test_weights_hash_and_subset_name_change_with_content():
  a = {"params": {"w": np.zeros((2, 2), np.float32)}}
  b = {"params": {"w": np.array([[0, 0], [0, 1e-7]], np.float32)}}
  assert features.weights_hash(a) != features.weights_hash(b)
  assert features.weights_hash(a) == features.weights_hash({"params": {"w": np.zeros((2, 2))
                                                                       .astype(np.float32)}})
  assert features.subset_name([1, 2, 3]) != features.subset_name([1, 2, 4])
  assert features.subset_name([1, 2, 3]) != features.subset_name([3, 2, 1])


def _rewrite(path, **changes):
  with np.load(path) as f:
    arrays = {k: f[k] for k in f.files}
  meta = json.loads(str(arrays["meta"]))
  for k, v in changes.items():
    if k in ("features", "labels"):
      arrays[k] = v
    else:
      meta[k] = v
  arrays["meta"] = np.array(json.dumps(meta))
  np.savez(path, **arrays)


@pytest.mark.parametrize("damage", ["key", "version", "features", "truncate", "shape"])
def test_stale_or_corrupt_file_is_refused_and_replaced(setup, damage):
  images, variables, key, cache = setup
  feats = features.extract(_feature_fn, variables, images, 16, progress=False)
  labels = np.zeros(37, np.int64)
  path = cache.save(key, feats, labels)
  if damage == "key":  # a file whose stored key is another one (e.g. renamed)
    _rewrite(path, key={**key.as_dict(), "weights": "old"})
  elif damage == "version":
    _rewrite(path, version=features.FORMAT_VERSION - 1)
  elif damage == "features":  # contents changed after writing
    _rewrite(path, features=feats + 1e-3)
  elif damage == "shape":
    _rewrite(path, features=feats[:-1], labels=labels[:-1])
  else:
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
  with pytest.raises(features.StaleCacheError, match="feature cache"):
    cache.load(key)
  calls = []
  got, _, hit = cache.get_or_extract(key, lambda: (calls.append(1) or feats * 2, labels))
  assert not hit and calls == [1]
  np.testing.assert_array_equal(got, feats * 2)
  loaded, _ = cache.load(key)  # the refused file was overwritten with a good one
  np.testing.assert_array_equal(loaded, feats * 2)
