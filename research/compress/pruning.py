"""Magnitude pruning as an optax wrapper (jaxpruner's design, rewritten).

`wrap(tx, config)` returns a `GradientTransformation` whose state holds one
boolean mask per parameter. Every update (1) masks the gradients fed to the
inner optimizer, (2) on pruning steps recomputes the masks from the current
weights' magnitudes, and (3) returns updates that set pruned weights to exactly
zero (`where(mask, u, -params)`), so pruned weights stay zero through training,
and, since the masks are ordinary arrays in the optimizer state, through orbax
checkpoints.

Patterns (what a mask may look like):
  'unstructured' -- any weights; exactly `round(s * size)` zeros per layer.
  'N:M' (e.g. '2:4') -- in every group of M consecutive weights along the
      input-channel axis (axis -2: Dense [in, out], Conv [..., in, out]) exactly
      N are kept. Sparsity is 1 - N/M; `config.sparsity` is ignored.
  'channel' -- whole output channels (last axis), ranked by their L2 norm;
      exactly `round(s * channels)` channels are zeroed per layer.
Distribution across layers: 'uniform' (the same sparsity in every layer) or
'global' (one magnitude threshold across all pruned layers; unstructured only).
Schedules ('one_shot', 'gradual') and the `SparsityConfig` itself live in
research/compress/sparsity.py.

Which parameters are pruned is chosen with `research.params` regexes over
parameter paths (default: every `kernel` with >= 2 dims, so biases and
normalization scales/offsets are never pruned).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from research import params as params_lib
# The config and its schedule (what to prune and when) are research.compress.sparsity.
from research.compress.sparsity import SparsityConfig, is_pruning_step, sparsity_at


# ---------------------------------------------------------------- masks


def prunable(params: Any, config: SparsityConfig) -> Any:
  """Bool tree: True for leaves the config prunes (matched, >= 2 dims)."""
  inc = params_lib.match(list(config.include), params)
  exc = (params_lib.match(list(config.exclude), params) if config.exclude
         else jax.tree.map(lambda _: False, params))
  nm = config.n_m

  def ok(name, x, i, e):
    if not i or e or np.ndim(x) < 2:
      return False
    if nm and np.shape(x)[-2] % nm[1]:
      logging.warning("pruning: %s has %d input channels, not a multiple of "
                      "M=%d; left dense", name, np.shape(x)[-2], nm[1])
      return False
    return True

  names = params_lib.tree_map_with_names(lambda n, _: n, params)
  return jax.tree.map(ok, names, params, inc, exc)


def _keep_top(scores, num_zero):
  """Mask of `scores`' shape zeroing exactly `num_zero` lowest entries.

  Ties are broken by flat index (lower index pruned first), so the count is
  exact even when many scores are equal (e.g. already-pruned zeros).
  """
  flat = scores.reshape(-1)
  rank = jnp.argsort(jnp.argsort(flat, stable=True), stable=True)
  return (rank >= num_zero).reshape(scores.shape)


def _num_zero(sparsity, n):
  return jnp.round(sparsity * n).astype(jnp.int32)


def unstructured_mask(w, sparsity):
  """Bool mask zeroing exactly round(sparsity * w.size) smallest |w|."""
  return _keep_top(jnp.abs(w), _num_zero(sparsity, w.size))


def channel_mask(w, sparsity):
  """Bool mask zeroing the round(sparsity * C) output channels (last axis) of
  lowest L2 norm; w: [..., C]."""
  norms = jnp.sqrt(jnp.sum(jnp.square(w.reshape(-1, w.shape[-1])), axis=0))
  keep = _keep_top(norms, _num_zero(sparsity, w.shape[-1]))
  return jnp.broadcast_to(keep, w.shape)


def n_m_mask(w, n: int, m: int):
  """Bool mask keeping the n largest |w| in each group of m consecutive weights
  along axis -2 (input channels); w: [..., C_in, C_out], C_in % m == 0."""
  if w.shape[-2] % m:
    raise ValueError(f"pruning: N:M needs input channels divisible by M={m}, "
                     f"got shape {w.shape}")
  x = jnp.moveaxis(jnp.abs(w), -2, -1)  # [..., C_out, C_in]
  groups = x.reshape(x.shape[:-1] + (x.shape[-1] // m, m))
  rank = jnp.argsort(jnp.argsort(groups, axis=-1, stable=True), axis=-1,
                     stable=True)
  keep = (rank >= m - n).reshape(x.shape)
  return jnp.moveaxis(keep, -1, -2)


def compute_masks(params: Any, config: SparsityConfig, sparsity=None,
                  selected: Any = None) -> Any:
  """Magnitude masks for `params` (same tree; True = kept).

  Args:
    params: the parameter tree (float arrays).
    config: what to prune.
    sparsity: float scalar in [0, 1), may be traced; default
      `config.final_sparsity`. Ignored for N:M.
    selected: optional bool tree from `prunable(params, config)` (computed if
      not given; pass it to avoid recomputing under tracing).
  Returns:
    A bool tree shaped like `params`; unselected leaves are all True.
  """
  if selected is None:
    selected = prunable(params, config)
  if sparsity is None:
    sparsity = config.final_sparsity
  nm = config.n_m

  if config.distribution == "global":
    leaves, treedef = jax.tree.flatten(params)
    sel = treedef.flatten_up_to(selected)
    chosen = [jnp.abs(x).reshape(-1) for x, s in zip(leaves, sel) if s]
    if not chosen:
      return jax.tree.map(lambda x: jnp.ones(jnp.shape(x), bool), params)
    scores = jnp.concatenate(chosen)
    keep = _keep_top(scores, _num_zero(sparsity, scores.size))
    out, offset = [], 0
    for x, s in zip(leaves, sel):
      if s:
        out.append(keep[offset:offset + x.size].reshape(x.shape))
        offset += x.size
      else:
        out.append(jnp.ones(jnp.shape(x), bool))
    return jax.tree.unflatten(treedef, out)

  def one(x, s):
    if not s:
      return jnp.ones(jnp.shape(x), bool)
    if nm:
      return n_m_mask(x, *nm)
    if config.pattern == "channel":
      return channel_mask(x, sparsity)
    return unstructured_mask(x, sparsity)

  return jax.tree.map(one, params, selected)


def prune(params: Any, config: SparsityConfig, sparsity=None) -> Any:
  """One-shot magnitude pruning without an optimizer: params * masks."""
  masks = compute_masks(params, config, sparsity)
  return jax.tree.map(lambda x, m: jnp.where(m, x, 0).astype(x.dtype),
                      params, masks)


# ---------------------------------------------------------------- optax


class PruningState(NamedTuple):
  """Optimizer state of `wrap`: update count, masks (True = kept), inner state."""
  count: jax.Array  # int32 []
  masks: Any        # bool tree shaped like params
  inner_state: Any


def wrap(tx: optax.GradientTransformation,
         config: SparsityConfig | dict) -> optax.GradientTransformation:
  """Wraps `tx` so that it prunes the parameters it updates.

  `update(grads, state, params)` requires `params`. Parameters must be applied
  with `optax.apply_updates` (params + updates) for pruned weights to land on
  exactly zero.

  Args:
    tx: the inner optimizer.
    config: a `SparsityConfig` or a dict of its fields.
  Returns:
    An optax `GradientTransformation` with `PruningState` as state.
  """
  if not isinstance(config, SparsityConfig):
    config = SparsityConfig.from_dict(config)

  def init_fn(params):
    params_lib.check_patterns_match(list(config.include), params, "pruning.include")
    return PruningState(
        count=jnp.zeros([], jnp.int32),
        masks=jax.tree.map(lambda x: jnp.ones(jnp.shape(x), bool), params),
        inner_state=tx.init(params))

  def update_fn(grads, state, params=None):
    if params is None:
      raise ValueError("pruning.wrap: update() needs `params` to prune by "
                       "magnitude; call tx.update(grads, state, params)")
    grads = jax.tree.map(lambda g, m: jnp.where(m, g, 0).astype(g.dtype),
                         grads, state.masks)
    updates, inner_state = tx.update(grads, state.inner_state, params)
    selected = prunable(params, config)
    masks = jax.lax.cond(
        is_pruning_step(state.count, config),
        lambda: compute_masks(params, config, sparsity_at(state.count, config),
                              selected),
        lambda: state.masks)
    # params + (-params) == 0 exactly in floating point.
    updates = jax.tree.map(
        lambda u, p, m: jnp.where(m, u, -p).astype(u.dtype),
        updates, params, masks)
    return updates, PruningState(count=state.count + 1, masks=masks,
                                 inner_state=inner_state)

  return optax.GradientTransformation(init_fn, update_fn)


def find_masks(opt_state: Any) -> Any:
  """The masks of the (first) `PruningState` inside `opt_state`, or raises."""
  found = []

  def visit(x):
    if isinstance(x, PruningState):
      found.append(x.masks)
      return True
    return False

  jax.tree.leaves(opt_state, is_leaf=visit)
  if not found:
    raise ValueError("pruning: no PruningState in the optimizer state; was the "
                     "optimizer built with research.compress.pruning.wrap?")
  return found[0]


def apply_masks(params: Any, opt_state: Any) -> Any:
  """Zeroes the pruned weights of `params` using the masks in `opt_state`."""
  masks = find_masks(opt_state)
  return jax.tree.map(lambda x, m: jnp.where(m, x, 0).astype(x.dtype),
                      params, masks)


def sparsity_report(params: Any,
                    include: Sequence[str] = (r"(.*/)?kernel",)) -> dict[str, float]:
  """Fraction of exactly-zero weights, per parameter whose path matches `include`.

  Returns:
    {'Conv_0/kernel': 0.5, ...} with values in [0, 1], plus '_total' over all
    reported parameters (weighted by size).
  """
  sel = params_lib.flatten(params_lib.match(list(include), params))
  flat = params_lib.flatten(params)
  report, zeros, total = {}, 0, 0
  for name, x in flat.items():
    if not sel[name]:
      continue
    x = np.asarray(x)
    z = int(np.sum(x == 0))
    report[name] = z / max(x.size, 1)
    zeros += z
    total += x.size
  report["_total"] = zeros / max(total, 1)
  return report
