"""Side-by-side timing for the benchmark programs (benchmarks/*.py).

Peers are timed in interleaved rounds: each round calls every peer once, the
order rotating by round, so a change in machine load during a run falls on
all peers alike. The first call of each peer (compilation, warm-up) is never
timed. Report medians, and the CPU the numbers came from (`cpu_model()`).

  times = timing.interleaved({'ours': ours_step, 'torch': torch_step}, repeats=7)
  print(timing.cpu_model(), times['ours'].median / times['torch'].median)
"""
from __future__ import annotations

import dataclasses
import platform
import statistics
import subprocess
import time
from typing import Any, Callable, Mapping


@dataclasses.dataclass
class Timings:
  """Per-call wall and process-CPU seconds of one peer, and (optionally) its outputs."""
  wall: list[float] = dataclasses.field(default_factory=list)
  cpu: list[float] = dataclasses.field(default_factory=list)
  outputs: list[Any] = dataclasses.field(default_factory=list)

  @property
  def median(self) -> float:
    return statistics.median(self.wall)

  @property
  def count(self) -> int:
    return len(self.wall)


def block(tree: Any) -> Any:
  """Waits for every array in `tree` that can be waited for (JAX arrays); returns it."""
  if hasattr(tree, "block_until_ready"):
    tree.block_until_ready()
  elif isinstance(tree, (tuple, list)):
    for x in tree:
      block(x)
  elif isinstance(tree, dict):
    for x in tree.values():
      block(x)
  return tree


def interleaved(fns: Mapping[str, Callable[[int], Any]], repeats: int, warmup: int = 1,
                budget_s: float | None = None, keep_outputs: bool = False,
                on_round: Callable[[int, dict[str, Timings]], None] | None = None
                ) -> dict[str, Timings]:
  """Times `fns[name](round_index)` in `repeats` interleaved rounds.

  Args:
    fns: name -> callable taking the round index (use it for a fresh key or
      batch per call, or ignore it); its result is blocked on (`block`).
    repeats: timed rounds.
    warmup: untimed calls of each peer first (>= 1 covers compilation).
    budget_s: if given, a peer whose warm-up call took t seconds is timed
      only max(1, budget_s / t) times, so one slow peer cannot dominate
      the run time.
    keep_outputs: keep each timed call's result in `Timings.outputs`.
    on_round: called after each round with (round index, timings so far).
  Returns:
    name -> Timings.
  """
  if repeats < 1:
    raise ValueError(f"timing.interleaved: repeats must be >= 1, got {repeats}")
  names = list(fns)
  counts = dict.fromkeys(names, repeats)
  for name in names:
    for w in range(warmup):
      t = time.perf_counter()
      block(fns[name](-1 - w))
      first = time.perf_counter() - t
    if budget_s is not None and warmup:
      counts[name] = max(1, min(repeats, int(budget_s / max(first, 1e-3))))
  out = {name: Timings() for name in names}
  for r in range(repeats):
    order = names[r % len(names):] + names[:r % len(names)]
    for name in order:
      if out[name].count >= counts[name]:
        continue
      t, c = time.perf_counter(), time.process_time()
      y = block(fns[name](r))
      out[name].wall.append(time.perf_counter() - t)
      out[name].cpu.append(time.process_time() - c)
      if keep_outputs:
        out[name].outputs.append(y)
    if on_round is not None:
      on_round(r, out)
  return out


def cpu_model() -> str:
  """The CPU's model name (lscpu's 'Model name'; platform.processor() as fallback)."""
  try:
    text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    for line in text.splitlines():
      if line.startswith("Model name:"):
        return line.split(":", 1)[1].strip()
  except (OSError, subprocess.SubprocessError):
    pass
  return platform.processor() or "unknown CPU"
