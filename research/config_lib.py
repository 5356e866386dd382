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
      few_shot_k=0, few_shot_seed=0, few_shot_val=0, synthetic="", synthetic_ratio=0.0,
      folder_channels=3, folder_resize="crop"))
  for field, value in fields.items():
    override(c, field, value)
  return c


def task_config(task: str, *, model: dict, input: dict,  # pylint: disable=redefined-builtin
                data: str = "mnist5k", seed: int = 0) -> ml_collections.ConfigDict:
  """The head of a config: task, seed, data block, input and model blocks (in that order)."""
  c = ml_collections.ConfigDict()
  c.task = task
  c.seed = seed
  c.data = data_config(data)
  c.input = ml_collections.ConfigDict(input)
  c.model = ml_collections.ConfigDict(model)
  return c


def variants(arg: str, valid: Iterable[str], config_file: str) -> set[str]:
  """The comma-separated variants of `arg`, checked against `valid`.

  Args:
    arg: what follows ':' in 'configs/x.py:arg', e.g. 'quick,augment'.
    valid: the variant names the config declares.
    config_file: the config's __file__ (named in the error).
  Raises:
    ConfigError naming the file, the unknown variants and the valid ones.
  """
  args = set(filter(None, (arg or "").split(",")))
  unknown = args - set(valid)
  if unknown:
    raise ConfigError(f"configs/{os.path.basename(config_file)}: unknown variant(s) "
                      f"{sorted(unknown)}; valid: {', '.join(sorted(valid))}")
  return args


def sibling(config_file: str, name: str):
  """The module of configs/<name>.py, found next to `config_file` (a config's __file__)."""
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), name + ".py")
  return load_module(path, f"_config_{name}")


def optimizer_config(name: str, lr: float, **fields: Any) -> ml_collections.ConfigDict:
  """An optimizer block (research/optim.py) with every common field present.

  Defaults: cosine schedule, no warm-up, no weight decay, no gradient clipping,
  nothing frozen, no learning-rate multipliers; `fields` adds or replaces any.
  """
  defaults = dict(name=name, lr=lr, schedule="cosine", warmup_steps=0, weight_decay=0.0,
                  grad_clip_norm=0.0, frozen=(), lr_mults=())
  return ml_collections.ConfigDict({**defaults, **fields})


def set_trainer_fields(c: ml_collections.ConfigDict, *, batch_size: int, eval_batch_size: int,
                       num_steps: int, log_every: int, eval_every: int, checkpoint_every: int,
                       keep_checkpoints: int = 2, best_metric: str = "",
                       **extra: Any) -> ml_collections.ConfigDict:
  """Sets the fields research/trainer.py reads (batching, budget, cadence, checkpoints,
  parallelism, progress, gradient accumulation: `grad_accum_steps` micro-batches per
  update, research.tasks.train_state; mixed precision: `dtype` 'float32' or 'bfloat16',
  research.models.compute_dtype); `extra` sets others (e.g. best_mode). Returns `c`."""
  c.update(dict(batch_size=batch_size, eval_batch_size=eval_batch_size, num_steps=num_steps,
                log_every=log_every, eval_every=eval_every, checkpoint_every=checkpoint_every,
                keep_checkpoints=keep_checkpoints, best_metric=best_metric, **extra,
                parallel="pmap", progress=True, distributed=False, profile_steps="",
                prefetch=2, grad_accum_steps=1, dtype="float32"))
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
