"""Optimizer partitions for transfer: freezing and layer-wise learning rates.

Everything is an optax partition chosen by regular expressions over parameter
paths (`research.params`), not a special case in the model:

  * frozen parameters (regexes) get `optax.set_to_zero()` inside
    `optax.multi_transform`, so they receive no update AND hold no optimizer
    state (no momentum/Adam buffers);
  * layer-wise learning-rate decay (LLRD, as in BEiT/ELECTRA fine-tuning):
    a parameter at depth d counted from the top gets lr * decay**d; for
    EfficientNet the depth comes from the block index in the path;
  * `split_trainable`/`merge` let a train step differentiate only the
    trainable subtree, so frozen parameters cost no gradient computation
    (plain `optax.set_to_zero` alone still pays for their gradients).
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import jax
import optax

from research import params as params_lib

FROZEN = "frozen"


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


def make_optimizer(
    params: Any,
    base_tx_factory: Callable[[optax.ScalarOrSchedule], optax.GradientTransformation],
    learning_rate: optax.ScalarOrSchedule,
    frozen: Sequence[str] = (),
    lr_multipliers: Optional[Any] = None,
) -> optax.GradientTransformation:
  """An optimizer with frozen parameters and per-parameter learning rates.

  Args:
    params: the parameter tree (only its structure and names are used).
    base_tx_factory: lr -> transformation, e.g.
      `lambda lr: optax.sgd(lr, momentum=0.9)`; called once per distinct
      multiplier with `learning_rate` scaled by it (schedules are wrapped).
    learning_rate: a float or an optax schedule (step -> lr).
    frozen: regexes (full match) over parameter paths, e.g.
      ('stem_.*', 'block_[0-9]/.*'); a pattern matching nothing is an error.
    lr_multipliers: None (all 1) or a tree like `params` of floats, e.g.
      from `layerwise_lr_multipliers`.

  Returns:
    `optax.multi_transform` over labels FROZEN (-> set_to_zero, no state) and
    'lr_x<multiplier>_<k>' (-> base_tx_factory(lr * multiplier)).
  """
  frozen = [frozen] if isinstance(frozen, str) else list(frozen)
  if frozen:
    params_lib.check_patterns_match(frozen, params, "make_optimizer: frozen")
  if lr_multipliers is None:
    lr_multipliers = jax.tree.map(lambda _: 1.0, params)
  is_frozen = params_lib.flatten(params_lib.match(frozen, params)) if frozen \
      else {}
  mults = params_lib.flatten(lr_multipliers)

  labels_of = {}  # multiplier -> label

  def label(name, _):
    if is_frozen.get(name, False):
      return FROZEN
    m = float(mults[name])
    return labels_of.setdefault(m, f"lr_x{m:g}_{len(labels_of)}")
  labels = params_lib.tree_map_with_names(label, params)

  transforms = {FROZEN: optax.set_to_zero()}
  for m, name in labels_of.items():
    if callable(learning_rate):
      lr = (lambda m: lambda step: learning_rate(step) * m)(m)
    else:
      lr = learning_rate * m
    transforms[name] = base_tx_factory(lr)
  return optax.multi_transform(transforms, labels)


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
