"""Pruning: exact sparsity per layer and pattern, masks that survive training
and orbax round trips. References are numpy sorts, not the code under test."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from research.compress import pruning, sparsity


def _params(seed=0):
  rng = np.random.default_rng(seed)
  return {
      "Conv_0": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 8, 16)), jnp.float32),
                 "bias": jnp.asarray(rng.normal(size=(16,)), jnp.float32)},
      "BatchNorm_0": {"scale": jnp.asarray(rng.normal(size=(16,)), jnp.float32),
                      "bias": jnp.asarray(rng.normal(size=(16,)), jnp.float32)},
      "Dense_0": {"kernel": jnp.asarray(rng.normal(size=(64, 10)), jnp.float32),
                  "bias": jnp.asarray(rng.normal(size=(10,)), jnp.float32)},
  }


class _CNN(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3))(x))
    x = nn.relu(nn.Conv(16, (3, 3))(x))
    x = x.mean(axis=(1, 2))
    return nn.Dense(4)(x)


def _cnn_setup(seed=0):
  model = _CNN()
  x = jax.random.normal(jax.random.key(seed), (8, 8, 8, 4))
  y = jnp.arange(8) % 4
  params = model.init(jax.random.key(seed + 1), x)["params"]

  def loss(p):
    logits = model.apply({"params": p}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  return params, jax.jit(jax.grad(loss))


@pytest.mark.parametrize("sparsity", [0.5, 0.75, 0.9])
def test_unstructured_exact_per_layer_and_smallest_magnitudes(sparsity):
  params = _params()
  pruned = pruning.prune(params, pruning.SparsityConfig(sparsity=sparsity))
  for layer in ("Conv_0", "Dense_0"):
    w = np.asarray(params[layer]["kernel"]).ravel()
    got = np.asarray(pruned[layer]["kernel"]).ravel()
    k = int(round(sparsity * w.size))
    assert np.sum(got == 0) == k
    want_zero = np.argsort(np.abs(w))[:k]  # numpy reference
    assert set(np.flatnonzero(got == 0)) == set(want_zero)
    np.testing.assert_array_equal(got[got != 0], w[got != 0])
  # Biases and normalization parameters are excluded by default.
  for layer, name in [("Conv_0", "bias"), ("BatchNorm_0", "scale"),
                      ("BatchNorm_0", "bias"), ("Dense_0", "bias")]:
    np.testing.assert_array_equal(pruned[layer][name], params[layer][name])


def test_n_m_holds_in_every_group_and_keeps_largest():
  params = _params()
  pruned = pruning.prune(params, pruning.SparsityConfig(pattern="2:4"))
  for layer in ("Conv_0", "Dense_0"):
    w = np.asarray(params[layer]["kernel"])
    got = np.asarray(pruned[layer]["kernel"])
    # groups of 4 consecutive input channels for every other index
    gw = np.moveaxis(w, -2, -1).reshape(-1, 4)
    gg = np.moveaxis(got, -2, -1).reshape(-1, 4)
    assert np.all(np.sum(gg != 0, axis=1) == 2)
    keep_ref = np.argsort(np.abs(gw), axis=1)[:, 2:]
    mask_ref = np.zeros_like(gw, bool)
    np.put_along_axis(mask_ref, keep_ref, True, axis=1)
    np.testing.assert_array_equal(gg != 0, mask_ref)
    assert np.mean(got == 0) == 0.5


def test_n_m_skips_layers_with_indivisible_input_channels():
  params = {"Conv_0": {"kernel": jnp.ones((3, 3, 3, 8))},
            "Dense_0": {"kernel": jnp.arange(1.0, 33.0).reshape(8, 4)}}
  pruned = pruning.prune(params, pruning.SparsityConfig(pattern="1:4"))
  assert np.all(np.asarray(pruned["Conv_0"]["kernel"]) == 1)  # 3 % 4 != 0
  assert np.mean(np.asarray(pruned["Dense_0"]["kernel"]) == 0) == 0.75


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.75])
def test_channel_zeroes_lowest_norm_output_channels(sparsity):
  params = _params()
  pruned = pruning.prune(params, pruning.SparsityConfig(
      sparsity=sparsity, pattern="channel"))
  for layer in ("Conv_0", "Dense_0"):
    w = np.asarray(params[layer]["kernel"])
    got = np.asarray(pruned[layer]["kernel"]).reshape(-1, w.shape[-1])
    c = w.shape[-1]
    k = int(round(sparsity * c))
    dead = np.flatnonzero(np.all(got == 0, axis=0))
    alive = np.flatnonzero(np.all(got != 0, axis=0))
    assert len(dead) == k and len(alive) == c - k
    norms = np.linalg.norm(w.reshape(-1, c), axis=0)
    assert set(dead) == set(np.argsort(norms)[:k])


def test_global_magnitude_one_threshold_across_layers():
  params = _params()
  pruned = pruning.prune(params, pruning.SparsityConfig(
      sparsity=0.8, distribution="global"))
  w = np.concatenate([np.asarray(params[l]["kernel"]).ravel()
                      for l in ("Conv_0", "Dense_0")])
  got = np.concatenate([np.asarray(pruned[l]["kernel"]).ravel()
                        for l in ("Conv_0", "Dense_0")])
  k = int(round(0.8 * w.size))
  assert np.sum(got == 0) == k
  assert np.abs(w[got == 0]).max() <= np.abs(w[got != 0]).min()
  # Global sparsity is generally not uniform: layers differ.
  per_layer = [np.mean(np.asarray(pruned[l]["kernel"]) == 0)
               for l in ("Conv_0", "Dense_0")]
  assert per_layer[0] != per_layer[1]


def test_polynomial_schedule_matches_zhu_gupta():
  t0, t1, freq, sf = 10, 50, 10, 0.9
  for t in range(0, 70):
    if t < t0:
      want = 0.0
    else:
      last = min(t0 + (t - t0) // freq * freq, t1)
      want = sf * (1 - (1 - (last - t0) / (t1 - t0)) ** 3)
    got = float(sparsity.polynomial_sparsity(t, sf, t0, t1, freq))
    assert got == pytest.approx(want, abs=1e-6), t


def _sgd_steps(tx, params, grad_fn, n, state=None):
  state = tx.init(params) if state is None else state
  step = jax.jit(lambda p, s: _one(tx, p, s, grad_fn))
  history = []
  for _ in range(n):
    params, state = step(params, state)
    history.append(params)
  return params, state, history


def _one(tx, p, s, grad_fn):
  updates, s = tx.update(grad_fn(p), s, p)
  return optax.apply_updates(p, updates), s


@pytest.mark.parametrize("pattern,sparsity", [("unstructured", 0.75),
                                              ("2:4", 0.5), ("channel", 0.5)])
def test_one_shot_pruned_weights_stay_zero_under_training(pattern, sparsity):
  params, grad_fn = _cnn_setup()
  cfg = pruning.SparsityConfig(sparsity=sparsity, pattern=pattern, start_step=2)
  tx = pruning.wrap(optax.adam(1e-2), cfg)
  _, _, history = _sgd_steps(tx, params, grad_fn, 8)
  # before start_step nothing is pruned
  assert np.all(np.asarray(history[1]["Conv_1"]["kernel"]) != 0)
  zero_sets = []
  for p in history[2:]:
    k = np.asarray(p["Conv_1"]["kernel"])  # [3, 3, 8, 16]
    assert np.mean(k == 0) == sparsity
    zero_sets.append(k == 0)
  for z in zero_sets[1:]:
    np.testing.assert_array_equal(z, zero_sets[0])  # same weights, still zero
  # biases were trained, not pruned
  assert np.all(np.asarray(history[-1]["Conv_1"]["bias"]) != 0)


def test_gradual_schedule_sparsity_per_step():
  params, grad_fn = _cnn_setup()
  cfg = pruning.SparsityConfig(sparsity=0.9, schedule="gradual", start_step=1,
                               end_step=7, update_freq=2)
  tx = pruning.wrap(optax.sgd(0.1, momentum=0.9), cfg)
  _, _, history = _sgd_steps(tx, params, grad_fn, 10)
  n = 3 * 3 * 8 * 16
  prev = None
  for t, p in enumerate(history):  # history[t] = params after the update at t
    last = None if t < 1 else min(1 + (t - 1) // 2 * 2, 7)
    s = 0.0 if last is None else 0.9 * (1 - (1 - (last - 1) / 6) ** 3)
    z = np.asarray(p["Conv_1"]["kernel"]) == 0
    assert z.sum() == int(round(s * n)), t
    if prev is not None:
      assert np.all(z[prev])  # once pruned, always pruned
    prev = z


def test_checkpoint_round_trip_keeps_masks_and_zeros(tmp_path):
  params, grad_fn = _cnn_setup()
  cfg = pruning.SparsityConfig(sparsity=0.75)
  tx = pruning.wrap(optax.adam(1e-2), cfg)
  params, state, _ = _sgd_steps(tx, params, grad_fn, 3)
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(tmp_path / "ckpt", {"params": params, "opt_state": state})
  ckpt.wait_until_finished()
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                          {"params": params, "opt_state": state})
  restored = ckpt.restore(tmp_path / "ckpt", abstract)
  r_params, r_state = restored["params"], restored["opt_state"]
  assert isinstance(r_state, pruning.PruningState)
  for a, b in zip(jax.tree.leaves(state.masks), jax.tree.leaves(r_state.masks)):
    assert b.dtype == np.bool_
    np.testing.assert_array_equal(a, b)
  zeros_before = np.asarray(r_params["Conv_1"]["kernel"]) == 0
  assert zeros_before.mean() == 0.75
  r_params, _, _ = _sgd_steps(tx, r_params, grad_fn, 4, state=r_state)
  np.testing.assert_array_equal(
      np.asarray(r_params["Conv_1"]["kernel"]) == 0, zeros_before)
  # apply_masks on dense params reproduces the stored pattern
  dense = jax.tree.map(lambda x: x + 1.0, r_params)
  masked = pruning.apply_masks(dense, r_state)
  np.testing.assert_array_equal(
      np.asarray(masked["Conv_1"]["kernel"]) == 0, zeros_before)


def test_sparsity_report_matches_numpy_counts():
  params = _params()
  params["Dense_0"]["kernel"] = params["Dense_0"]["kernel"].at[:16].set(0.0)
  rep = pruning.sparsity_report(params)
  assert set(rep) == {"Conv_0/kernel", "Dense_0/kernel", "_total"}
  assert rep["Dense_0/kernel"] == 16 * 10 / 640
  assert rep["Conv_0/kernel"] == 0.0
  assert rep["_total"] == 160 / (640 + 3 * 3 * 8 * 16)


@pytest.mark.parametrize("kwargs,msg", [
    ({"pattern": "blocky"}, "pattern must be one of"),
    ({"sparsity": 1.0}, "sparsity must be in"),
    ({"pattern": "channel", "distribution": "global"}, "needs pattern"),
    ({"pattern": "5:4"}, "0 < N <= M"),
    ({"schedule": "gradual", "start_step": 5, "end_step": 5}, "end_step"),
])
def test_bad_config_names_the_value(kwargs, msg):
  with pytest.raises(ValueError, match=msg):
    pruning.SparsityConfig(**kwargs)


def test_include_pattern_typo_is_an_error():
  params, _ = _cnn_setup()
  tx = pruning.wrap(optax.sgd(0.1), {"include": [r".*kernal"]})
  with pytest.raises(ValueError, match="kernal"):
    tx.init(params)
