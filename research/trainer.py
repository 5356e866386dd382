"""The training loop, shared by every task.

Reads top to bottom: set up the workdir and config; build the task, data and
devices; restore or initialise the state; loop over steps with periodic
logging, evaluation and checkpointing; stop cleanly on SIGTERM/SIGINT or with
an error on a non-finite loss. The loop knows nothing about what it trains:
everything model-specific lives in the task (research/tasks/base.py).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from research import checkpoint, parallel, profiling, reporting, tasks
from research.checkpoint import NonFiniteLossError
from research.tasks.base import DataContext

log = logging.getLogger("research.trainer")


class ConfigMismatchError(ValueError):
  pass


# ---------------------------------------------------------------- workdir & config
def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


# Fields that may change between a run and its resumption without changing what is trained.
RESUMABLE_FIELDS = ("num_steps", "eval_every", "log_every", "checkpoint_every",
                    "keep_checkpoints", "progress", "parallel")
# Fields added after runs were saved without them: a saved config that lacks one
# holds its default (what those runs did).
ADDED_FIELD_DEFAULTS = {"grad_accum_steps": 1}


def check_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises ConfigMismatchError if `workdir` holds a run whose saved config differs."""
  path = os.path.join(workdir, "config.json")
  new = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    a, b = {**ADDED_FIELD_DEFAULTS, **_flat(old)}, _flat(new)
    diff = sorted(k for k in set(a) | set(b)
                  if a.get(k, "<missing>") != b.get(k, "<missing>")
                  and k.split(".")[0] not in RESUMABLE_FIELDS)
    if diff:
      lines = "\n".join(f"  {k}: saved {a.get(k, '<missing>')!r} != now {b.get(k, '<missing>')!r}"
                        for k in diff)
      raise ConfigMismatchError(
          f"workdir {workdir!r} holds a run with a different config; refusing to "
          f"resume it. Differing fields:\n{lines}\nUse a new --workdir, or "
          f"restore these values.")


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes the resolved config to workdir/config.json (process 0)."""
  path = os.path.join(workdir, "config.json")
  new = json.loads(config.to_json_best_effort())
  if parallel.is_main():
    os.makedirs(workdir, exist_ok=True)
    with open(path + ".tmp", "w") as f:
      json.dump(new, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def check_and_write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes config.json; refuses to resume a workdir whose saved config differs."""
  check_config(config, workdir)
  write_config(config, workdir)


# ---------------------------------------------------------------- loading a run
def load_state(workdir: str, config=None, step: int | None = None):
  """Loads a finished run's task state from its workdir (for sampling, metrics, teachers).

  Returns (task, state) with the state on one local device.
  """
  if config is None:
    with open(os.path.join(workdir, "config.json")) as f:
      config = ml_collections.ConfigDict(json.load(f))
  task = tasks.get_task(config.task, config)
  ctx = DataContext(global_batch_size=config.batch_size, seed=config.seed)
  it = task.train_data(ctx)
  example = jax.tree.map(lambda x: x[:max(1, len(x) // 8)], next(it))
  abstract = jax.eval_shape(lambda: task.init_state(jax.random.PRNGKey(config.seed), example))
  return task, checkpoint.restore_state(workdir, abstract, step)


class _StopSignal:
  """Turns SIGTERM/SIGINT into a flag the loop checks between steps."""

  def __init__(self):
    self.received = None

  @contextlib.contextmanager
  def installed(self):
    old = {}
    def handler(signum, frame):
      del frame
      self.received = signal.Signals(signum).name
    try:
      for s in (signal.SIGTERM, signal.SIGINT):
        old[s] = signal.signal(s, handler)
    except ValueError:  # not the main thread: leave signals alone
      pass
    try:
      yield self
    finally:
      for s, h in old.items():
        signal.signal(s, h)


def _first_nonfinite(history: list[tuple[int, dict]]) -> int | None:
  for step, m in history:
    if not math.isfinite(float(m["loss"])):
      return step
  return None


@contextlib.contextmanager
def _naming_the_field(config):
  """Prefixes a ValueError with the one config field whose string value it quotes.

  'Unknown model 'resnet9000'; ...' becomes 'model.name: Unknown model ...', so
  every set-up error names the field to fix and its value.
  """
  try:
    yield
  except ValueError as e:
    msg = str(e)
    fields = [k for k, v in _flat(config.to_dict()).items()
              if isinstance(v, str) and len(v) > 1 and repr(v) in msg]
    if len(fields) != 1 or msg.startswith(fields[0]):
      raise
    raise ValueError(f"{fields[0]}: {msg}") from e


def _set_up(config):
  """Builds and checks everything a run needs before its first step.

  Returns (task, train iterator, {name: eval batches}, DataParallel, train rng,
  initial state); raises ValueError naming the config field for a bad task, model,
  dataset, few-shot size, augmentation, optimizer or batch size.
  """
  profiling.parse(config.get("profile_steps", ""))
  with _naming_the_field(config):
    task = tasks.get_task(config.task, config)
    per_device = _check_batch_size(config)
    ctx = DataContext(global_batch_size=config.batch_size, process_index=jax.process_index(),
                      process_count=jax.process_count(), seed=config.seed)
    train_iter = task.train_data(ctx)
    eval_sets = task.eval_data(ctx)
    if callable(eval_sets):
      eval_sets = {"": eval_sets}
    dp = parallel.DataParallel(task.train_step, task.eval_step,
                               mode=config.get("parallel", "pmap"))
    # Initialise with the shapes of one per-device batch; the iterator is rewound.
    start = train_iter.get_state()
    example = jax.tree.map(lambda x: x[:per_device], next(train_iter))
    train_iter.set_state(start)
    init_rng, train_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    state = task.init_state(init_rng, example)
  return task, train_iter, eval_sets, dp, train_rng, state


def _check_batch_size(config) -> int:
  """The per-device batch size; ValueError naming batch_size unless devices split it
  evenly, and naming batch_size and grad_accum_steps unless that divides it."""
  b = config.get("batch_size")
  if isinstance(b, bool) or not isinstance(b, int) or b <= 0:
    raise ValueError(f"batch_size={b!r}: must be a positive integer (a multiple of the "
                     f"device count {jax.device_count()})")
  per_device = parallel.check_batch_size(b)
  accum = config.get("grad_accum_steps", 1)
  if isinstance(accum, int) and accum > 1 and per_device % accum:
    raise ValueError(f"batch_size={b} ({per_device} per device on {jax.device_count()} "
                     f"device(s)) is not divisible by grad_accum_steps={accum}: each "
                     f"device's batch is split into grad_accum_steps micro-batches")
  return per_device


# ---------------------------------------------------------------- main entry
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       cluster: dict[str, Any] | None = None) -> dict[str, Any]:
  """Trains `config.task` as the config says, in `workdir`; returns the final eval metrics.

  Multi-host: `cluster` (coordinator_address, num_processes, process_id) or
  `config.distributed=True` (cluster detected from the environment) start
  `jax.distributed` here, the one place a run starts it (parallel.start_distributed).
  SIGTERM/SIGINT (from set-up on) save a checkpoint at the next step and return.
  """
  if cluster:
    parallel.start_distributed(**cluster)
  elif config.get("distributed", False) and jax.process_count() == 1:
    parallel.start_distributed()
  stop = _StopSignal()
  with stop.installed():
    return _train_and_evaluate(config, workdir, stop)


def _train_and_evaluate(config, workdir, stop) -> dict[str, Any]:
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  # Refuse a mismatched resume now; write config.json only once the first step has
  # run, so a config that fails anywhere in set-up leaves no trace to mismatch.
  check_config(config, workdir)

  task, train_iter, eval_sets, dp, train_rng, state = _set_up(config)
  start = train_iter.get_state()
  mngr = checkpoint.make_checkpoint_manager(workdir, config)
  step = 0
  abstract = (jax.device_get(state) if jax.process_count() > 1
              else jax.tree.map(ocp.utils.to_shape_dtype_struct, state))
  restored = checkpoint.restore_checkpoint(mngr, abstract, train_iter.set_state)
  if restored is None:
    train_iter.set_state(start)  # a rejected checkpoint may have moved it
  else:
    step, state, _ = restored
    log.info("resumed from step %d", step)
    print(f"Resumed {workdir} from step {step}", flush=True)
  state = dp.put_state(state)

  writer = reporting.MetricWriter(workdir)
  num_steps = config.num_steps
  log_every = config.get("log_every", 50)
  eval_every = config.get("eval_every", 0) or num_steps
  ckpt_every = config.get("checkpoint_every", 0) or eval_every
  progress = reporting.Progress(num_steps, step,
                                config.get("progress", True) and parallel.is_main())
  history: list[tuple[int, dict]] = []
  final_eval: dict[str, Any] = {}
  t_last, step_last = time.perf_counter(), step

  def evaluate(state, step):
    result = {}
    for name, batches in eval_sets.items():
      sums = None
      for batch in batches():
        out = dp.eval_step(state, dp.put_batch(parallel.shard(parallel.pad_to_devices(batch))))
        sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
      prefix = f"{name}_" if name else ""
      result.update({prefix + k: v for k, v in task.summarize_eval(dp.to_host(sums)).items()})
    writer.write(step, "eval", dict(result))
    if parallel.is_main():
      task.on_eval(state, step, workdir)
    return result

  def flush_history(step):
    """Checks the losses since the last flush (one device sync) and logs their mean."""
    nonlocal history
    if not history:
      return {}
    host = jax.device_get(history)
    bad = _first_nonfinite(host)
    if bad is not None:
      raise NonFiniteLossError(
          f"non-finite loss at step {bad} ({host[bad - host[0][0]][1]['loss']}); "
          f"stopped. {checkpoint.last_checkpoint_note(mngr)}")
    means = {k: float(np.mean([m[k] for _, m in host])) for k in host[-1][1]}
    history = []
    return means

  config_written = False
  from research.transfer import fewshot_eval  # pylint: disable=g-import-not-at-top
  fewshot = fewshot_eval.for_run(config, task)  # None without a config.fewshot block
  profile = profiling.Window(config.get("profile_steps", ""), os.path.join(workdir, "profile"))
  batches = parallel.Prefetcher(train_iter, dp.put_batch, config.get("prefetch", 2))
  try:
    while step < num_steps:
      profile.step_begins(step)
      batch = next(batches)
      state, metrics = dp.train_step(state, batch, train_rng, np.int32(step))
      if not config_written:  # the run has started: the config is valid
        jax.block_until_ready(metrics)
        write_config(config, workdir)
        config_written = True
      step += 1
      profile.step_ended(step, (state, metrics))
      history.append((step, metrics))
      # Read the stop flag once per step: a signal landing between the save
      # decision and the exit below would otherwise exit without saving.
      stopping = stop.received
      boundary_eval = step % eval_every == 0 or step == num_steps
      boundary_ckpt = step % ckpt_every == 0 or boundary_eval or stopping
      if step % log_every == 0 or boundary_ckpt:
        means = flush_history(step)
        now = time.perf_counter()
        rate = (step - step_last) * config.batch_size / max(now - t_last, 1e-9)
        t_last, step_last = now, step
        means["images_per_sec"] = rate
        writer.write(step, "train", means)
        progress.update(step, {"loss": means.get("loss", float("nan")), "img/s": rate})
      eval_metrics = None
      if boundary_eval:
        eval_metrics = evaluate(state, step)
        final_eval = eval_metrics
      if fewshot is not None and fewshot.due(step):
        writer.write(step, "fewshot", fewshot(state))
      if boundary_ckpt:
        best = config.get("best_metric", "")
        checkpoint.save_checkpoint(mngr, step, state, batches.get_state(),
                        metrics={best: eval_metrics[best]} if (best and eval_metrics) else None)
      if stopping:
        mngr.wait_until_finished()
        msg = (f"Received {stopping}: saved a checkpoint at step {step} in "
               f"{workdir}/checkpoints; rerun the same command to resume.")
        print(msg, flush=True)
        writer.write(step, "preempted", {"signal": stopping})
        return {"preempted": True, "step": step, **final_eval}
    if not final_eval:  # resumed a finished run: report its metrics again
      final_eval = evaluate(state, step)
    if not config_written:
      write_config(config, workdir)
  finally:
    batches.close()
    profile.close()
    progress.close()
    mngr.wait_until_finished()
    mngr.close()
    writer.close()

  if parallel.is_main():
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump({"step": step, **final_eval}, f, indent=2)
  return {"step": step, **final_eval}
