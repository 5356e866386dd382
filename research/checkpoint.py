"""Checkpoints: orbax saves of the training state and the data-iterator position,
each with the sha256 of every array, verified (and the state checked finite) on
restore; an unusable checkpoint is moved aside and the previous one is used.

`restore_state(workdir, abstract)` reads a finished run's newest checkpoint onto
one local device: what `trainer.load_state` and the distillation teacher use.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

from research import params as params_lib
from research import parallel

log = logging.getLogger("research.checkpoint")


class NonFiniteLossError(FloatingPointError):
  """The loss or the state became non-finite; nothing non-finite is ever saved."""


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
                             f"{last_checkpoint_note(mngr)}")
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
      if parallel.is_main():
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        os.replace(os.path.join(str(mngr.directory), str(step)), aside)
      mngr.reload()
      msg = (f"checkpoint at step {step} in {mngr.directory} is unreadable "
             f"({type(e).__name__}: {str(e)[:200]}); moved it to {aside} and "
             f"falling back to the previous one")
      log.warning(msg)
      print(f"WARNING: {msg}", flush=True)
  return None


def last_checkpoint_note(mngr) -> str:
  """Names the newest checkpoint on disk (each was verified finite when saved or restored)."""
  mngr.wait_until_finished()
  mngr.reload()
  steps = mngr.all_steps()
  if not steps:
    return f"No checkpoint has been saved in {mngr.directory} yet."
  return (f"The last good checkpoint (step {max(steps)}) is kept in {mngr.directory}; "
          f"rerunning resumes from it.")


def restore_state(workdir: str, abstract_state, step: int | None = None):
  """The state of checkpoint `step` (default: the newest) of the run in `workdir`.

  `abstract_state`: the state's structure (e.g. `jax.eval_shape` of the task's
  `init_state`). The arrays land on one local device
  (`parallel.restore_sharding`) whatever device count the run was saved with,
  and are verified against their saved sha256 (CheckpointError if altered).
  FileNotFoundError if the run has no checkpoint.
  """
  device = parallel.restore_sharding()
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          abstract_state)
  mngr = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                               options=ocp.CheckpointManagerOptions(read_only=True))
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints")
  state, _ = _read_checkpoint(mngr, step, abstract)
  return state
