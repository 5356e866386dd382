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
Schedules: 'one_shot' (prune once at `start_step`) or 'gradual' (Zhu & Gupta
2017: s_t = s_f * (1 - (1 - (t - t0) / (t1 - t0))^3), updated every
`update_freq` steps from `start_step` to `end_step`).

Which parameters are pruned is chosen with `research.params` regexes over
parameter paths (default: every `kernel` with >= 2 dims, so biases and
normalization scales/offsets are never pruned).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, NamedTuple, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from research import params as params_lib

PATTERNS = ("unstructured", "channel", "N:M")
DISTRIBUTIONS = ("uniform", "global")
SCHEDULES = ("one_shot", "gradual")


@dataclasses.dataclass(frozen=True)
class SparsityConfig:
  """What to prune, how, and when.

  Attributes:
    sparsity: target fraction of zeroed weights per pruned layer, in [0, 1).
      Ignored for N:M patterns (their sparsity is 1 - N/M).
    pattern: 'unstructured', 'channel', or 'N:M' such as '2:4'.
    distribution: 'uniform' or 'global' (global needs 'unstructured').
    schedule: 'one_shot' or 'gradual'.
    start_step: first optimizer step (0-based update count) that prunes.
    end_step: last pruning step of a gradual schedule (> start_step).
    update_freq: steps between mask updates of a gradual schedule (>= 1).
    include: regexes (full match on 'a/b/kernel' paths) of prunable params.
    exclude: regexes of params never pruned, even if included.
  """
  sparsity: float = 0.5
  pattern: str = "unstructured"
  distribution: str = "uniform"
  schedule: str = "one_shot"
  start_step: int = 0
  end_step: int = 0
  update_freq: int = 1
  include: Sequence[str] = (r"(.*/)?kernel",)
  exclude: Sequence[str] = ()

  def __post_init__(self):
    nm = parse_n_m(self.pattern)
    if nm is None and self.pattern not in ("unstructured", "channel"):
      raise ValueError(f"pruning: pattern must be one of {PATTERNS}, got "
                       f"{self.pattern!r}")
    if nm is None and not 0.0 <= self.sparsity < 1.0:
      raise ValueError(f"pruning: sparsity must be in [0, 1), got {self.sparsity}")
    if self.distribution not in DISTRIBUTIONS:
      raise ValueError(f"pruning: distribution must be one of {DISTRIBUTIONS}, "
                       f"got {self.distribution!r}")
    if self.distribution == "global" and self.pattern != "unstructured":
      raise ValueError("pruning: distribution='global' needs pattern="
                       f"'unstructured', got {self.pattern!r}")
    if self.schedule not in SCHEDULES:
      raise ValueError(f"pruning: schedule must be one of {SCHEDULES}, got "
                       f"{self.schedule!r}")
    if self.schedule == "gradual":
      if nm is not None:
        raise ValueError(f"pruning: pattern {self.pattern!r} is one-shot only; "
                         "use schedule='one_shot'")
      if self.end_step <= self.start_step:
        raise ValueError(f"pruning: end_step must be > start_step="
                         f"{self.start_step}, got {self.end_step}")
      if self.update_freq < 1:
        raise ValueError(f"pruning: update_freq must be >= 1, got "
                         f"{self.update_freq}")
    if self.start_step < 0:
      raise ValueError(f"pruning: start_step must be >= 0, got {self.start_step}")

  @classmethod
  def from_dict(cls, d) -> "SparsityConfig":
    """Builds from a dict / ConfigDict with a subset of the fields."""
    d = dict(d)
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"pruning: unknown SparsityConfig fields {sorted(unknown)}")
    for k in ("include", "exclude"):
      if k in d and isinstance(d[k], str):
        d[k] = (d[k],)
    return cls(**d)

  @property
  def n_m(self) -> tuple[int, int] | None:
    return parse_n_m(self.pattern)

  @property
  def final_sparsity(self) -> float:
    nm = self.n_m
    return 1.0 - nm[0] / nm[1] if nm else self.sparsity


def parse_n_m(pattern: str) -> tuple[int, int] | None:
  """'2:4' -> (2, 4); anything not 'N:M' -> None. Requires 0 < N <= M."""
  m = re.fullmatch(r"(\d+):(\d+)", pattern)
  if not m:
    return None
  n, mm = int(m.group(1)), int(m.group(2))
  if not 0 < n <= mm:
    raise ValueError(f"pruning: N:M pattern needs 0 < N <= M, got {pattern!r}")
  return n, mm


# ---------------------------------------------------------------- schedule


def polynomial_sparsity(step, target: float, start_step: int, end_step: int,
                        update_freq: int = 1, initial: float = 0.0,
                        power: int = 3):
  """Zhu & Gupta (2017) sparsity in effect at optimizer step `step`.

  s = s_f + (s_i - s_f) * (1 - p)^power with p = (t' - t0) / (t1 - t0), where
  t' is the last pruning step <= step (pruning happens at t0, t0 + freq, ...,
  and at t1). Before t0 the sparsity is 0.

  Args:
    step: int scalar (traced or Python), the 0-based update count.
    target: final sparsity s_f in [0, 1).
    start_step, end_step: t0 < t1.
    update_freq: steps between pruning events.
    initial: s_i, sparsity at t0.
    power: exponent (3 in the paper).
  Returns:
    float32 scalar in [0, target].
  """
  step = jnp.asarray(step, jnp.int32)
  last = start_step + ((step - start_step) // update_freq) * update_freq
  last = jnp.where(step >= end_step, end_step, last)
  p = jnp.clip((last - start_step) / (end_step - start_step), 0.0, 1.0)
  s = target + (initial - target) * (1.0 - p) ** power
  return jnp.where(step < start_step, 0.0, s).astype(jnp.float32)


def is_pruning_step(step, config: SparsityConfig):
  """Bool scalar: does the update at `step` recompute the masks?"""
  step = jnp.asarray(step, jnp.int32)
  if config.schedule == "one_shot":
    return step == config.start_step
  on_grid = (step - config.start_step) % config.update_freq == 0
  return ((step >= config.start_step) & (step <= config.end_step)
          & (on_grid | (step == config.end_step)))


def sparsity_at(step, config: SparsityConfig):
  """Target sparsity (float32 scalar) of masks computed at `step`."""
  if config.schedule == "one_shot":
    return jnp.float32(config.sparsity)
  return polynomial_sparsity(step, config.sparsity, config.start_step,
                             config.end_step, config.update_freq)


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
