"""Trainer overhead: research.trainer vs a minimal hand-written pmap loop.

Both train the same model (default: the mnist5k small CNN, batch 128) on the
same in-memory data. The trainer's steady-state step time is measured as
(time of a 2N-step run - time of an N-step run) / N, which cancels start-up,
compilation and the final eval/checkpoint; the minimal loop is timed after
compilation. Medians over repeats; overhead = ratio - 1.

  python benchmarks/bench_trainer.py [--steps 100] [--repeats 3] [--config configs/mnist5k_classify.py]

With --prefetch 0,2 it times the trainer with each device-prefetch depth instead
(interleaved per repeat) and reports each against the first, e.g. on an
input-heavy setting: --config.data.image_size=112 (larger batches to move).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time


def minimal_loop_step_time(config, steps: int) -> float:
  import jax
  import numpy as np
  from research import data, parallel
  from research.tasks import base, get_task
  task = get_task(config.task, config)
  ctx = base.DataContext(global_batch_size=config.batch_size, seed=config.seed)
  it = task.train_data(ctx)
  batches = [parallel.shard(next(it)) for _ in range(steps)]
  n = jax.local_device_count()
  state = task.init_state(jax.random.PRNGKey(0), jax.tree.map(lambda x: x[0], batches[0]))

  def step(state, batch, rng, i):  # the usual hand-written pmap step
    rng = jax.random.fold_in(jax.random.fold_in(rng, i), jax.lax.axis_index("batch"))
    return task.train_step(state, batch, rng)

  p_step = jax.pmap(step, axis_name="batch", in_axes=(None, 0, None, None), out_axes=None)
  rng = jax.random.PRNGKey(1)
  state, m = p_step(state, batches[0], rng, np.int32(0))  # compile
  jax.block_until_ready(state)
  t = time.perf_counter()
  for i, b in enumerate(batches):
    state, m = p_step(state, b, rng, np.int32(i))
  jax.block_until_ready((state, m))
  del data, n
  return (time.perf_counter() - t) / steps


def trainer_run_time(config, steps: int) -> float:
  from research import trainer
  c = config.copy_and_resolve_references()
  c.num_steps = steps
  c.eval_every = steps
  c.checkpoint_every = steps
  c.progress = False
  with tempfile.TemporaryDirectory() as d:
    t = time.perf_counter()
    trainer.train_and_evaluate(c, d)
    return time.perf_counter() - t


def compare_prefetch(config, args, depths) -> int:
  from research import timing
  times = {d: [] for d in depths}
  # One untimed run first: one-time costs (dataset preparation at a new image size,
  # caches) would otherwise land in the first repeat's longer run.
  trainer_run_time(config.copy_and_resolve_references(), args.steps)
  for r in range(args.repeats):
    for d in depths[r % len(depths):] + depths[:r % len(depths)]:  # rotate the order
      c = config.copy_and_resolve_references()
      c.prefetch = d
      times[d].append((trainer_run_time(c, 2 * args.steps) - trainer_run_time(c, args.steps))
                      / args.steps)
      print(f"repeat {r}: prefetch={d} {times[d][-1] * 1e3:.2f} ms/step", flush=True)
  base = statistics.median(times[depths[0]])
  print(f"\nCPU: {timing.cpu_model()}; model={config.model.name} batch={config.batch_size} "
        f"image_size={config.data.get('image_size', 0)} steps={args.steps} repeats={args.repeats}")
  print("| prefetch | ms/step (median) | vs prefetch=" + str(depths[0]) + " |\n|---|---|---|")
  for d in depths:
    m = statistics.median(times[d])
    print(f"| {d} | {m * 1e3:.2f} | {base / m:.3f}x |")
  return 0


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--config", default="configs/mnist5k_classify.py")
  p.add_argument("--steps", type=int, default=100)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--prefetch", default="",
                 help="comma-separated prefetch depths to compare (e.g. 0,2)")
  p.add_argument("--set", action="append", default=[],
                 help="field=value config override (repeatable)")
  args = p.parse_args(argv)
  from research import config_lib
  config = config_lib.load(args.config)
  config = config_lib.apply_overrides(config, dict(s.split("=", 1) for s in args.set))
  if args.prefetch:
    return compare_prefetch(config, args, [int(v) for v in args.prefetch.split(",")])
  minimal, ours = [], []
  for r in range(args.repeats):
    minimal.append(minimal_loop_step_time(config, args.steps))
    ours.append((trainer_run_time(config, 2 * args.steps) - trainer_run_time(config, args.steps))
                / args.steps)
    print(f"repeat {r}: minimal {minimal[-1] * 1e3:.2f} ms/step, trainer {ours[-1] * 1e3:.2f} ms/step",
          flush=True)
  m, o = statistics.median(minimal), statistics.median(ours)
  from research import timing
  print(f"\nCPU: {timing.cpu_model()}; model={config.model.name} batch={config.batch_size} "
        f"steps={args.steps} "
        f"repeats={args.repeats}")
  print(f"| loop | ms/step (median) |\n|---|---|\n| minimal pmap | {m * 1e3:.2f} |\n"
        f"| research.trainer | {o * 1e3:.2f} |")
  print(f"ratio trainer/minimal = {o / m:.3f}  (overhead {100 * (o / m - 1):+.1f}%)")


if __name__ == "__main__":
  sys.exit(main())
