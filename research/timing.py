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


# --------------------------------------------------------------------------
# The machine's limit: float32 matmul peak, and each step's share of it.


def compiled_flops(fn: Callable, *args: Any) -> float:
  """Floating-point operations of one call of `fn(*args)`, from XLA's cost analysis.

  `fn` is jitted (a jitted function is used as is), lowered for `args` and compiled;
  the 'flops' entry of the compiled program's cost analysis is returned. XLA counts a
  multiply-add as 2 flops (an [M, K] @ [K, N] matmul is 2 * M * N * K) and elementwise
  ops as 1 per element; a gradient step's count includes its backward pass.
  Raises ValueError when the backend reports no flop count.
  """
  import jax  # local: timing is also used by programs that only time PyTorch

  jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
  cost = jitted.lower(*args).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per device program
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    raise ValueError(f"timing.compiled_flops: the backend's cost analysis has no 'flops' "
                     f"entry, got {sorted(cost or {})}")
  return float(cost["flops"])


def matmul_peak_gflops(sizes: tuple[int, ...] = (512, 1024, 2048), repeats: int = 5,
                       budget_s: float = 3.0) -> dict[str, Any]:
  """This machine's float32 matmul rate through JAX (GFLOP/s): best median over sizes.

  For each n in `sizes`, an [n, n] @ [n, n] float32 `jnp.dot` (2 n^3 flops) is timed
  (median of `repeats` calls after one untimed call; fewer calls for a size whose first
  call exceeds budget_s / repeats). The best median rate is the practical peak that
  the model steps are compared with (`achieved_fraction`); it is a measured rate on the
  current load, not the CPU's datasheet figure.

  Returns:
    {'gflops': best GFLOP/s, 'size': the n that gave it, 'per_size': {n: GFLOP/s}}.
  """
  import jax
  import jax.numpy as jnp

  if not sizes or any((not isinstance(n, int)) or n < 1 for n in sizes):
    raise ValueError(f"timing.matmul_peak_gflops: sizes must be positive ints, got {sizes!r}")
  dot = jax.jit(jnp.dot)
  per_size = {}
  for n in sizes:
    key_a, key_b = jax.random.split(jax.random.key(n))
    a = jax.random.normal(key_a, (n, n), jnp.float32)
    b = jax.random.normal(key_b, (n, n), jnp.float32)
    t = interleaved({"dot": lambda r, a=a, b=b: dot(a, b)}, repeats, warmup=1,
                    budget_s=budget_s)["dot"]
    per_size[n] = 2.0 * n ** 3 / t.median / 1e9
  best = max(per_size, key=per_size.get)
  return {"gflops": per_size[best], "size": best, "per_size": per_size}


def achieved_fraction(flops: float, seconds: float, peak_gflops: float) -> dict[str, float]:
  """A step's achieved rate and its share of the machine's peak.

  Args:
    flops: operations of one step (`compiled_flops`), >= 0.
    seconds: the step's median wall time, > 0.
    peak_gflops: the machine's peak (`matmul_peak_gflops()['gflops']`), > 0.
  Returns:
    {'gflops': flops / seconds / 1e9, 'fraction': that / peak_gflops} (fraction in
    [0, 1] unless the step beats the measured matmul rate).
  """
  if flops < 0:
    raise ValueError(f"timing.achieved_fraction: flops must be >= 0, got {flops}")
  if seconds <= 0:
    raise ValueError(f"timing.achieved_fraction: seconds must be > 0, got {seconds}")
  if peak_gflops <= 0:
    raise ValueError(f"timing.achieved_fraction: peak_gflops must be > 0, got {peak_gflops}")
  gflops = flops / seconds / 1e9
  return {"gflops": gflops, "fraction": gflops / peak_gflops}
