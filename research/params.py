"""Parameter selection by regular expressions over flattened parameter paths.

The one helper used everywhere a subset of parameters is chosen: freezing,
layer-wise learning rates, weight-decay masks, pruning filters (as big_vision's
`optax.make` does). A path is the '/'-joined keys of a nested dict, e.g.
`params/Conv_0/kernel` is written `Conv_0/kernel` for a params tree.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Sequence

import jax
import numpy as np


def path_str(path: Sequence[Any]) -> str:
  """Joins a jax key path into 'a/b/c'."""
  parts = []
  for k in path:
    if isinstance(k, jax.tree_util.DictKey):
      parts.append(str(k.key))
    elif isinstance(k, jax.tree_util.GetAttrKey):
      parts.append(str(k.name))
    elif isinstance(k, jax.tree_util.SequenceKey):
      parts.append(str(k.idx))
    elif isinstance(k, jax.tree_util.FlattenedIndexKey):
      parts.append(str(k.key))
    else:
      parts.append(str(k))
  return "/".join(parts)


def flatten(tree: Any) -> dict[str, Any]:
  """Returns {'a/b/c': leaf} for every leaf of `tree`, in tree order."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {path_str(p): v for p, v in leaves}


def tree_map_with_names(fn: Callable[[str, Any], Any], tree: Any) -> Any:
  """Like `jax.tree.map` but `fn(name, leaf)` also receives the leaf's path."""
  return jax.tree_util.tree_map_with_path(lambda p, x: fn(path_str(p), x), tree)


def _compile(patterns: str | Iterable[str]) -> list[re.Pattern]:
  if isinstance(patterns, str):
    patterns = [patterns]
  out = []
  for p in patterns:
    try:
      out.append(re.compile(p))
    except re.error as e:
      raise ValueError(f"params: invalid regular expression {p!r}: {e}") from None
  return out


def match(patterns: str | Iterable[str], tree: Any) -> Any:
  """A bool tree: True where a leaf's path fully matches any of `patterns`."""
  compiled = _compile(patterns)
  return tree_map_with_names(
      lambda name, _: any(r.fullmatch(name) for r in compiled), tree)


def partition(rules: Sequence[tuple[str, str]], tree: Any,
              default: str | None = None) -> Any:
  """Labels each leaf by the first rule `(regex, label)` whose regex fully matches.

  Leaves that match no rule get `default`; with `default=None` an unmatched
  leaf is an error naming it, so a typo in a pattern cannot silently train
  (or freeze) the wrong parameters.
  """
  compiled = [(r, label) for (p, label) in rules for r in _compile(p)]
  unmatched = []

  def label_of(name, _):
    for r, label in compiled:
      if r.fullmatch(name):
        return label
    if default is None:
      unmatched.append(name)
      return ""
    return default

  labels = tree_map_with_names(label_of, tree)
  if unmatched:
    raise ValueError(
        f"params.partition: no rule matches {unmatched[:5]} "
        f"({len(unmatched)} in all); rules were {[p for p, _ in rules]}")
  return labels


def check_patterns_match(patterns: str | Iterable[str], tree: Any, what: str):
  """Raises if a pattern matches no parameter (almost always a typo)."""
  names = list(flatten(tree))
  for r in _compile(patterns):
    if not any(r.fullmatch(n) for n in names):
      raise ValueError(
          f"{what}: pattern {r.pattern!r} matches no parameter; "
          f"some parameter names are {names[:8]}")


def count(tree: Any) -> int:
  """Total number of scalars in a tree."""
  return int(sum(np.size(x) for x in jax.tree.leaves(tree)))
