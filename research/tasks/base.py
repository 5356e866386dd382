"""The task interface: what the trainer needs from a kind of training.

The trainer (research/trainer.py) knows nothing about GANs, domains or
teachers; a task knows nothing about devices. The contract:

Host side (plain Python/numpy, may read files):
  `train_data(ctx)`  -> a resumable iterator of process-local batches
                        (dict of numpy arrays, leading dim ctx.local_batch_size).
                        Two input streams (domain adaptation) are one iterator
                        yielding nested dicts, e.g. {'source': {...}, 'target': {...}}.
  `eval_data(ctx)`   -> a callable returning a fresh finite iterable of
                        process-local batches of static shape; padded examples
                        carry `mask == 0` so every real example counts once.
                        Or a dict {name: such a callable} to evaluate several
                        sets: the '' set's metrics keep their names, the
                        others are prefixed 'name_' (e.g. 'val_accuracy', for
                        best_metric: model selection on a validation split).
  `init_state(rng, batch)` -> the full training state (any pytree: params of one
                        or several models, optimizer states, batch_stats, EMA
                        weights, a frozen teacher...), carrying its optimizers
                        as static fields (research.tasks.train_state: a
                        `TrainState` or a dataclass like it). `batch` is one
                        per-device batch (numpy), only for shapes. No side
                        effects: `train_step` needs nothing but the state. The
                        state is the same on every device and is what gets
                        checkpointed.
  `summarize_eval(sums)` -> final eval metrics from the summed eval statistics.
  `on_eval(state, step, workdir)` -> optional side outputs (sample grids);
                        called on process 0 only.

Per device (pure, jit-able; device logic only through `research.parallel`):
  `train_step(state, batch, rng)` -> (new_state, metrics). `batch` is this
                        device's slice [per_device, ...]; `rng` is already unique
                        to (step, device). Every gradient becomes parameters
                        through `train_state.update` (cross-device mean,
                        frozen-parameter gating, `grad_accum_steps`
                        micro-batches, the optax update); what else must agree
                        across devices (BatchNorm statistics, metrics) is
                        averaged with `parallel.mean`. Models get BatchNorm's
                        axis from `parallel.batchnorm_axis_name()`; per-example
                        or per-device keys come from `parallel.example_keys` /
                        `parallel.device_key`. `metrics` holds scalars,
                        already averaged across devices, and must include
                        'loss' (the trainer stops on a non-finite value).
                        Several models / optimizers / alternating updates (GAN:
                        n discriminator steps per generator step) all live
                        inside one train_step.
  `eval_step(state, batch)` -> dict of arrays that are SUMS over this device's
                        examples (the trainer psums across devices and adds
                        across batches), e.g. {'correct': .., 'count': ..,
                        'confusion': [C, C]}.

A config field a task cannot honour (e.g. `grad_accum_steps` > 1 for the GAN's
alternating updates) is rejected in `__init__` with a ValueError naming it.

Every method has a sensible default where one exists; a new task subclasses
`Task` and overrides what differs.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Iterator, Mapping, Union

import numpy as np

from research.tasks import train_state

Batch = Mapping[str, Any]
State = Any
EvalData = Union[Callable[[], Iterable[Batch]], Mapping[str, Callable[[], Iterable[Batch]]]]


@dataclasses.dataclass(frozen=True)
class DataContext:
  """What the data layer needs to know about the run's layout."""
  global_batch_size: int
  process_index: int = 0
  process_count: int = 1
  seed: int = 0

  @property
  def local_batch_size(self) -> int:
    return self.global_batch_size // self.process_count


class Task:
  """Base class for kinds of training. See the module docstring for the contract."""

  def __init__(self, config):
    self.config = config
    # Micro-batches per update (research.tasks.train_state.update); 1 = off.
    self.grad_accum_steps = train_state.check_grad_accum_steps(
        config.get("grad_accum_steps", 1))

  # ---- host side ----
  def train_data(self, ctx: DataContext):
    from research import data  # pylint: disable=g-import-not-at-top
    return data.train_iterator(self.config.data, ctx)

  def eval_data(self, ctx: DataContext) -> EvalData:
    """Default: the eval split, plus 'val' when data.few_shot_val holds out a validation set."""
    from research import data  # pylint: disable=g-import-not-at-top
    return data.eval_sets(self.config.data, ctx,
                          self.config.get("eval_batch_size", ctx.global_batch_size))

  def init_state(self, rng, batch: Batch) -> State:
    raise NotImplementedError

  def summarize_eval(self, sums: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Default: every 'x_sum' becomes 'x' = x_sum / count."""
    count = max(float(sums.get("count", 1.0)), 1.0)
    return {k[:-4]: float(v) / count for k, v in sums.items()
            if k.endswith("_sum")}

  def on_eval(self, state: State, step: int, workdir: str) -> None:
    del state, step, workdir

  # ---- per device ----
  def train_step(self, state: State, batch: Batch, rng) -> tuple[State, dict]:
    raise NotImplementedError

  def eval_step(self, state: State, batch: Batch) -> dict:
    raise NotImplementedError

  def params_for_export(self, state: State) -> Any:
    """The parameters a downstream user wants (e.g. EMA generator); default state.params."""
    return getattr(state, "params", state)


ResumableIterator = Iterator  # has get_state() -> dict and set_state(dict)
