"""research.timing: interleaved rounds, untimed warm-up, the per-peer budget."""
import time

import pytest

from research import timing


def test_rounds_rotate_and_warmup_is_not_timed():
  calls = []
  fns = {name: (lambda r, name=name: calls.append((name, r))) for name in ("a", "b", "c")}
  out = timing.interleaved(fns, repeats=3, warmup=2)
  warm, timed = calls[:6], calls[6:]
  assert [r for _, r in warm] == [-1, -2] * 3  # two untimed calls per peer first
  assert [n for n, _ in timed] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
  assert all(out[n].count == 3 and len(out[n].cpu) == 3 for n in fns)


def test_budget_limits_a_slow_peer_and_outputs_are_kept():
  fns = {"fast": lambda r: r, "slow": lambda r: time.sleep(0.05) or r}
  out = timing.interleaved(fns, repeats=6, budget_s=0.1, keep_outputs=True)
  assert out["fast"].count == 6 and out["fast"].outputs == list(range(6))
  assert 1 <= out["slow"].count <= 2
  assert out["slow"].median >= 0.05 > out["fast"].median


def test_on_round_sees_each_round_and_bad_repeats_is_refused():
  seen = []
  timing.interleaved({"a": lambda r: None}, repeats=2, on_round=lambda r, t: seen.append(
      (r, t["a"].count)))
  assert seen == [(0, 1), (1, 2)]
  with pytest.raises(ValueError, match="repeats must be >= 1, got 0"):
    timing.interleaved({"a": lambda r: None}, repeats=0)


def test_cpu_model_is_a_name():
  assert isinstance(timing.cpu_model(), str) and timing.cpu_model()


def test_compiled_flops_of_a_matmul_is_2mnk():
  import jax.numpy as jnp
  m, k, n = 48, 80, 24
  a, b = jnp.ones((m, k), jnp.float32), jnp.ones((k, n), jnp.float32)
  assert timing.compiled_flops(jnp.dot, a, b) == 2 * m * n * k
  # Batched: 2 * B * M * N * K.
  ab, bb = jnp.ones((3, m, k), jnp.float32), jnp.ones((3, k, n), jnp.float32)
  assert timing.compiled_flops(lambda x, y: x @ y, ab, bb) == 2 * 3 * m * n * k


def test_achieved_fraction_arithmetic_and_refusals():
  out = timing.achieved_fraction(6e9, 0.5, 48.0)  # 12 GFLOP/s of a 48 GFLOP/s peak
  assert out["gflops"] == pytest.approx(12.0) and out["fraction"] == pytest.approx(0.25)
  with pytest.raises(ValueError, match="seconds must be > 0, got 0"):
    timing.achieved_fraction(1.0, 0, 1.0)
  with pytest.raises(ValueError, match="flops must be >= 0, got -1"):
    timing.achieved_fraction(-1, 1.0, 1.0)
  with pytest.raises(ValueError, match="peak_gflops must be > 0, got 0"):
    timing.achieved_fraction(1.0, 1.0, 0)


def test_matmul_peak_is_the_best_size_rate():
  out = timing.matmul_peak_gflops(sizes=(64, 128), repeats=2, budget_s=0.5)
  assert set(out["per_size"]) == {64, 128}
  assert out["gflops"] == max(out["per_size"].values()) > 0
  assert out["per_size"][out["size"]] == out["gflops"]
  with pytest.raises(ValueError, match=r"sizes must be positive ints, got \(0,\)"):
    timing.matmul_peak_gflops(sizes=(0,))
