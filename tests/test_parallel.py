"""8 devices == 1 device, and pmap == jit+shard_map, for the BatchNorm ResNet."""
import jax
import ml_collections
import numpy as np
import pytest

from research import data, parallel
from research.tasks.classify import ClassifyTask


def _config():
  c = ml_collections.ConfigDict()
  c.task = "classify"
  c.num_steps = 20
  c.model = ml_collections.ConfigDict(dict(name="resnet18", num_classes=10, width=4))
  c.input = ml_collections.ConfigDict(dict(size=0, channels=0, normalize="unit"))
  c.optimizer = ml_collections.ConfigDict(dict(name="momentum", lr=0.02, schedule="constant",
                                               weight_decay=5e-4))
  c.label_smoothing = 0.1
  return c


def _train(num_devices, mode, steps=20, global_batch=32):
  task = ClassifyTask(_config())
  train = data.load("mnist5k", "train")  # real digits: a well-conditioned problem
  images = train["image"][:steps * global_batch, 6:22, 6:22].reshape(steps, global_batch, 16, 16, 1)
  labels = train["label"][:steps * global_batch].reshape(steps, global_batch)
  state = task.init_state(jax.random.PRNGKey(0), {"image": images[0, :2], "label": labels[0, :2]})
  dp = parallel.DataParallel(task.train_step, task.eval_step, mode=mode,
                             devices=jax.local_devices()[:num_devices])
  state = dp.put_state(state)
  for s in range(steps):
    batch = parallel.shard({"image": images[s], "label": labels[s]}, num_devices)
    state, metrics = dp.train_step(state, dp.put_batch(batch), jax.random.PRNGKey(1), np.int32(s))
  return jax.device_get((state.params, state.batch_stats)), jax.device_get(metrics)


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_eight_devices_equal_one_device_with_cross_replica_batchnorm():
  assert jax.local_device_count() == 8
  one, m1 = _train(1, "pmap")
  eight, m8 = _train(8, "pmap")
  assert _max_diff(one, eight) <= 1e-5
  assert abs(float(m1["loss"]) - float(m8["loss"])) <= 1e-5


def test_pmap_and_shard_map_give_the_same_parameters():
  a, _ = _train(8, "pmap", steps=5)
  b, _ = _train(8, "shard_map", steps=5)
  assert _max_diff(a, b) <= 1e-6


def test_batch_not_divisible_by_devices_is_a_clear_error():
  with pytest.raises(ValueError, match="batch_size 12 is not divisible by the device count 8"):
    parallel.check_batch_size(12)


def test_unknown_mode_is_a_clear_error():
  with pytest.raises(ValueError, match="mode must be one of .* got 'vmap'"):
    parallel.DataParallel(lambda s, b, r: (s, {}), mode="vmap")


def test_pad_to_devices_masks_the_padding():
  batch = {"image": np.arange(13 * 2, dtype=np.float32).reshape(13, 2),
           "label": np.arange(13), "mask": np.ones(13, np.float32)}
  out = parallel.pad_to_devices(batch, 8)
  assert out["image"].shape == (16, 2) and out["label"].shape == (16,)
  np.testing.assert_array_equal(out["mask"], [1.0] * 13 + [0.0] * 3)
  np.testing.assert_array_equal(out["image"][:13], batch["image"])
  assert parallel.pad_to_devices({"x": np.zeros(16)}, 8)["mask"].sum() == 16  # mask added


@pytest.mark.parametrize("eval_batch", [13, 500])
def test_eval_sums_equal_for_any_eval_batch_and_device_count(eval_batch):
  """An eval batch the devices cannot split (13, or 500 on 8 devices) is padded and masked:
  the confusion matrix counts every test example exactly once on 1 and on 8 devices."""
  task = ClassifyTask(_config())
  test = data.load("mnist5k", "test")
  arrays = {"image": test["image"][:, 6:22, 6:22], "label": test["label"]}
  state = task.init_state(jax.random.PRNGKey(0), {"image": arrays["image"][:2],
                                                  "label": arrays["label"][:2]})
  sums = []
  for n in (1, 8):
    dp = parallel.DataParallel(task.train_step, task.eval_step, devices=jax.local_devices()[:n])
    placed = dp.put_state(state)
    total = None
    for batch in data.eval_batches_from_arrays(arrays, eval_batch)():
      out = dp.to_host(dp.eval_step(placed, dp.put_batch(
          parallel.shard(parallel.pad_to_devices(batch, n), n))))
      total = out if total is None else jax.tree.map(np.add, total, out)
    sums.append(total)
  assert int(np.sum(sums[0]["confusion"])) == len(arrays["label"]) == 1000
  np.testing.assert_array_equal(sums[0]["confusion"], sums[1]["confusion"])
  np.testing.assert_allclose(sums[0]["loss_sum"], sums[1]["loss_sum"], rtol=1e-5)


class _Counter:
  """An iterator of batches {'x': [8] filled with i} with get_state/set_state, like data's."""

  def __init__(self, fail_at=None):
    self.position, self.fail_at = 0, fail_at

  def __next__(self):
    if self.position == self.fail_at:
      raise RuntimeError(f"bad batch {self.position}")
    self.position += 1
    return {"x": np.full((8,), self.position - 1, np.float32)}

  def get_state(self):
    return {"position": self.position}


@pytest.mark.parametrize("size", [0, 1, 3])
def test_prefetcher_gives_the_same_batches_and_the_state_of_the_last_consumed(size):
  it = parallel.Prefetcher(_Counter(), lambda b: b, size)
  assert it.get_state() == {"position": 0}
  for i in range(5):
    batch = next(it)
    assert batch["x"].shape == (jax.local_device_count(), 8 // jax.local_device_count())
    assert float(batch["x"].min()) == float(batch["x"].max()) == i
    assert it.get_state() == {"position": i + 1}  # not the prefetched position
  it.close()


def test_prefetcher_raises_the_readers_error_and_refuses_a_bad_size():
  it = parallel.Prefetcher(_Counter(fail_at=2), lambda b: b, 2)
  next(it), next(it)
  with pytest.raises(RuntimeError, match="bad batch 2"):
    next(it)
  with pytest.raises(ValueError, match="prefetch=-1"):
    parallel.Prefetcher(_Counter(), lambda b: b, -1)
