"""Optimizers built from a config, composed from optax pieces.

Parameter subsets (weight-decay mask, frozen parameters, learning-rate
multipliers) are chosen by regular expressions over parameter paths through
`research.params`, as big_vision's `optax.make` does:

  optimizer.name: 'sgd' | 'momentum' | 'nesterov' | 'adam' | 'adamw'
  optimizer.lr, optimizer.schedule ('constant' | 'cosine' | 'linear' | 'anneal'),
    optimizer.warmup_steps; 'anneal' is DANN's lr / (1 + anneal_alpha p)^anneal_beta
    (p = progress in [0, 1] after warm-up; optimizer.anneal_alpha 10, anneal_beta 0.75)
  optimizer.weight_decay, optimizer.wd_pattern (decoupled decay on matching params)
  optimizer.grad_clip_norm (0 = off)
  optimizer.frozen: list of regexes; matching params get no update and no optimizer state
  optimizer.lr_mults: list of (regex, multiplier); first match wins, others x1

Gradient clipping is global over the trainable parameters (frozen gradients
are zeroed before the norm is taken), so learning-rate multiplier groups do
not each get clipped on their own.
"""
from __future__ import annotations

from typing import Any, Sequence

import optax

from research import params as P

_SCHEDULES = ("constant", "cosine", "linear", "anneal")
_NAMES = ("sgd", "momentum", "nesterov", "adam", "adamw")


def schedule(lr: float, kind: str, num_steps: int, warmup_steps: int = 0,
             anneal_alpha: float = 10.0, anneal_beta: float = 0.75) -> optax.Schedule:
  """Learning rate over steps: optional linear warm-up, then constant / cosine / linear
  decay or DANN's annealing lr / (1 + alpha p)^beta (Ganin & Lempitsky, 2015)."""
  if kind not in _SCHEDULES:
    raise ValueError(f"optimizer.schedule must be one of {_SCHEDULES}, got {kind!r}")
  decay_steps = max(num_steps - warmup_steps, 1)
  main = {"constant": optax.constant_schedule(lr),
          "cosine": optax.cosine_decay_schedule(lr, decay_steps),
          "linear": optax.linear_schedule(lr, 0.0, decay_steps),
          "anneal": lambda step: lr / (1.0 + anneal_alpha * step / decay_steps) ** anneal_beta,
          }[kind]
  if warmup_steps:
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup_steps), main],
                                [warmup_steps])
  return main


def _base(name: str, lr, cfg) -> optax.GradientTransformation:
  if name not in _NAMES:
    raise ValueError(f"optimizer.name must be one of {_NAMES}, got {name!r}")
  if name == "sgd":
    return optax.sgd(lr)
  if name in ("momentum", "nesterov"):
    return optax.sgd(lr, momentum=cfg.get("momentum", 0.9), nesterov=name == "nesterov")
  return optax.adam(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999))


def make(cfg, params: Any, num_steps: int, frozen: Sequence[str] | None = None,
         lr_mults: Sequence[tuple[str, float]] | None = None) -> optax.GradientTransformation:
  """The optimizer `cfg` describes, for parameter tree `params` (used for the masks).

  `frozen` / `lr_mults`, when given, replace `cfg.frozen` / `cfg.lr_mults`
  (a task that expands its own config fields, e.g. classify's
  `optimizer.layer_decay` or `bn_mode`, passes the expanded lists).
  """
  frozen = tuple(cfg.get("frozen", ()) or ()) if frozen is None else tuple(frozen)
  lr_mults = tuple(cfg.get("lr_mults", ()) or ()) if lr_mults is None else tuple(lr_mults)
  lr = schedule(cfg.lr, cfg.get("schedule", "cosine"), num_steps, cfg.get("warmup_steps", 0),
                cfg.get("anneal_alpha", 10.0), cfg.get("anneal_beta", 0.75))
  parts = []
  wd = cfg.get("weight_decay", 0.0)
  if wd:
    pattern = cfg.get("wd_pattern", r".*kernel")
    P.check_patterns_match(pattern, params, "optimizer.wd_pattern")
    parts.append(optax.add_decayed_weights(wd, mask=P.match(pattern, params)))
  parts.append(_base(cfg.name, lr, cfg))
  tx = partitioned(optax.chain(*parts), params, frozen=frozen, lr_mults=lr_mults)
  if cfg.get("grad_clip_norm", 0.0):
    clip = optax.clip_by_global_norm(cfg.grad_clip_norm)
    if frozen:  # stateless: zero frozen gradients so they do not enter the norm
      clip = optax.chain(optax.masked(optax.set_to_zero(), P.match(frozen, params)), clip)
    tx = optax.chain(clip, tx)
  return tx


def partitioned(tx: optax.GradientTransformation, params: Any,
                frozen: Sequence[str] = (),
                lr_mults: Sequence[tuple[str, float]] = ()) -> optax.GradientTransformation:
  """Wraps `tx` so that `frozen` params get no update and no state and
  `lr_mults` scale the updates of matching params (first match wins).

  With plain SGD a multiplier m is exactly an m-times learning rate; with
  adaptive optimizers it scales the step, which is what layer-wise
  learning-rate decay asks for.
  """
  if not frozen and not lr_mults:
    return tx
  for pattern in frozen:
    P.check_patterns_match(pattern, params, "optimizer.frozen")
  rules = [(p, "frozen") for p in frozen]
  rules += [(p, f"mult{i}") for i, (p, _) in enumerate(lr_mults)]
  labels = P.partition(rules, params, default="train")
  transforms = {"frozen": optax.set_to_zero(), "train": tx}
  for i, (_, m) in enumerate(lr_mults):
    transforms[f"mult{i}"] = optax.chain(tx, optax.scale(float(m)))
  used = set(P.flatten(labels).values())
  return optax.multi_transform({k: v for k, v in transforms.items() if k in used}, labels)
