"""research.tasks.train_state: the one gradient update (cross-device mean, frozen gating,
gradient accumulation) against numpy, and the tasks that use it."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import config_lib, parallel, tasks, trainer
from research.tasks import train_state
from research.tasks.base import DataContext

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
LR = 0.1


def _linear_problem(n=16, d=3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = rng.normal(size=(n,)).astype(np.float32)
  return x, y


def _loss(params, batch, rng):
  del rng
  pred = batch["x"] @ params["w"] + params["b"][0] * 0.0
  loss = jnp.mean((pred - batch["y"]) ** 2)
  return loss, {"mse": loss}


def _run_update(optimizer, params, x, y, devices, accum):
  """One `update` under pmap over `devices` (the batch split evenly across them)."""
  opt_state = optimizer.init(params)
  n = len(devices)
  batch = {"x": x.reshape(n, -1, x.shape[1]), "y": y.reshape(n, -1)}

  def step(params, opt_state, batch):
    new, state, loss, aux = train_state.update(_loss, params, opt_state, optimizer, batch,
                                               None, accum)
    return new, state, parallel.mean(loss), parallel.mean(aux)

  fn = jax.pmap(step, axis_name=parallel.AXIS, in_axes=(None, None, 0), out_axes=None,
                devices=devices)
  return fn(params, opt_state, batch)


@pytest.mark.parametrize("num_devices,accum", [(1, 1), (2, 1), (2, 4), (1, 8)])
def test_update_is_one_sgd_step_on_the_mean_gradient_of_the_whole_batch(num_devices, accum):
  x, y = _linear_problem()
  w = np.array([0.5, -1.0, 2.0], np.float32)
  params = {"w": jnp.asarray(w), "b": jnp.zeros((1,))}
  optimizer = train_state.Optimizer(optax.sgd(LR))
  new, _, loss, aux = _run_update(optimizer, params, x, y, jax.devices()[:num_devices], accum)
  residual = x @ w - y
  want_grad = 2.0 / len(y) * x.T @ residual  # numpy: d/dw mean((xw - y)^2)
  np.testing.assert_allclose(np.asarray(new["w"]), w - LR * want_grad, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(loss), np.mean(residual ** 2), rtol=1e-5)
  np.testing.assert_allclose(float(aux["mse"]), np.mean(residual ** 2), rtol=1e-5)


def test_frozen_leaves_get_no_gradient_and_come_back_bit_exact():
  x, y = _linear_problem()
  w = np.array([0.5, -1.0, 2.0], np.float32)
  frozen_b = jnp.asarray(np.array([-0.0], np.float32))  # -0. + 0. would be +0.
  params = {"w": jnp.asarray(w), "b": frozen_b}
  tx = optax.multi_transform({"train": optax.sgd(LR), "frozen": optax.set_to_zero()},
                             {"w": "train", "b": "frozen"})
  optimizer = train_state.Optimizer(tx, frozen=("b",))
  new, _, _, _ = _run_update(optimizer, params, x, y, jax.devices()[:2], 2)
  assert np.signbit(np.asarray(new["b"])[0]) and float(new["b"][0]) == 0.0
  want_grad = 2.0 / len(y) * x.T @ (x @ w - y)
  np.testing.assert_allclose(np.asarray(new["w"]), w - LR * want_grad, rtol=1e-5, atol=1e-6)


def test_micro_batches_must_divide_the_device_batch():
  with pytest.raises(ValueError, match=r"grad_accum_steps=3 .* 8 examples"):
    train_state.micro_batches({"x": np.zeros((8, 2))}, 3)
  for bad in (0, -1, 1.5, True, "2"):
    with pytest.raises(ValueError, match="grad_accum_steps"):
      train_state.check_grad_accum_steps(bad)


def test_trainer_names_batch_size_and_grad_accum_steps_when_they_do_not_divide(tiny_config):
  config = tiny_config(batch_size=32, grad_accum_steps=3)  # 4 per device on 8
  with pytest.raises(ValueError, match=r"batch_size=32.*grad_accum_steps=3"):
    trainer._check_batch_size(config)  # pylint: disable=protected-access


def _classify_params_after(config, example, batches, num_devices=2):
  task = tasks.get_task(config.task, config)
  state = task.init_state(jax.random.PRNGKey(0), jax.tree.map(lambda x: x[:4], example))
  dp = parallel.DataParallel(task.train_step, devices=jax.devices()[:num_devices])
  state = dp.put_state(state)
  for step, batch in enumerate(batches):
    state, _ = dp.train_step(state, dp.put_batch(parallel.shard(batch, num_devices)),
                             jax.random.PRNGKey(1), np.int32(step))
  return jax.device_get(state.params)


def test_n_micro_batches_of_b_equal_one_batch_of_n_times_b_without_batchnorm(tiny_config):
  """small_cnn has no BatchNorm; without dropout the step is deterministic, so
  4 micro-batches of 8 per device must give the parameters of one batch of 32."""
  base = tiny_config(**{"model.dropout": 0.0, "batch_size": 64})
  it = tasks.get_task(base.task, base).train_data(
      DataContext(global_batch_size=64, seed=0))
  batches = [next(it) for _ in range(4)]
  whole = _classify_params_after(base, batches[0], batches)
  accum = tiny_config(**{"model.dropout": 0.0, "batch_size": 64,
                                  "grad_accum_steps": 4})
  micro = _classify_params_after(accum, batches[0], batches)
  start = _classify_params_after(base, batches[0], [])
  for a, b, s in zip(jax.tree.leaves(whole), jax.tree.leaves(micro), jax.tree.leaves(start)):
    assert not np.array_equal(a, s)  # it trained
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_tasks_that_cannot_honour_grad_accum_steps_reject_it_by_name():
  gan = config_lib.apply_overrides(
      config_lib.load(os.path.join(CONFIGS, "mnist5k_cgan.py") + ":quick"),
      {"grad_accum_steps": 2})
  with pytest.raises(ValueError, match="gan task: grad_accum_steps=2"):
    tasks.get_task("gan", gan)
  adapt = config_lib.apply_overrides(
      config_lib.load(os.path.join(CONFIGS, "digits_adapt.py") + ":uci,quick"),
      {"grad_accum_steps": 2})
  with pytest.raises(ValueError, match="adapt: grad_accum_steps=2"):
    tasks.get_task("adapt", adapt)


@pytest.mark.parametrize("config", ["mnist5k_classify.py:quick", "mnist5k_cgan.py:quick",
                                    "mnist5k_cvae.py:quick"])
def test_init_state_has_no_side_effects_and_the_state_carries_its_optimizer(config):
  c = config_lib.load(os.path.join(CONFIGS, config))
  task = tasks.get_task(c.task, c)
  before = dict(vars(task))
  batch = next(task.train_data(DataContext(global_batch_size=8, seed=0)))
  state = task.init_state(jax.random.PRNGKey(0), batch)
  assert vars(task).keys() == before.keys()
  assert all(vars(task)[k] is v for k, v in before.items())
  optimizers = [v for v in vars(state).values() if isinstance(v, train_state.Optimizer)]
  assert optimizers, "the state carries no optimizer"
  # Static fields: the optimizer adds no leaves, so checkpoints hold arrays only.
  assert all(hasattr(x, "shape") for x in jax.tree.leaves(state))
