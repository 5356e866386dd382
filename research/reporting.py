"""What a run reports while it trains: metrics.jsonl and TensorBoard scalars
(`MetricWriter`, process 0 only) and the one-line progress bar (`Progress`)."""
from __future__ import annotations

import json
import os
import time
from typing import Any

from research import parallel


class MetricWriter:
  """metrics.jsonl + TensorBoard; writes only on process 0."""

  def __init__(self, workdir: str):
    self.active = parallel.is_main()
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
