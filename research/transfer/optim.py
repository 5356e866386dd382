"""What fine-tuning adds to the config-driven optimizer (`research.optim`).

The partitions themselves (frozen regexes -> `optax.set_to_zero()` with no
state, `(regex, multiplier)` learning-rate rules) are built in one place,
`research.optim.make` / `partitioned`. This module only produces their inputs
and the matching train-step plumbing:

  * layer-wise learning-rate decay (LLRD, as in BEiT/ELECTRA fine-tuning):
    a parameter at depth d counted from the top gets lr * decay**d; for
    EfficientNet the depth comes from the block index in the path
    (`efficientnet_lr_multipliers`, turned into rules by `lr_mult_rules`);
  * `batchnorm_affine_patterns`: the BatchNorm scale/bias to freeze for a
    fully frozen BatchNorm;
  * `split_trainable`/`merge` let a train step differentiate only the
    trainable subtree, so frozen parameters cost no gradient computation
    (plain `optax.set_to_zero` alone still pays for their gradients).
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping

from research import params as params_lib


def efficientnet_depth_from_top(name: str, num_blocks: int) -> int:
  """Depth of an EfficientNet-Lite parameter counted from the output.

  'head/*' -> 0, 'top_conv|top_bn/*' -> 1, 'block_{i}/*' -> num_blocks + 1 - i
  (so the last block is 2), 'stem_*' -> num_blocks + 2.
  """
  if name.startswith("head/"):
    return 0
  if name.startswith(("top_conv/", "top_bn/")):
    return 1
  m = re.match(r"block_(\d+)/", name)
  if m:
    i = int(m.group(1))
    if not 0 <= i < num_blocks:
      raise ValueError(f"efficientnet_depth_from_top: block index {i} in "
                       f"{name!r} outside [0, {num_blocks})")
    return num_blocks + 1 - i
  if name.startswith(("stem_conv/", "stem_bn/")):
    return num_blocks + 2
  raise ValueError(f"efficientnet_depth_from_top: cannot place {name!r}; "
                   "expected head/, top_*/, block_{i}/ or stem_*/")


def layerwise_lr_multipliers(params: Any, decay: float,
                             depth_fn: Callable[[str], int]) -> Any:
  """A tree of multipliers decay**depth_fn(name), same structure as `params`."""
  if not 0.0 < decay <= 1.0:
    raise ValueError(f"layerwise_lr_multipliers: decay must be in (0, 1], "
                     f"got {decay}")
  return params_lib.tree_map_with_names(
      lambda name, _: float(decay) ** depth_fn(name), params)


def efficientnet_lr_multipliers(params: Any, decay: float) -> Any:
  """LLRD multipliers for an EfficientNet-Lite params tree (blocks counted
  from the names): head 1, top decay, last block decay**2, ..., stem
  decay**(num_blocks + 2)."""
  blocks = {int(m.group(1)) for name in params_lib.flatten(params)
            if (m := re.match(r"block_(\d+)/", name))}
  n = max(blocks) + 1 if blocks else 0
  return layerwise_lr_multipliers(
      params, decay, lambda name: efficientnet_depth_from_top(name, n))


def lr_mult_rules(multipliers: Any) -> list[tuple[str, float]]:
  """A multiplier tree -> `optimizer.lr_mults` rules [(regex, multiplier)].

  One rule per top-level module whose leaves share a multiplier
  ('block_3/.*'), else one rule per leaf (its escaped path); multipliers of 1
  need no rule. The rules reproduce the tree exactly under
  `research.optim.partitioned` (first full match wins).
  """
  by_module: dict[str, dict[str, float]] = {}
  for name, m in params_lib.flatten(multipliers).items():
    by_module.setdefault(name.split("/")[0], {})[name] = float(m)
  rules = []
  for module, leaves in by_module.items():
    values = set(leaves.values())
    if len(values) == 1:
      m = values.pop()
      if m != 1.0:
        rules.append((re.escape(module) + "/.*", m))
    else:
      rules += [(re.escape(name), m) for name, m in leaves.items() if m != 1.0]
  return rules


def efficientnet_layer_decay_rules(params: Any, decay: float
                                   ) -> list[tuple[str, float]]:
  """`optimizer.lr_mults` rules for layer-wise LR decay of an EfficientNet-Lite:
  head x1, top_* x decay, block_{n-1} x decay**2, ..., stem x decay**(n+2)."""
  return lr_mult_rules(efficientnet_lr_multipliers(params, decay))


def batchnorm_affine_patterns(batch_stats: Any) -> list[str]:
  """Regexes for the scale/bias params of every BatchNorm with running stats.

  A module holds `batch_stats` exactly when it is a BatchNorm, so this needs no
  naming convention: {'stem_bn': {'mean', 'var'}} -> ['stem_bn/(scale|bias)'].
  """
  modules = sorted({name.rsplit("/", 1)[0]
                    for name in params_lib.flatten(batch_stats)})
  return [re.escape(m) + "/(scale|bias)" for m in modules]


def split_trainable(params: Mapping[str, Any], frozen: Iterable[str]
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
  """Splits a nested dict into (trainable, frozen) nested dicts by regex.

  Each output keeps only the leaves of its kind (empty sub-dicts removed),
  so `jax.grad(loss)(trainable, frozen, ...)` differentiates only the
  trainable leaves and XLA can skip the backward pass of frozen ones.
  `merge(trainable, frozen)` restores the original tree.
  """
  frozen = [frozen] if isinstance(frozen, str) else list(frozen)
  if frozen:
    params_lib.check_patterns_match(frozen, params, "split_trainable: frozen")
  mask = params_lib.flatten(params_lib.match(frozen, params)) if frozen else {}

  def split(tree, prefix, want_frozen):
    out = {}
    for k, v in tree.items():
      name = f"{prefix}{k}"
      if isinstance(v, Mapping):
        sub = split(v, name + "/", want_frozen)
        if sub:
          out[k] = sub
      elif mask.get(name, False) == want_frozen:
        out[k] = v
    return out
  return split(params, "", False), split(params, "", True)


def merge(trainable: Mapping[str, Any], frozen: Mapping[str, Any]
          ) -> dict[str, Any]:
  """Inverse of `split_trainable`: the union of two disjoint nested dicts."""
  out = dict(trainable)
  for k, v in frozen.items():
    if k in out:
      if not (isinstance(v, Mapping) and isinstance(out[k], Mapping)):
        raise ValueError(f"merge: key {k!r} is in both trees as a leaf")
      out[k] = merge(out[k], v)
    else:
      out[k] = v
  return out
