"""The augmentation ops a spec string can name, registered where they are defined.

    @registry.register('solarize')
    def solarize_op(threshold=0.5):
      ...  # returns an op(key, image)

`research.augment.spec` builds pipelines from `OPS` (name -> factory); a new op
is one decorated factory in any module that `research.augment` imports.
"""
from __future__ import annotations

from typing import Callable

# name -> factory(*args, **kwargs) returning an op(key, image).
OPS: dict[str, Callable] = {}


def register(name: str) -> Callable[[Callable], Callable]:
  """Registers the decorated op factory under `name`; a name is registered once."""

  def decorator(factory: Callable) -> Callable:
    if name in OPS and OPS[name] is not factory:
      raise ValueError(f"augment.registry: op {name!r} is already registered "
                       f"(by {OPS[name].__module__}.{OPS[name].__qualname__})")
    OPS[name] = factory
    return factory

  return decorator


def unregister(name: str) -> None:
  """Removes `name` (for tests and notebooks that register a temporary op)."""
  if name not in OPS:
    raise KeyError(f"augment.registry: op {name!r} is not registered")
  del OPS[name]
