"""Sweep definition: grids of config overrides, run names, validation."""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from typing import Any, Iterable, Mapping, Sequence


from research import config_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A run is `python -m research.main ...` (the library entry point scripts/train.py wraps).
TRAIN_MODULE = ("-m", "research.main")
STATUS_FILE = "sweep_status.json"
RUN_LOG = "sweep.log"

Overrides = Mapping[str, Any]


# ---------------------------------------------------------------- defining runs
def parse_grid_flag(text: str) -> tuple[str, list[Any]]:
  """'data.few_shot_k=10,50,100' -> ('data.few_shot_k', [10, 50, 100]).

  Values are split on commas outside brackets and quotes and parsed like
  command-line overrides ('1e-3' -> 0.001, 'true' -> True, other text -> str).
  """
  field, sep, values = text.partition("=")
  field = field.strip().removeprefix("config.")
  if not sep or not field or not values:
    raise ValueError(f"--grid {text!r}: expected field=value1,value2,...")
  items, depth, quote, current = [], 0, "", ""
  for ch in values:
    if quote:
      quote = "" if ch == quote else quote
    elif ch in "'\"":
      quote = ch
    elif ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif ch == "," and depth == 0:
      items.append(current)
      current = ""
      continue
    current += ch
  items.append(current)
  return field, [config_lib.parse_value(v.strip()) for v in items]


def grid(axes: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
  """The Cartesian product of `axes` ({field: values}) as a list of override dicts.

  The first axis varies slowest, as in nested for-loops in the given order.
  """
  for field, values in axes.items():
    if not values:
      raise ValueError(f"sweep axis {field!r} has no values")
  fields = list(axes)
  return [dict(zip(fields, combo)) for combo in itertools.product(*axes.values())]


def _short(value: Any) -> str:
  text = json.dumps(value) if not isinstance(value, str) else value
  safe = re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-")
  if len(safe) > 24 or (isinstance(value, str) and "/" in value):
    return "h" + hashlib.sha1(text.encode()).hexdigest()[:8]
  return safe or "empty"


def run_name(overrides: Overrides) -> str:
  """A stable, filesystem-safe workdir name, e.g. 'arm=vae,few_shot_k=10,seed=0'.

  Each key contributes its last dotted component (the full path when two keys
  share one); long values or paths are replaced by a short hash of the value.
  """
  lasts = [k.lstrip("_").split(".")[-1] for k in overrides]
  parts = []
  for key, last in zip(overrides, lasts):
    label = last if lasts.count(last) == 1 else key.lstrip("_")
    parts.append(f"{label}={_short(overrides[key])}")
  name = ",".join(parts) or "default"
  if len(name) > 150:
    digest = hashlib.sha1(json.dumps(list(overrides.items()), default=str).encode())
    name = name[:140] + "-" + digest.hexdigest()[:8]
  return name


def config_overrides(overrides: Overrides, root: str) -> dict[str, Any]:
  """The config-field overrides of a run ('_labels' dropped, '{root}' filled in)."""
  return {k: (v.replace("{root}", root) if isinstance(v, str) else v)
          for k, v in overrides.items() if not k.startswith("_")}


def validate(base_config, runs: Iterable[Overrides], root: str = "") -> None:
  """Raises config_lib.ConfigError if any run names a nonexistent field or bad value."""
  for overrides in runs:
    config_lib.apply_overrides(base_config, config_overrides(overrides, root))


def override_flags(overrides: Overrides) -> list[str]:
  """['--config.a.b=1', ...] that scripts/train.py parses back to the same values."""
  flags = []
  for field, value in overrides.items():
    if isinstance(value, bool):
      text = "true" if value else "false"
    elif value is None:
      text = "none"
    elif isinstance(value, str):
      text = value
    else:
      text = repr(value)
    flags.append(f"--config.{field}={text}")
  return flags


# ---------------------------------------------------------------- config files
def load_module(path: str):
  """The Python module of a config file (for get_sweep / get_prerequisites)."""
  path = path.partition(":")[0]
  return config_lib.load_module(
      path, f"_sweep_config_{os.path.basename(path)[:-3]}")


def sweep_from_config(spec: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """(runs, options) from the config file's get_sweep(arg) [and sweep_options(arg)]."""
  path, _, arg = spec.partition(":")
  module = load_module(path)
  if not hasattr(module, "get_sweep"):
    raise config_lib.ConfigError(
        f"config file {path!r} has no get_sweep(arg); pass --grid field=v1,v2 instead")
  runs = [dict(r) for r in module.get_sweep(arg)]
  options = dict(module.sweep_options(arg)) if hasattr(module, "sweep_options") else {}
  return runs, options


# ---------------------------------------------------------------- jobs
