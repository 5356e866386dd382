"""Data parallelism: the only module that maps a per-device step over devices.

A task writes `train_step(state, batch, rng)` for ONE device and uses only
this module's small API for what involves devices: `mean(tree)` (what must
agree across devices: gradients, statistics, metrics), `example_keys` /
`device_key` (randomness by global example or device index),
`batchnorm_axis_name()` (cross-device BatchNorm). Host side: `is_main()`,
`restore_sharding()` (where checkpoints are restored), `start_distributed`
(the one place multi-host runs start). This module runs the step:

* `mode='pmap'` (default): `jax.pmap` over the local devices, axis `AXIS`;
  the state is passed unreplicated (`in_axes=None`) and comes back
  unreplicated (`out_axes=None`); batches are `[local_devices, per_device, ...]`.
* `mode='shard_map'`: the same per-device function under
  `jax.jit(jax.shard_map(...))` over a 1-D mesh of all devices, the form JAX
  recommends for new code (pmap itself is now built on shard_map).

Both give each device its own PRNG key, folded from the step and the global
device index. The update therefore equals the 1-device update (within float
rounding; cross-device BatchNorm) only when the step draws nothing from that
key: classification-style tasks without dropout, augmentation or mixing. A task
that needs randomness independent of the device count derives one key per
example from the global example index instead (the GAN task does; its offset
is the device index times per_device: `example_keys`). Dropout, augmentation, mixing and the
VAE's sampling use the device key: their runs on different device counts are
equally valid samples, not equal.
Multi-host runs call `start_distributed` first (the trainer does); each process
feeds its local batch and collectives span all processes.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "batch"
MODES = ("pmap", "shard_map")


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None,
                           local_device_ids: Any = None) -> None:
  """Starts `jax.distributed` (multi-host). Arguments default to env/cluster detection.

  On the CPU, collectives across processes need the gloo implementation.
  """
  # Only affects CPU devices; must not query the backend before initialize().
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id,
                             local_device_ids=local_device_ids)


_distributed_started = False


def start_distributed(coordinator_address: str | None = None,
                      num_processes: int | None = None,
                      process_id: int | None = None) -> None:
  """The one place a run starts `jax.distributed` (multi-host); a no-op when started.

  With no arguments the cluster is detected from the environment; a process
  that already sees several processes (started elsewhere) is left alone.
  """
  global _distributed_started
  if _distributed_started:
    return
  initialize_distributed(coordinator_address, num_processes, process_id)
  _distributed_started = True


def is_main() -> bool:
  """Whether this is process 0, the one that writes logs, configs and pictures."""
  return jax.process_index() == 0


def restore_sharding() -> jax.sharding.Sharding:
  """Where a checkpoint is restored: the first local device, whatever device count
  it was saved with (the data-parallel engine replicates it afterwards)."""
  return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


# ---- inside a per-device step (under DataParallel's pmap / shard_map) ----
def mean(tree: Any) -> Any:
  """The mean of every leaf across devices: gradients, metrics, statistics."""
  return lax.pmean(tree, AXIS)


def batchnorm_axis_name() -> str:
  """The axis name a model's BatchNorm averages its batch statistics over
  (cross-device BatchNorm inside a DataParallel step)."""
  return AXIS


def device_key(key: jax.Array) -> jax.Array:
  """`key` folded with this device's global index: one key per device."""
  return jax.random.fold_in(key, lax.axis_index(AXIS))


def example_keys(key: jax.Array, n: int) -> jax.Array:
  """One key per example of this device's batch of `n`: uint32 [n, 2] (or typed keys [n]).

  Example i of device d gets fold_in(key, d * n + i), its global index, so the
  keys of a global batch do not depend on how many devices share it.
  """
  index = lax.axis_index(AXIS) * n + jnp.arange(n)
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, index)


def check_batch_size(global_batch_size: int) -> int:
  """Returns the per-device batch size; errors if the devices cannot split the batch."""
  n = jax.device_count()
  if global_batch_size % n:
    raise ValueError(
        f"batch_size {global_batch_size} is not divisible by the device count {n} "
        f"({jax.process_count()} process(es) x {jax.local_device_count()} local "
        f"devices); use a multiple of {n}")
  return global_batch_size // n


def shard(batch: Any, num_devices: int | None = None) -> Any:
  """Reshapes a process-local batch [B, ...] to [local_devices, B / local_devices, ...]."""
  n = num_devices or jax.local_device_count()

  def reshape(x):
    x = np.asarray(x)
    if x.shape[0] % n:
      raise ValueError(f"local batch of {x.shape[0]} examples is not divisible by "
                       f"the {n} local devices")
    return x.reshape((n, x.shape[0] // n) + x.shape[1:])

  return jax.tree.map(reshape, batch)


def pad_to_devices(batch: dict, num_devices: int | None = None) -> dict:
  """Pads a process-local eval batch so the local devices split it evenly.

  The padding repeats the first example with `mask` 0, so masked metrics
  count every real example exactly once whatever the eval batch size and
  device count (big_vision's approach). A batch without a 'mask' gets one
  (1 for the real examples). Batches that already split evenly are returned
  unchanged (their mask added if missing).
  """
  n = num_devices or jax.local_device_count()
  batch = {k: np.asarray(v) for k, v in batch.items()}
  size = len(next(iter(batch.values())))
  if "mask" not in batch:
    batch["mask"] = np.ones((size,), np.float32)
  pad = -size % n
  if not pad:
    return batch
  idx = np.concatenate([np.arange(size), np.zeros((pad,), np.int64)])
  out = {k: v[idx] for k, v in batch.items()}
  out["mask"] = np.concatenate([batch["mask"][:size], np.zeros((pad,), batch["mask"].dtype)])
  return out


def _with_device_rng(step_fn):
  """Gives the per-device fn a key unique to (step, global device index)."""

  def wrapped(state, batch, rng, step):
    rng = jax.random.fold_in(jax.random.fold_in(rng, step), lax.axis_index(AXIS))
    return step_fn(state, batch, rng)

  return wrapped


def _psum_eval(eval_fn):
  return lambda state, batch: lax.psum(eval_fn(state, batch), AXIS)


def _mesh(devices=None) -> Mesh:
  return Mesh(np.asarray(devices or jax.devices()), (AXIS,))


class DataParallel:
  """Runs per-device train/eval steps over all devices with one engine.

  Usage:
    dp = DataParallel(task.train_step, task.eval_step, mode=config.parallel)
    state = dp.put_state(state)
    state, metrics = dp.train_step(state, dp.put_batch(shard(batch)), rng, step)
    sums = dp.eval_step(state, dp.put_batch(shard(eval_batch)))
  """

  def __init__(self, train_step: Callable, eval_step: Callable | None = None,
               mode: str = "pmap", donate: bool = True, devices=None):
    """`devices`: the devices to use (default: all; a subset only on one host)."""
    if mode not in MODES:
      raise ValueError(f"parallel: mode must be one of {MODES}, got {mode!r}")
    self.mode = mode
    self.devices = list(devices) if devices is not None else None
    self.num_local_devices = len(self.devices) if devices is not None else jax.local_device_count()
    train = _with_device_rng(train_step)
    evaluate = _psum_eval(eval_step) if eval_step is not None else None
    if mode == "pmap":
      self.train_step = jax.pmap(train, axis_name=AXIS, in_axes=(None, 0, None, None),
                                 out_axes=None, devices=self.devices)
      self.eval_step = (jax.pmap(evaluate, axis_name=AXIS, in_axes=(None, 0), out_axes=None,
                                 devices=self.devices)
                        if evaluate else None)
    else:
      self.mesh = _mesh(self.devices)
      self._replicated = NamedSharding(self.mesh, P())
      self._sharded = NamedSharding(self.mesh, P(AXIS))
      squeeze = lambda b: jax.tree.map(lambda x: x[0], b)
      train_shard = jax.shard_map(
          lambda s, b, r, t: train(s, squeeze(b), r, t), mesh=self.mesh,
          in_specs=(P(), P(AXIS), P(), P()), out_specs=P(), check_vma=False)
      self.train_step = jax.jit(train_shard, donate_argnums=(0,) if donate else ())
      if evaluate:
        eval_shard = jax.shard_map(lambda s, b: evaluate(s, squeeze(b)), mesh=self.mesh,
                                   in_specs=(P(), P(AXIS)), out_specs=P(),
                                   check_vma=False)
        self.eval_step = jax.jit(eval_shard)
      else:
        self.eval_step = None

  def put_state(self, state: Any) -> Any:
    """Places the state replicated over the devices, as the step returns it.

    For pmap this matches the placement of the step's own output, so the
    second call does not compile the step again.
    """
    if self.mode == "pmap":
      local = NamedSharding(Mesh(np.asarray(self.devices or jax.local_devices()), (AXIS,)), P())
      return jax.device_put(state, local)
    if jax.process_count() == 1:
      return jax.device_put(state, self._replicated)
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(np.shape(x), self._replicated,
                                               lambda idx: np.asarray(x)[idx]), state)

  def put_batch(self, batch: Any) -> Any:
    """Places a sharded local batch [local_devices, per_device, ...] for this engine."""
    if self.mode == "pmap":
      return batch
    if jax.process_count() == 1:
      return jax.device_put(batch, self._sharded)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self._sharded, np.asarray(x)), batch)

  def to_host(self, tree: Any) -> Any:
    """Fetches a (replicated) output to host numpy."""
    return jax.tree.map(np.asarray, jax.device_get(tree))


class Prefetcher:
  """Iterates `put(shard(next(iterator)))` with the next `size` batches placed ahead.

  A background thread reads, shards and places the next batches on the
  devices while the current step runs (what `flax.jax_utils.prefetch_to_device`
  did). Resume stays exact: `get_state()` is the iterator's state after the
  last batch *consumed* (returned by `next`), not after the last one prefetched.
  The thread's exceptions are raised by `next`. `size=0` prefetches nothing
  (the same batches, read in the caller's thread).
  """

  def __init__(self, iterator, put: Callable[[Any], Any], size: int = 2):
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
      raise ValueError(f"prefetch={size!r}: must be an integer >= 0 (0 = off)")
    self._it, self._put, self._size = iterator, put, size
    self._state = iterator.get_state()
    self._queue = None
    self._stop = threading.Event()
    if size:
      self._queue = queue.Queue(maxsize=size)
      self._thread = threading.Thread(target=self._fill, daemon=True, name="prefetch")
      self._thread.start()

  def _read(self):
    batch = self._put(shard(next(self._it)))
    return batch, self._it.get_state()

  def _fill(self):
    try:
      while not self._stop.is_set():
        item = self._read()
        while not self._stop.is_set():
          try:
            self._queue.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
    except BaseException as e:  # pylint: disable=broad-except  # re-raised by __next__
      self._queue.put(("error", e))

  def __iter__(self):
    return self

  def __next__(self):
    if self._queue is None:
      batch, self._state = self._read()
      return batch
    item = self._queue.get()
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
      self.close()
      raise item[1]
    batch, self._state = item
    return batch

  def get_state(self):
    """The wrapped iterator's state after the last batch returned by `next`."""
    return self._state

  def close(self):
    """Stops the thread (batches already read ahead are dropped)."""
    self._stop.set()
    if self._queue is not None:
      while True:  # unblock a put() waiting on a full queue
        try:
          self._queue.get_nowait()
        except queue.Empty:
          break
      self._thread.join(timeout=10)

