"""A jax.profiler trace of a window of training steps (`profile_steps='10:15'`).

The trace of steps [start, end) is written to WORKDIR/profile/ (process 0),
in the TensorBoard profile plugin's layout and as a Perfetto trace:

  tensorboard --logdir WORKDIR/profile      # Profile tab
  # or open WORKDIR/profile/plugins/profile/<run>/*.trace.json.gz in ui.perfetto.dev

Pick a window after the first steps (compilation) and before the end.
"""
from __future__ import annotations

import os
import re

import jax


def parse(text: str) -> tuple[int, int] | None:
  """'10:15' -> (10, 15); '' -> None; ValueError naming profile_steps otherwise."""
  if not text:
    return None
  m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(text))
  if not m or int(m.group(1)) >= int(m.group(2)):
    raise ValueError(f"profile_steps={text!r}: expected 'START:END' with START < END "
                     f"(steps START..END-1 are traced), e.g. '10:15'")
  return int(m.group(1)), int(m.group(2))


class Window:
  """Starts the trace before step `start` runs and stops it after step `end - 1`."""

  def __init__(self, profile_steps: str, directory: str):
    self.window = parse(profile_steps)
    self.directory = directory
    self.active = False
    self.enabled = self.window is not None and jax.process_index() == 0

  def step_begins(self, step: int) -> None:
    """Call before running step index `step` (0-based)."""
    if self.enabled and not self.active and step == self.window[0]:
      os.makedirs(self.directory, exist_ok=True)
      jax.profiler.start_trace(self.directory, create_perfetto_trace=True)
      self.active = True

  def step_ended(self, steps_done: int, outputs) -> None:
    """Call after a step, with the number of steps done and its outputs (waited for)."""
    if self.active and steps_done >= self.window[1]:
      jax.block_until_ready(outputs)
      self.close()
      print(f"profile of steps {self.window[0]}..{self.window[1] - 1}: {self.directory} "
            f"(tensorboard --logdir {self.directory})", flush=True)

  def close(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
