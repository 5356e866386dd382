"""Fine-tuning through the classify task: freezing, BatchNorm modes, pretrained
init and layer-wise learning rates, each against an independent reference
(the initial state, the .pth read by torch, a hand-computed SGD step)."""
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import params as P
from research import trainer, transfer
from research.tasks.classify import ClassifyTask
from tests.steps import one_device_step

_CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "mnist5k_finetune.py")


def _config(variant="quick", tiny=True, **overrides):
  """configs/mnist5k_finetune.py; `tiny` swaps in a width/depth-0.25 Lite from scratch
  (7 blocks, compiles in seconds) because the pretrained Lite0 takes minutes here."""
  spec = importlib.util.spec_from_file_location("_mnist5k_finetune", _CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(variant)
  c.progress = False
  c.data.few_shot_k = 5
  c.batch_size = 8
  c.eval_batch_size = 1000
  c.num_steps = 3
  c.eval_every = c.checkpoint_every = c.log_every = 3
  c.optimizer.warmup_steps = 0
  if tiny:
    c.model.width = 0.25
    c.model.depth = 0.25
    c.init.checkpoint = ""
  for k, v in overrides.items():
    node = c
    *path, last = k.split(".")
    for p in path:
      node = node[p]
    node[last] = v
  return c


def _batch(n=8, seed=0):
  rng = np.random.default_rng(seed)
  return {"image": rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
          "label": rng.integers(0, 10, n).astype(np.int32)}


def _one_step(task, state, batch, rng=1):
  step = one_device_step(task)
  new, metrics = step(state, batch, jax.random.PRNGKey(rng))
  return jax.tree.map(lambda x: np.asarray(x)[0], new), metrics


def _changed(a, b):
  return not np.array_equal(np.asarray(a), np.asarray(b))


def _bn_modules(batch_stats):
  return sorted({name.rsplit("/", 1)[0] for name in P.flatten(batch_stats)})


def test_linear_probe_step_changes_only_the_head():
  config = _config("quick,linear_probe", **{"optimizer.weight_decay": 0.0})
  task = ClassifyTask(config)
  batch = _batch()
  state = task.init_state(jax.random.PRNGKey(0), batch)
  new, metrics = _one_step(task, state, batch)
  assert np.isfinite(metrics["loss"]).all()
  got, want = P.flatten(new.params), P.flatten(state.params)
  for name in want:
    if name.startswith("head/"):
      assert _changed(got[name], want[name]), name
    else:
      np.testing.assert_array_equal(got[name], np.asarray(want[name]), err_msg=name)
  jax.tree.map(np.testing.assert_array_equal, new.batch_stats,
               jax.tree.map(np.asarray, state.batch_stats))
  # Adam moments (mu, nu) exist for the head's kernel and bias only.
  buffers = [x for x in jax.tree.leaves(state.opt_state) if np.ndim(x) > 0]
  assert sorted(x.size for x in buffers) == sorted(2 * [want["head/kernel"].size,
                                                        want["head/bias"].size])


@pytest.mark.slow
def test_linear_probe_on_the_trainer_changes_only_the_head(tmp_path):
  config = _config("quick,linear_probe")
  out = trainer.train_and_evaluate(config, str(tmp_path))
  assert out["step"] == 3
  task, state = trainer.load_state(str(tmp_path))
  # The trainer initialises with split(PRNGKey(seed))[0] (deterministic init).
  example = {"image": np.zeros((1, 28, 28, 1), np.uint8)}
  init = task.init_variables(jax.random.split(jax.random.PRNGKey(config.seed))[0], example)
  got, want = P.flatten(state.params), P.flatten(init["params"])
  assert sorted(got) == sorted(want)
  for name in want:
    if name.startswith("head/"):
      assert _changed(got[name], want[name]), name
    else:  # bit-for-bit, BatchNorm scale/bias included
      np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(want[name]), err_msg=name)
  stats, stats0 = P.flatten(state.batch_stats), P.flatten(init["batch_stats"])
  assert stats and sorted(stats) == sorted(stats0)
  for name in stats0:
    np.testing.assert_array_equal(np.asarray(stats[name]), np.asarray(stats0[name]), err_msg=name)
  # Adam moments exist for the head only (kernel + bias, mu and nu).
  buffers = [x for x in jax.tree.leaves(state.opt_state) if np.ndim(x) > 0]
  head = P.flatten(init["params"]["head"])
  assert sorted(x.size for x in buffers) == sorted(2 * [v.size for v in head.values()])


@pytest.mark.parametrize("bn_mode", [pytest.param("train", marks=pytest.mark.slow),
                                     "frozen_stats", "frozen"])
def test_batchnorm_modes(bn_mode):
  config = _config(bn_mode=bn_mode, **{"optimizer.name": "sgd", "optimizer.lr": 0.1,
                                       "optimizer.weight_decay": 0.0, "model.bn_momentum": 0.0})
  task = ClassifyTask(config)
  batch = _batch()
  state = task.init_state(jax.random.PRNGKey(0), batch)
  # Calibrate the running statistics on another batch (momentum 0: they become its
  # statistics); at init (mean 0, var 1) the random network's activations are tiny
  # and the scale gradients ~1e-9, below float32 resolution at scale 1.
  calibrate = ClassifyTask(_config(**{"model.bn_momentum": 0.0}))
  _, stats = jax.jit(jax.vmap(lambda x: calibrate.apply(state.params, state.batch_stats, x,
                                                        True, jax.random.PRNGKey(3)),
                              axis_name="batch", axis_size=1))(
                                  task.inputs(_batch(seed=1)["image"])[None])
  state = state.replace(batch_stats=jax.tree.map(lambda v: v[0], stats))
  new, _ = _one_step(task, state, batch)
  stats, stats0 = P.flatten(new.batch_stats), P.flatten(state.batch_stats)
  params, params0 = P.flatten(new.params), P.flatten(state.params)
  bn = _bn_modules(state.batch_stats)
  assert len(bn) > 10 and all(f"{m}/scale" in params0 for m in bn)
  stats_moved = [_changed(stats[n], stats0[n]) for n in stats0]
  bias_moved = [_changed(params[f"{m}/bias"], params0[f"{m}/bias"]) for m in bn]
  scale_moved = [_changed(params[f"{m}/scale"], params0[f"{m}/scale"]) for m in bn]
  assert _changed(params["stem_conv/kernel"], params0["stem_conv/kernel"])
  if bn_mode == "train":  # control: the same step does move the running statistics
    assert all(stats_moved) and all(bias_moved) and all(scale_moved)
  elif bn_mode == "frozen_stats":
    assert not any(stats_moved) and all(bias_moved) and all(scale_moved)
  else:
    assert not any(stats_moved) and not any(bias_moved) and not any(scale_moved)


def test_frozen_stats_uses_running_statistics_in_training():
  # With frozen statistics the training-mode forward (dropout off) is the eval forward.
  config = _config(bn_mode="frozen_stats", **{"model.dropout_rate": 0.0,
                                              "model.drop_connect_rate": 0.0})
  task = ClassifyTask(config)
  batch = _batch()
  state = task.init_state(jax.random.PRNGKey(0), batch)
  state = state.replace(batch_stats=jax.tree.map(lambda s: s + 0.3, state.batch_stats))
  x = task.inputs(batch["image"])
  train_logits, _ = task.apply(state.params, state.batch_stats, x, True, jax.random.PRNGKey(2))
  eval_logits, _ = task.apply(state.params, state.batch_stats, x, False)
  np.testing.assert_allclose(train_logits, eval_logits, rtol=1e-5, atol=1e-5)


@pytest.mark.torch
def test_pretrained_init_loads_the_pth_values():
  import torch  # the test extra installs it; a missing torch must fail, not skip
  path = transfer.pretrained.default_weights_path()
  ref = {k: v.numpy() for k, v in torch.load(path, map_location="cpu").items()}
  config = _config(tiny=False)
  task = ClassifyTask(config)
  variables = task.init_variables(jax.random.PRNGKey(0), _batch(1))
  p, s = variables["params"], variables["batch_stats"]
  np.testing.assert_array_equal(p["stem_conv"]["kernel"],
                                ref["_conv_stem.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(p["block_5"]["depthwise_conv"]["kernel"],
                                ref["_blocks.5._depthwise_conv.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(p["top_bn"]["scale"], ref["_bn1.weight"])
  np.testing.assert_array_equal(s["block_15"]["project_bn"]["var"],
                                ref["_blocks.15._bn2.running_var"])
  # The head is new: 10 classes, not ImageNet's 1000.
  assert p["head"]["kernel"].shape == (1280, 10) and ref["_fc.weight"].shape == (1000, 1280)
  # The same through a path, and the errors.
  again = transfer.load_pretrained(variables, path, dont_load=("head/.*",))
  np.testing.assert_array_equal(again["params"]["stem_conv"]["kernel"], p["stem_conv"]["kernel"])
  with pytest.raises(ValueError, match="init.checkpoint='efficientnet_lite9'"):
    transfer.load_pretrained(variables, "efficientnet_lite9")
  with pytest.raises(ValueError, match="head"):  # strict: a 10-class head cannot load
    transfer.load_pretrained(variables, "efficientnet_lite0")


def test_layer_decay_multipliers_reach_the_optimizer():
  lr, decay = 0.5, 0.7
  config = _config(bn_mode="frozen_stats",
                   **{"optimizer.name": "sgd", "optimizer.lr": lr, "optimizer.schedule": "constant",
                      "optimizer.weight_decay": 0.0, "optimizer.layer_decay": decay,
                      "label_smoothing": 0.0, "model.dropout_rate": 0.0,
                      "model.drop_connect_rate": 0.0})
  task = ClassifyTask(config)
  batch = _batch()
  state = task.init_state(jax.random.PRNGKey(0), batch)
  new, _ = _one_step(task, state, batch)

  # Hand computation: gradient of mean cross-entropy of the model applied directly.
  x = task.inputs(batch["image"])

  def loss(params):
    logits = task.model.apply({"params": params, "batch_stats": state.batch_stats}, x,
                              train=True, use_running_average=True)
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(logp[jnp.arange(8), batch["label"]])
  grads = P.flatten(jax.jit(jax.grad(loss))(state.params))
  blocks = sorted({int(n.split("/")[0][6:]) for n in grads if n.startswith("block_")})
  n = len(blocks)
  assert blocks == list(range(n)) and n == 7

  def depth(name):  # head 0, top 1, last block 2, ..., first block n + 1, stem n + 2
    top = name.split("/")[0]
    if top == "head":
      return 0
    if top.startswith("top_"):
      return 1
    if top.startswith("block_"):
      return n + 1 - int(top[6:])
    return n + 2
  old, got = P.flatten(state.params), P.flatten(new.params)
  estimated = set()
  for name, g in grads.items():
    g = np.asarray(g, np.float64)
    w0 = np.asarray(old[name], np.float64)
    delta = np.asarray(got[name], np.float64) - w0
    want = -lr * decay ** depth(name) * g
    rounding = 1.2e-7 * np.abs(w0).max()  # float32 spacing of the largest weight
    np.testing.assert_allclose(delta, want, rtol=1e-2, atol=rounding + 1e-3 * np.abs(want).max(),
                               err_msg=name)
    if np.abs(want).max() > 1e3 * rounding:
      # The multiplier the step applied, by least squares: delta = -lr * m * g.
      m = np.sum(-delta * g) / (lr * np.sum(g * g))
      assert m == pytest.approx(decay ** depth(name), rel=1e-2), name
      estimated.add(depth(name))
  # Every depth was checked precisely (multipliers 1 down to 0.7**9 = 0.04).
  assert estimated == set(range(n + 3))
