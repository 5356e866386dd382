"""Kinds of training. Each module defines a `Task` subclass; `get_task(name)` builds one."""
from __future__ import annotations

import difflib
import importlib

# name -> "module:ClassName"; modules import lazily so a task's heavy deps load only when used.
_TASKS = {
    "classify": "research.tasks.classify:ClassifyTask",
    "finetune": "research.tasks.classify:ClassifyTask",
    "gan": "research.tasks.gan:GANTask",
    "vae": "research.tasks.vae:VAETask",
    "adapt": "research.tasks.adapt:AdaptTask",
    "distill": "research.tasks.distill:DistillTask",
    "prune": "research.tasks.prune:PruneTask",
    "probe": "research.tasks.probe:ProbeTask",
}


def names() -> list[str]:
  return sorted(_TASKS)


def get_task(name: str, config):
  """Returns the task registered as `name`, built from `config`."""
  if name not in _TASKS:
    close = difflib.get_close_matches(name, _TASKS, n=3)
    raise ValueError(f"Unknown task {name!r}; valid tasks: {names()}"
                     + (f" (did you mean {close}?)" if close else ""))
  module, cls = _TASKS[name].split(":")
  return getattr(importlib.import_module(module), cls)(config)
