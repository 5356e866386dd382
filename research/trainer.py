"""The training loop, shared by every task.

Reads top to bottom: set up the workdir and config; build the task, data and
devices; restore or initialise the state; loop over steps with periodic
logging, evaluation and checkpointing; stop cleanly on SIGTERM/SIGINT or with
an error on a non-finite loss. The loop knows nothing about what it trains:
everything model-specific lives in the task (research/tasks/base.py).
"""
from __future__ import annotations

import contextlib
import hashlib
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
from orbax.checkpoint import checkpoint_managers as ocm

from research import params as params_lib
from research import parallel, profiling, tasks
from research.tasks.base import DataContext

log = logging.getLogger("research.trainer")


class NonFiniteLossError(FloatingPointError):
  pass


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


def check_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises ConfigMismatchError if `workdir` holds a run whose saved config differs."""
  path = os.path.join(workdir, "config.json")
  new = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    a, b = _flat(old), _flat(new)
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
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(path + ".tmp", "w") as f:
      json.dump(new, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def check_and_write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes config.json; refuses to resume a workdir whose saved config differs."""
  check_config(config, workdir)
  write_config(config, workdir)


class MetricWriter:
  """metrics.jsonl + TensorBoard; writes only on process 0."""

  def __init__(self, workdir: str):
    self.active = jax.process_index() == 0
    if not self.active:
      return
    self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    try:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    except ImportError:
      self.tb = None

  def write(self, step: int, split: str, values: dict[str, Any]) -> None:
    if not self.active:
      return
    row = {"step": int(step), "split": split, "time": time.time(), **values}
    self.jsonl.write(json.dumps(row) + "\n")
    self.jsonl.flush()
    if self.tb is not None:
      for k, v in values.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
          self.tb.add_scalar(f"{split}/{k}", v, step)
      self.tb.flush()

  def close(self):
    if self.active:
      self.jsonl.close()
      if self.tb is not None:
        self.tb.close()


# ---------------------------------------------------------------- checkpoints
def make_checkpoint_manager(workdir: str, config) -> ocp.CheckpointManager:
  """Orbax manager: async saves, keeps the last N plus the best by `config.best_metric`."""
  keep = config.get("keep_checkpoints", 2)
  policies = [ocm.LatestN(n=keep)]
  best = config.get("best_metric", "")
  if best:
    mode = config.get("best_mode", "max")
    if mode not in ("max", "min"):
      raise ValueError(f"best_mode must be 'max' or 'min', got {mode!r}")
    policies.append(ocm.BestN(get_metric_fn=lambda m: m[best], n=1,
                              reverse=mode == "min",
                              keep_checkpoints_without_metrics=False))
  options = ocp.CheckpointManagerOptions(
      preservation_policy=ocm.AnyPreservationPolicy(policies),
      enable_async_checkpointing=config.get("async_checkpointing", True),
      create=True)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                               options=options)


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be used: unreadable, altered since it was saved, or non-finite."""


def state_checksums(state) -> dict[str, str]:
  """{leaf path: sha256 of its dtype, shape and bytes} for every array of a host state."""
  out = {}
  for name, x in params_lib.flatten(state).items():
    x = np.ascontiguousarray(np.asarray(x))
    h = hashlib.sha256(f"{x.dtype.str}{x.shape}".encode())
    h.update(x.tobytes())
    out[name] = h.hexdigest()
  return out


# The checksums item's entry for the data-iterator state (not a valid leaf path).
DATA_CHECKSUM_KEY = "<data iterator state>"


def _json_sha256(value) -> str:
  return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
                        ).hexdigest()


def _nonfinite_leaves(state) -> list[str]:
  return [name for name, x in params_lib.flatten(state).items()
          if np.issubdtype(np.asarray(x).dtype, np.inexact) and not np.isfinite(x).all()]


def verify_state(state, checksums: dict[str, str] | None) -> None:
  """Raises CheckpointError if a restored host state is non-finite or differs from `checksums`."""
  bad = _nonfinite_leaves(state)
  if bad:
    raise CheckpointError(f"non-finite values in {len(bad)} array(s), first {bad[0]!r}")
  if checksums is None:
    return
  now = state_checksums(state)
  differ = sorted(k for k in set(now) | set(checksums) if now.get(k) != checksums.get(k))
  if differ:
    raise CheckpointError(f"sha256 mismatch in {len(differ)} array(s), first {differ[0]!r}: "
                          f"the files changed after they were saved")


def save_checkpoint(mngr, step: int, state, data_state: dict, metrics=None) -> None:
  """Saves the state, the data-iterator state and a sha256 of each (checked on restore).

  Raises NonFiniteLossError (and saves nothing) if the state holds a non-finite value, so
  every checkpoint on disk is finite.
  """
  host = jax.device_get(state)
  bad = _nonfinite_leaves(host)
  if bad:
    raise NonFiniteLossError(f"non-finite values in the state at step {step} ({len(bad)} "
                             f"array(s), first {bad[0]!r}); not saved. "
                             f"{_last_checkpoint_note(mngr)}")
  if jax.process_count() > 1:
    # pmap outputs are host-local arrays, which orbax cannot write across hosts;
    # the state is identical on every process, so write its host copy.
    state = host
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          data=ocp.args.JsonSave(data_state),
                                          checksums=ocp.args.JsonSave(
                                              {**state_checksums(host),
                                               DATA_CHECKSUM_KEY: _json_sha256(data_state)})),
            metrics=metrics, force=True)


def _read_checkpoint(mngr, step: int, abstract_state) -> tuple[Any, dict]:
  """(host-verified state, data state) of checkpoint `step`; CheckpointError if altered."""
  has_sums = os.path.isdir(os.path.join(str(mngr.directory), str(step), "checksums"))
  items = dict(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore())
  if has_sums:
    items["checksums"] = ocp.args.JsonRestore()
  restored = mngr.restore(step, args=ocp.args.Composite(**items))
  if not has_sums:
    log.warning("checkpoint at step %d has no checksums (written by an older version); "
                "only its finiteness is checked", step)
  sums = dict(restored.get("checksums") or {}) if has_sums else None
  if sums and DATA_CHECKSUM_KEY in sums:
    if sums.pop(DATA_CHECKSUM_KEY) != _json_sha256(restored["data"]):
      raise CheckpointError("sha256 mismatch in the data-iterator state: the file changed "
                            "after it was saved")
  verify_state(jax.device_get(restored["state"]), sums)
  return restored["state"], restored["data"]


def restore_checkpoint(mngr, abstract_state, set_data_state=None
                       ) -> tuple[int, Any, dict] | None:
  """Restores the newest usable checkpoint, falling back to older ones.

  A checkpoint is unusable if it cannot be read, its arrays differ from the sha256
  saved with them, it holds a non-finite value, or `set_data_state(data_state)`
  (the data iterator taking its saved position) raises. Unusable checkpoints are
  moved to `checkpoints_unreadable/` with a warning naming the step and the reason.
  """
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      state, data_state = _read_checkpoint(mngr, step, abstract_state)
      if set_data_state is not None:
        set_data_state(data_state)
      return step, state, data_state
    except Exception as e:  # pylint: disable=broad-except
      # Move it aside (kept for inspection) so the resumed run can save this step again.
      aside = os.path.join(os.path.dirname(str(mngr.directory)), "checkpoints_unreadable",
                           f"{step}_{int(time.time())}")
      if jax.process_index() == 0:
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        os.replace(os.path.join(str(mngr.directory), str(step)), aside)
      mngr.reload()
      msg = (f"checkpoint at step {step} in {mngr.directory} is unreadable "
             f"({type(e).__name__}: {str(e)[:200]}); moved it to {aside} and "
             f"falling back to the previous one")
      log.warning(msg)
      print(f"WARNING: {msg}", flush=True)
  return None


def load_state(workdir: str, config=None, step: int | None = None):
  """Loads a finished run's task state from its workdir (for sampling, metrics, teachers).

  Returns (task, state) with the state on the host.
  """
  if config is None:
    with open(os.path.join(workdir, "config.json")) as f:
      config = ml_collections.ConfigDict(json.load(f))
  task = tasks.get_task(config.task, config)
  ctx = DataContext(global_batch_size=config.batch_size, seed=config.seed)
  it = task.train_data(ctx)
  example = jax.tree.map(lambda x: x[:max(1, len(x) // 8)], next(it))
  abstract = jax.eval_shape(lambda: task.init_state(jax.random.PRNGKey(config.seed), example))
  # Restore onto one local device whatever device count the run was saved with.
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          abstract)
  mngr = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                               options=ocp.CheckpointManagerOptions(read_only=True))
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints")
  state, _ = _read_checkpoint(mngr, step, abstract)
  return task, state


# ---------------------------------------------------------------- progress
class Progress:
  """A one-line progress bar: step, loss, images/s and ETA (tqdm when interactive)."""

  def __init__(self, total: int, initial: int, enabled: bool):
    self.bar = None
    if enabled:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                      mininterval=1.0)

  def update(self, step: int, values: dict[str, float]):
    if self.bar is not None:
      self.bar.n = step
      self.bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=True)

  def close(self):
    if self.bar is not None:
      self.bar.close()


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


def _last_checkpoint_note(mngr) -> str:
  """Names the newest checkpoint on disk (each was verified finite when saved or restored)."""
  mngr.wait_until_finished()
  mngr.reload()
  steps = mngr.all_steps()
  if not steps:
    return f"No checkpoint has been saved in {mngr.directory} yet."
  return (f"The last good checkpoint (step {max(steps)}) is kept in {mngr.directory}; "
          f"rerunning resumes from it.")


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
  """The per-device batch size; ValueError naming batch_size unless devices split it evenly."""
  b = config.get("batch_size")
  if isinstance(b, bool) or not isinstance(b, int) or b <= 0:
    raise ValueError(f"batch_size={b!r}: must be a positive integer (a multiple of the "
                     f"device count {jax.device_count()})")
  return parallel.check_batch_size(b)


# ---------------------------------------------------------------- main entry
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains `config.task` as the config says, in `workdir`; returns the final eval metrics.

  SIGTERM/SIGINT (from set-up on) save a checkpoint at the next step and return.
  """
  stop = _StopSignal()
  with stop.installed():
    return _train_and_evaluate(config, workdir, stop)


def _train_and_evaluate(config, workdir, stop) -> dict[str, Any]:
  if config.get("distributed", False) and jax.process_count() == 1:
    parallel.initialize_distributed()
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  # Refuse a mismatched resume now; write config.json only once the first step has
  # run, so a config that fails anywhere in set-up leaves no trace to mismatch.
  check_config(config, workdir)

  task, train_iter, eval_sets, dp, train_rng, state = _set_up(config)
  start = train_iter.get_state()
  mngr = make_checkpoint_manager(workdir, config)
  step = 0
  abstract = (jax.device_get(state) if jax.process_count() > 1
              else jax.tree.map(ocp.utils.to_shape_dtype_struct, state))
  restored = restore_checkpoint(mngr, abstract, train_iter.set_state)
  if restored is None:
    train_iter.set_state(start)  # a rejected checkpoint may have moved it
  else:
    step, state, _ = restored
    log.info("resumed from step %d", step)
    print(f"Resumed {workdir} from step {step}", flush=True)
  state = dp.put_state(state)

  writer = MetricWriter(workdir)
  num_steps = config.num_steps
  log_every = config.get("log_every", 50)
  eval_every = config.get("eval_every", 0) or num_steps
  ckpt_every = config.get("checkpoint_every", 0) or eval_every
  progress = Progress(num_steps, step, config.get("progress", True) and jax.process_index() == 0)
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
    if jax.process_index() == 0:
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
          f"stopped. {_last_checkpoint_note(mngr)}")
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
        save_checkpoint(mngr, step, state, batches.get_state(),
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

  if jax.process_index() == 0:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump({"step": step, **final_eval}, f, indent=2)
  return {"step": step, **final_eval}
