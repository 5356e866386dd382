"""A training state that carries its optimizer, and the one gradient update every task uses.

Flax's `flax.training.train_state.TrainState` idea: the gradient transformation
lives in the state as a static (non-pytree) field, so `init_state` returns
everything `train_step` needs and sets nothing on the task. Only arrays are
pytree leaves, so checkpoints hold arrays only and their paths are the fields'
names (`params/...`, `opt_state/...`).

`update(loss_fn, params, opt_state, optimizer, batch, rng)` is the single
place where a gradient becomes new parameters:

  1. the gradient of the trainable leaves only (frozen leaves get no backward
     pass), over `grad_accum_steps` micro-batches when asked (`lax.scan`);
  2. its mean across devices (`research.parallel.mean`);
  3. frozen leaves get zero gradients (the optimizer's `set_to_zero` partition
     ignores them), the optax update is computed and applied;
  4. frozen leaves are put back bit-exactly as they were (`p + 0` would turn
     -0. into 0.).

Gradient accumulation: the per-device batch [B, ...] is split into
`grad_accum_steps` micro-batches [B / n, ...] (consecutive examples), the
gradients and the loss function's outputs are averaged over them and ONE
optimizer update is made. Without BatchNorm this equals one step on the whole
batch (within float rounding). With BatchNorm in train mode each micro-batch
is normalised by its own statistics, and the new running statistics are the
mean of the micro-batches' updates (the running mean equals the whole batch's;
the running variance is the mean within-micro-batch variance, smaller than the
whole batch's by the variance of the micro-batch means): not the same step.
Randomness: micro-batch i draws from `fold_in(rng, i)`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import flax
import jax
import jax.numpy as jnp
import optax
from jax import lax

from research import parallel


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """A gradient transformation and the parameters it must leave untouched.

  Attributes:
    tx: the optax transformation (research.optim.make); it already gives
      frozen parameters no update and no state.
    frozen: regexes over parameter paths (research.params) of the frozen
      leaves: they get no gradient and are restored bit-exactly after the update.
  """
  tx: optax.GradientTransformation
  frozen: tuple[str, ...] = ()

  def init(self, params: Any) -> Any:
    return self.tx.init(params)

  def split(self, params: Any) -> tuple[Any, Any]:
    """params -> (trainable, frozen) nested dicts; ({}: nothing frozen)."""
    if not self.frozen:
      return params, {}
    from research import transfer  # pylint: disable=g-import-not-at-top
    return transfer.split_trainable(params, self.frozen)

  def merge(self, trainable: Any, frozen: Any) -> Any:
    """Inverse of `split`."""
    if not self.frozen:
      return trainable
    from research import transfer  # pylint: disable=g-import-not-at-top
    return transfer.merge(trainable, frozen)


@flax.struct.dataclass
class TrainState:
  """One network's training state: arrays as leaves, its optimizer as static data.

  `optimizer` is None for a state that is never trained (the linear probe).
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  optimizer: Any = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, params: Any, optimizer: Optimizer | None, batch_stats: Any = None,
             **extra: Any) -> "TrainState":
    """Step 0, the optimizer's initial state; `extra`: further fields of a subclass."""
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               batch_stats={} if batch_stats is None else batch_stats,
               opt_state=optimizer.init(params) if optimizer is not None else (),
               optimizer=optimizer, **extra)

  def apply_loss(self, loss_fn: Callable, batch: Any, rng=None, grad_accum_steps: int = 1):
    """`update` of this state's params: (params, opt_state, loss, aux)."""
    return update(loss_fn, self.params, self.opt_state, self.optimizer, batch, rng,
                  grad_accum_steps)


def check_grad_accum_steps(value: Any) -> int:
  """`grad_accum_steps` checked: a positive integer, else a ValueError naming it."""
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"grad_accum_steps={value!r}: must be an integer >= 1 (1 = off)")
  return value


def micro_batches(batch: Any, n: int) -> Any:
  """Every leaf [B, ...] -> [n, B / n, ...] (consecutive examples per micro-batch)."""

  def split(x):
    if x.shape[0] % n:
      raise ValueError(f"grad_accum_steps={n} does not divide the per-device batch of "
                       f"{x.shape[0]} examples; use a batch_size that is a multiple of "
                       f"grad_accum_steps x the device count")
    return x.reshape((n, x.shape[0] // n) + x.shape[1:])

  return jax.tree.map(split, batch)


def _accumulated(grad_fn: Callable, trainable: Any, batch: Any, rng, n: int):
  """grad_fn's ((loss, aux), grads) averaged over n micro-batches of `batch` (lax.scan)."""
  if batch is None:
    raise ValueError(f"grad_accum_steps={n}: this update has no batch to split")
  micro = micro_batches(batch, n)
  first = jax.tree.map(lambda x: x[0], micro)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                       jax.eval_shape(grad_fn, trainable, first, rng))

  def body(total, inputs):
    i, mb = inputs
    out = grad_fn(trainable, mb, None if rng is None else jax.random.fold_in(rng, i))
    return jax.tree.map(jnp.add, total, out), None

  total, _ = lax.scan(body, zeros, (jnp.arange(n), micro))
  return jax.tree.map(lambda x: x / n, total)


def update(loss_fn: Callable, params: Any, opt_state: Any, optimizer: Optimizer | Sequence,
           batch: Any = None, rng=None, grad_accum_steps: int = 1):
  """One optimizer step on `loss_fn(params, batch, rng) -> (scalar loss, aux)`.

  Args:
    loss_fn: the per-device loss; `aux` is a pytree of arrays (metrics, new
      BatchNorm statistics), averaged over micro-batches when accumulating.
    params, opt_state, optimizer: one network's, or equal-length tuples of
      several networks trained by the same loss (adaptation's classifier and
      domain classifier); `loss_fn` then receives the tuple of params.
    batch: this device's batch (pytree of [B, ...] arrays), split into
      micro-batches when `grad_accum_steps` > 1 (B must be a multiple of it).
    rng: a key for the loss, or None; micro-batch i gets fold_in(rng, i).
    grad_accum_steps: micro-batches per update (1 = one pass on the batch).

  Returns:
    (new params, new opt_state, loss, aux): params / opt_state in the form given.
  """
  single = isinstance(optimizer, Optimizer)
  opts = (optimizer,) if single else tuple(optimizer)
  params_t = (params,) if single else tuple(params)
  states = (opt_state,) if single else tuple(opt_state)
  splits = [o.split(p) for o, p in zip(opts, params_t)]
  frozen = tuple(f for _, f in splits)

  def loss_of_trainable(trainable, batch, rng):
    full = tuple(o.merge(t, f) for o, t, f in zip(opts, trainable, frozen))
    return loss_fn(full[0] if single else full, batch, rng)

  # Differentiate only the trainable leaves: no backward pass into frozen ones.
  grad_fn = jax.value_and_grad(loss_of_trainable, has_aux=True)
  trainable = tuple(t for t, _ in splits)
  if grad_accum_steps == 1:
    (loss, aux), grads = grad_fn(trainable, batch, rng)
  else:
    (loss, aux), grads = _accumulated(grad_fn, trainable, batch, rng, grad_accum_steps)
  grads = parallel.mean(grads)
  new_params, new_states = [], []
  for o, p, s, g, f in zip(opts, params_t, states, grads, frozen):
    # The optimizer sees the full tree; its set_to_zero partition ignores these zeros.
    updates, s = o.tx.update(o.merge(g, jax.tree.map(jnp.zeros_like, f)), s, p)
    # Frozen leaves are put back as they were (p + 0 would turn -0. into 0.).
    new_params.append(o.merge(o.split(optax.apply_updates(p, updates))[0], f))
    new_states.append(s)
  if single:
    return new_params[0], new_states[0], loss, aux
  return tuple(new_params), tuple(new_states), loss, aux
