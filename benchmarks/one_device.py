"""Ours, in the side-by-side benchmarks against PyTorch: a task's jitted
`train_step` (and `eval_step`) through `research.parallel`'s pmap engine on one
CPU device, with the trainer's key protocol (`init, train = split(PRNGKey(seed))`,
per-step keys folded from the step), i.e. what `research.trainer` runs, without
its logging, evaluation schedule and checkpoints.

`match_torch_threads` gives PyTorch the same number of threads;
`write_results` writes a benchmark's table and JSON.

Loaded by benchmarks/bench_vae_torch.py and bench_gan_torch.py with
`research.config_lib.load_module` (they also run as imported modules in tests).
"""
from __future__ import annotations

import json
import os

import numpy as np


def match_torch_threads(torch, threads: int) -> int:
  """`torch.set_num_threads(threads)`, with a warning when XLA's CPU pool (sized
  to the visible cores) differs; returns the number of visible cores."""
  torch.set_num_threads(threads)
  cores = len(os.sched_getaffinity(0))
  if threads != cores:
    print(f"WARNING: torch uses {threads} threads but XLA's pool has {cores} "
          f"(visible cores); run under `taskset -c 0-{threads - 1}` to match.", flush=True)
  return cores


def write_results(stems, table: str, result: dict, note: str = "") -> None:
  """`table` to STEM.md and `result` to STEM.json for each path stem in `stems`."""
  for stem in stems:
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    with open(stem + ".md", "w") as f:
      f.write(table)
    with open(stem + ".json", "w") as f:
      json.dump(result, f, indent=2)
    print(f"wrote {stem}.md and .json{note}", flush=True)


class OneDeviceRun:
  """`task`, `dp` (the engine), `state` (on the device), `init_state` (host copy of
  the initial state) and `step`; `train_step(images, labels)` returns the metrics.
  `example`: a batch for `init_state`; `task`: the task object, if already built."""

  def __init__(self, config, seed: int, example: dict, with_eval: bool = False, task=None):
    import jax  # pylint: disable=g-import-not-at-top
    from research import parallel, tasks  # pylint: disable=g-import-not-at-top
    self.jax, self.parallel, self.config = jax, parallel, config
    self.task = task if task is not None else tasks.get_task(config.task, config)
    self.dp = parallel.DataParallel(self.task.train_step,
                                    self.task.eval_step if with_eval else None,
                                    mode=config.get("parallel", "pmap"),
                                    devices=jax.local_devices()[:1])
    init_rng, self.train_rng = jax.random.split(jax.random.PRNGKey(seed))
    self.state = self.task.init_state(init_rng, example)
    self.init_state = jax.device_get(self.state)
    self.state = self.dp.put_state(self.state)
    self.step = 0

  def train_step(self, images: np.ndarray, labels: np.ndarray):
    """One step on uint8 [N, H, W, C] images and int labels [N]; returns the metrics."""
    batch = self.parallel.shard({"image": images, "label": labels}, 1)
    self.state, metrics = self.dp.train_step(self.state, self.dp.put_batch(batch),
                                             self.train_rng, np.int32(self.step))
    self.step += 1
    return metrics
