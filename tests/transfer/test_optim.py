"""Freezing and layer-wise learning rates (research.optim.partitioned fed by
research.transfer.optim), checked against hand-written SGD."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import optim as config_optim
from research import params as P
from research.transfer import optim


def _params():
  r = np.random.default_rng(0)
  f = lambda *s: jnp.asarray(r.normal(size=s), jnp.float32)
  return {
      "stem_conv": {"kernel": f(3, 3, 3, 4)},
      "stem_bn": {"scale": f(4), "bias": f(4)},
      "block_0": {"depthwise_conv": {"kernel": f(3, 3, 1, 4)}},
      "block_1": {"project_conv": {"kernel": f(1, 1, 4, 8)}},
      "top_conv": {"kernel": f(1, 1, 8, 16)},
      "head": {"kernel": f(16, 5), "bias": f(5)},
  }


def _grads(params, seed):
  r = np.random.default_rng(seed)
  return jax.tree.map(
      lambda x: jnp.asarray(r.normal(size=x.shape), jnp.float32), params)


def test_frozen_params_unchanged_and_stateless():
  params = _params()
  frozen = ("stem_.*", "block_0/.*")
  tx = config_optim.partitioned(optax.sgd(0.1, momentum=0.9), params, frozen=frozen)
  state = tx.init(params)
  # Momentum buffers exist only for the 4 trainable leaves (of 8).
  trainable_leaves = 4
  momentum_leaves = [x for x in jax.tree.leaves(state)
                     if hasattr(x, "shape") and x.ndim > 0]
  assert len(momentum_leaves) == trainable_leaves
  assert sum(x.size for x in momentum_leaves) == (
      4 * 8 + 8 * 16 + 16 * 5 + 5)
  p = params
  for step in range(4):
    updates, state = tx.update(_grads(p, step), state, p)
    p = optax.apply_updates(p, updates)
  for path in (("stem_conv", "kernel"), ("stem_bn", "scale"),
               ("stem_bn", "bias")):
    np.testing.assert_array_equal(p[path[0]][path[1]],
                                  params[path[0]][path[1]])
  np.testing.assert_array_equal(p["block_0"]["depthwise_conv"]["kernel"],
                                params["block_0"]["depthwise_conv"]["kernel"])
  assert not np.allclose(p["head"]["kernel"], params["head"]["kernel"])


def test_layerwise_multipliers_match_hand_sgd():
  params = _params()
  decay, lr = 0.5, 0.1
  mults = optim.efficientnet_lr_multipliers(params, decay)
  # Closed form: 2 blocks -> head 1, top .5, block_1 .25, block_0 .125, stem .0625.
  expected = {"head": 1.0, "top_conv": 0.5, "block_1": 0.25, "block_0": 0.125,
              "stem_conv": 0.0625, "stem_bn": 0.0625}
  for k, m in expected.items():
    assert all(v == m for v in jax.tree.leaves(mults[k])), k
  rules = optim.lr_mult_rules(mults)
  # One rule per top-level module; head (x1) needs none.
  assert dict(rules) == {"top_conv/.*": 0.5, "block_1/.*": 0.25, "block_0/.*": 0.125,
                         "stem_conv/.*": 0.0625, "stem_bn/.*": 0.0625}
  tx = config_optim.partitioned(optax.sgd(lr), params, lr_mults=rules)
  state = tx.init(params)
  p = params
  p_ref = jax.tree.map(np.asarray, params)
  for step in range(3):
    g = _grads(p, 10 + step)
    updates, state = tx.update(g, state, p)
    p = optax.apply_updates(p, updates)
    for k, m in expected.items():
      p_ref[k] = jax.tree.map(lambda w, gg: w - lr * m * np.asarray(gg),
                              p_ref[k], g[k])
  for k in expected:
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6,
                                                         atol=1e-7),
                 p[k], p_ref[k])


def test_schedule_and_frozen_with_multipliers():
  params = _params()
  mults = optim.efficientnet_lr_multipliers(params, 0.5)
  sched = lambda step: 0.2 / (1.0 + step)
  tx = config_optim.partitioned(optax.sgd(sched), params, frozen=("head/.*",),
                                lr_mults=optim.lr_mult_rules(mults))
  state = tx.init(params)
  p = params
  want = np.asarray(params["top_conv"]["kernel"])
  for step in range(3):
    g = _grads(p, 20 + step)
    updates, state = tx.update(g, state, p)
    p = optax.apply_updates(p, updates)
    want = want - 0.2 / (1.0 + step) * 0.5 * np.asarray(g["top_conv"]["kernel"])
  np.testing.assert_allclose(p["top_conv"]["kernel"], want, rtol=1e-6,
                             atol=1e-7)
  np.testing.assert_array_equal(p["head"]["kernel"], params["head"]["kernel"])


def test_bad_pattern_is_an_error():
  with pytest.raises(ValueError, match="blocks_0"):
    config_optim.partitioned(optax.sgd(0.1), _params(), frozen=("blocks_0/.*",))
  with pytest.raises(ValueError, match="decay"):
    optim.layerwise_lr_multipliers(_params(), 1.5, lambda n: 0)


def test_lr_mult_rules_per_leaf_when_a_module_mixes_multipliers():
  params = _params()
  mults = jax.tree.map(lambda _: 1.0, params)
  mults["stem_bn"]["scale"] = 0.5
  mults["head"]["bias"] = 2.0
  rules = optim.lr_mult_rules(mults)
  assert sorted(rules) == [("head/bias", 2.0), ("stem_bn/scale", 0.5)]


def test_batchnorm_affine_patterns_follow_batch_stats():
  stats = {"stem_bn": {"mean": 0, "var": 0}, "block_0": {"project_bn": {"mean": 0, "var": 0}}}
  patterns = optim.batchnorm_affine_patterns(stats)
  names = ["stem_bn/scale", "stem_bn/bias", "block_0/project_bn/scale", "block_0/project_conv/kernel",
           "stem_conv/kernel"]
  hit = [n for n in names if any(re.fullmatch(p, n) for p in patterns)]
  assert hit == names[:3]


def test_split_merge_and_grad_of_trainable_only():
  params = _params()
  trainable, frozen = optim.split_trainable(params, ("stem_.*", "block_.*"))
  assert set(trainable) == {"top_conv", "head"}
  assert set(frozen) == {"stem_conv", "stem_bn", "block_0", "block_1"}
  merged = optim.merge(trainable, frozen)
  assert jax.tree.structure(merged) == jax.tree.structure(params)
  jax.tree.map(np.testing.assert_array_equal, merged, params)

  x = jnp.ones((2, 16))

  def loss(tr, fr):
    p = optim.merge(tr, fr)
    scale = jnp.sum(p["stem_bn"]["scale"])  # frozen leaf enters the loss
    return jnp.sum((x @ p["head"]["kernel"] + p["head"]["bias"]) * scale)

  g = jax.grad(loss)(trainable, frozen)
  assert jax.tree.structure(g) == jax.tree.structure(trainable)
  # Closed form: d/dW sum(x W * s) = s * x^T 1.
  s = float(jnp.sum(params["stem_bn"]["scale"]))
  np.testing.assert_allclose(g["head"]["kernel"],
                             s * np.ones((16, 5)) * 2, rtol=1e-5)
  np.testing.assert_allclose(g["head"]["bias"], s * 2 * np.ones(5), rtol=1e-5)


def test_config_optimizer_clips_the_global_norm_of_trainable_gradients():
  import ml_collections  # pylint: disable=g-import-not-at-top
  params = _params()
  cfg = ml_collections.ConfigDict(dict(name="sgd", lr=0.5, schedule="constant",
                                       grad_clip_norm=1.0, frozen=("stem_.*",),
                                       lr_mults=(("head/.*", 2.0), ("block_0/.*", 0.25))))
  tx = config_optim.make(cfg, params, num_steps=10)
  g = jax.tree.map(lambda x: 10.0 * x, _grads(params, 30))
  updates, _ = tx.update(g, tx.init(params), params)
  flat_g = {k: np.asarray(v, np.float64) for k, v in P.flatten(g).items()}
  # Hand: one norm over the trainable leaves (frozen stem excluded), then lr * multiplier.
  norm = np.sqrt(sum(np.sum(v ** 2) for k, v in flat_g.items() if not k.startswith("stem_")))
  assert norm > 1.0
  mult = lambda k: 2.0 if k.startswith("head/") else 0.25 if k.startswith("block_0/") else 1.0
  for k, u in P.flatten(updates).items():
    want = 0.0 * flat_g[k] if k.startswith("stem_") else -0.5 * mult(k) * flat_g[k] / norm
    np.testing.assert_allclose(u, want, rtol=1e-5, atol=1e-7, err_msg=k)
