"""Loading config files (`path.py[:arg]`) and applying `field.sub=value` overrides.

Used by scripts/train.py and the sweep runner. An override naming a field
that does not exist is an error that lists the closest valid fields.
"""
from __future__ import annotations

import ast
import difflib
import importlib.util
import os
from typing import Any, Iterable

import ml_collections


class ConfigError(ValueError):
  pass


def data_config(name: str = "mnist5k", **fields: Any) -> ml_collections.ConfigDict:
  """The `data` block every task reads, with every field present so that any
  of them can be overridden (field meanings: research/data/__init__.py)."""
  c = ml_collections.ConfigDict(dict(
      name=name, train_split="train", eval_split="test", data_dir="", image_size=0,
      few_shot_k=0, few_shot_seed=0, few_shot_val=0, synthetic="", synthetic_ratio=0.0))
  for field, value in fields.items():
    override(c, field, value)
  return c


def load_module(path: str, name: str = ""):
  """The Python module of a file given by path (a config file, a script)."""
  if not os.path.exists(path):
    raise ConfigError(f"config file {path!r} does not exist")
  name = name or f"_config_{os.path.basename(path)[:-3]}"
  module_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def load(spec: str) -> ml_collections.ConfigDict:
  """Loads 'configs/x.py' or 'configs/x.py:arg' by calling its get_config(arg)."""
  path, _, arg = spec.partition(":")
  module = load_module(path)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path!r} has no get_config(arg) function")
  return module.get_config(arg) if arg else module.get_config()


def _all_fields(c: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  out = []
  for k, v in c.items():
    out.append(prefix + k)
    if isinstance(v, ml_collections.ConfigDict):
      out += _all_fields(v, prefix + k + ".")
  return out


def parse_value(text: str) -> Any:
  """'3' -> 3, '1e-3' -> 0.001, 'true' -> True, '(1,2)' -> (1, 2), other text -> str."""
  lowered = text.strip().lower()
  if lowered in ("true", "false"):
    return lowered == "true"
  if lowered in ("none", "null"):
    return None
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def override(config: ml_collections.ConfigDict, field: str, value: Any) -> None:
  """Sets `config.field` (dotted) to `value`; the field must exist already."""
  parts = field.split(".")
  node = config
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      valid = _all_fields(config)
      close = difflib.get_close_matches(field, valid, n=3, cutoff=0.5)
      raise ConfigError(
          f"unknown config field {field!r}"
          + (f"; did you mean {', '.join(close)}?" if close else "")
          + f" (valid fields: {', '.join(valid[:40])}{' ...' if len(valid) > 40 else ''})")
    if i < len(parts) - 1:
      node = node[part]
  old = node[parts[-1]]
  if isinstance(value, str) and not isinstance(old, str):
    value = parse_value(value)
  if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if isinstance(old, (tuple, list)) and isinstance(value, (tuple, list)):
    value = type(old)(value)
  try:
    node[parts[-1]] = value
  except TypeError as e:
    raise ConfigError(f"config field {field!r}: cannot set {value!r} "
                      f"(type {type(value).__name__}) where a {type(old).__name__} "
                      f"is expected: {e}") from None


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Iterable[str] | dict[str, Any]) -> ml_collections.ConfigDict:
  """Applies 'a.b=value' strings (or a {field: value} dict) to a copy of `config`."""
  config = ml_collections.ConfigDict(config.to_dict())
  items = overrides.items() if isinstance(overrides, dict) else (
      o.split("=", 1) if "=" in o else (o, None) for o in overrides)
  for field, value in items:
    if value is None:
      raise ConfigError(f"override {field!r} must look like field=value")
    override(config, field.removeprefix("config."), value)
  return config
