"""What magnitude pruning prunes, how much and when: the `SparsityConfig` and
its schedule (research.compress.pruning builds the masks and the optax wrapper).

Patterns: 'unstructured', 'channel', 'N:M' (e.g. '2:4'); distribution across
layers: 'uniform' or 'global' (unstructured only); schedules: 'one_shot'
(prune once at `start_step`) or 'gradual' (Zhu & Gupta 2017: s_t = s_f * (1 -
(1 - (t - t0) / (t1 - t0))^3), updated every `update_freq` steps from
`start_step` to `end_step`). See research/compress/pruning.py for what each
pattern's mask looks like.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import jax.numpy as jnp

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
