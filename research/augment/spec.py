"""Pipelines from config: a spec string or list -> a batched function.

Spec grammar: ops separated by '|'; each op is `name` or
`name(arg, ..., key=value)` with Python literal arguments, e.g.

    "flip_lr|affine(rotate=15)|color_jitter(0.4, 0.4, 0.4, 0.1)"

Every op also takes `p=` (apply with probability p per image). A list spec
holds op strings, `(name, kwargs)` pairs, or callables `op(key, image)`.
"""
from __future__ import annotations

import ast
import inspect

import jax
import jax.numpy as jnp

from research.augment import _checks
# The op modules register their ops on import (research/augment/registry.py).
from research.augment import color_ops  # noqa: F401  pylint: disable=unused-import
from research.augment import erasing  # noqa: F401  pylint: disable=unused-import
from research.augment import geometric as geo
from research.augment import policies
from research.augment import registry
from research.augment.geometric import GeometricOp

OPS = registry.OPS  # filled by @registry.register where each op is defined


def _split_top_level(spec: str):
  """Splits on '|' outside parentheses / brackets."""
  parts, depth, cur = [], 0, ''
  for ch in spec:
    if ch in '([{':
      depth += 1
    elif ch in ')]}':
      depth -= 1
    if ch == '|' and depth == 0:
      parts.append(cur)
      cur = ''
    else:
      cur += ch
  parts.append(cur)
  return [p.strip() for p in parts if p.strip()]


def _parse_item(item: str):
  """'name(1, a=2)' -> ('name', [1], {'a': 2})."""
  try:
    node = ast.parse(item, mode='eval').body
  except SyntaxError as e:
    raise ValueError(f'augment.build: cannot parse op {item!r}: {e.msg}') from e
  if isinstance(node, ast.Name):
    return node.id, [], {}
  if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
    try:
      args = [ast.literal_eval(a) for a in node.args]
      kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    except ValueError as e:
      raise ValueError(f'augment.build: arguments of {item!r} must be Python '
                       f'literals (numbers, strings, tuples)') from e
    return node.func.id, args, kwargs
  raise ValueError(f'augment.build: expected `name` or `name(args)`, got '
                   f'{item!r}')


def make_op(name: str, *args, **kwargs):
  """Builds one registered op by name; `p=` wraps it in random_apply."""
  if name not in OPS:
    raise ValueError(f'augment.build: unknown op {name!r}; valid ops: '
                     f'{", ".join(sorted(OPS))}')
  factory = OPS[name]
  # Ops with their own probability (flips) take p directly.
  own_p = 'p' in inspect.signature(factory).parameters
  p = None if own_p else kwargs.pop('p', None)
  try:
    inspect.signature(factory).bind(*args, **kwargs)
  except TypeError as e:
    params = list(inspect.signature(factory).parameters)
    params += [] if own_p else ['p']
    raise ValueError(f'augment.build: bad arguments for {name}: {e}; its '
                     f'parameters are {params}') from e
  op = factory(*args, **kwargs)
  if p is not None:
    op = policies.random_apply(op, p)
  return op


def parse(spec) -> list:
  """Spec string / list / None -> list of per-image ops."""
  if spec is None:
    return []
  if isinstance(spec, str):
    return [make_op(n, *a, **k) for n, a, k in
            map(_parse_item, _split_top_level(spec))]
  if isinstance(spec, (list, tuple)):
    ops = []
    for item in spec:
      if isinstance(item, str):
        ops.extend(parse(item))
      elif (isinstance(item, (list, tuple)) and len(item) == 2 and
            isinstance(item[0], str) and isinstance(item[1], dict)):
        ops.append(make_op(item[0], **item[1]))
      elif callable(item):
        ops.append(item)
      else:
        raise ValueError(f'augment.build: list items must be op strings, '
                         f'(name, kwargs) pairs or callables, got {item!r}')
    return ops
  raise TypeError(f'augment.build: spec must be a string, a list or None, '
                  f'got {type(spec).__name__}')


def _warp_materialized(images, mats, out_shape, *mode, post=None):
  """`warp_affine_batch`, its output stored once before the next stage.

  Same values as a plain call. XLA on the CPU fuses the cheap interpolation
  arithmetic into every consumer, so a colour op that reads the 3 channels
  of each pixel for each output value recomputes the warp (gathers
  included) 3-9 times. The outputs of a `lax.cond` branch are always
  materialized, so the warp runs inside one: both branches are the same
  warp, so the (always true) predicate cannot change the result. Unlike a
  `lax.scan` over chunks (used before), it needs no zero-filled output
  buffer and runs as one parallel loop. `post`: a per-pixel function applied
  inside the branch, before the output is stored.
  """
  def warp(args):
    out = geo.warp_affine_batch(args[0], args[1], out_shape, *mode)
    return out if post is None else post(out)

  return jax.lax.cond(jnp.all(jnp.isfinite(mats[:, 0, 0])), warp, warp,
                      (images, mats))


def _batched_stage(stage, last: bool = True, head=None):
  """Per-image op -> batched fn(key, images [N, H, W, C]) -> images.

  `last`: whether the stage ends the pipeline (a warp followed by other
  stages is materialized, see `_warp_materialized`).
  `head`: for a warp, the next stage's per-pixel head (`PixelOp.batch_head`),
  applied to the warp's output before it is stored; the stage then takes
  `fn(key, images, head_key)`. For a pixel op, True runs only its
  `batch_tail` (the head ran in the warp before it).
  """
  if isinstance(stage, GeometricOp):

    def geometric(key, images, head_key=None):
      n, h, w, _ = images.shape
      keys = jax.random.split(key, n)
      mats = jax.vmap(lambda k: stage.matrix_fn(k, (h, w))[0])(keys)
      out_shape = stage.matrix_fn(jax.random.key(0), (h, w))[1]
      if stage.is_flip:
        if not jnp.issubdtype(images.dtype, jnp.floating):
          images = to_float(images)
        return jax.vmap(geo.apply_flips)(mats, images)
      mode = (stage.interpolation, stage.border or 'edge', stage.fill)
      if last:
        return geo.warp_affine_batch(images, mats, out_shape, *mode)
      post = None
      if head is not None:
        post = lambda x: head(jax.random.split(head_key, n), x)
      return _warp_materialized(images, mats, out_shape, *mode, post=post)

    geometric.accepts_uint8 = not stage.is_flip
    geometric.takes_head_key = head is not None
    return geometric

  batch_fn = getattr(stage, 'batch_fn', None)
  if head is True:
    batch_fn = stage.batch_tail

  def pixel(key, images):
    keys = jax.random.split(key, images.shape[0])
    if batch_fn is not None:
      _checks.check_image(stage.name, images[0], stage.channels)
      return batch_fn(keys, images)
    return jax.vmap(stage)(keys, images)

  return pixel


def _stages(fused):
  """Batched stages; a warp followed by a pixel op with a per-pixel head
  runs that head before its output is stored."""
  fuses = [isinstance(a, GeometricOp) and not a.is_flip and
           getattr(b, 'batch_head', None) is not None
           for a, b in zip(fused, fused[1:])] + [False]
  stages = []
  for i, s in enumerate(fused):
    head = (fused[i + 1].batch_head if fuses[i] else
            True if i > 0 and fuses[i - 1] else None)
    stages.append(_batched_stage(s, i + 1 == len(fused), head))
  return stages


def to_float(images):
  """uint8 [..., H, W, C] in [0, 255] -> float32 in [0, 1]; floats pass."""
  if jnp.issubdtype(images.dtype, jnp.floating):
    return images.astype(jnp.float32)
  if images.dtype != jnp.uint8:
    raise TypeError(f'augment.to_float: images must be uint8 or float, got '
                    f'dtype {images.dtype}')
  return images.astype(jnp.float32) * (1.0 / 255.0)


def build(spec):
  """Builds a batched augmentation function from a spec.

  Args:
    spec: a spec string (see module doc), a list, or None / '' (identity).

  Returns:
    `fn(key, images) -> images`: images float32 [N, H, W, C] in [0, 1] (or
    uint8 [N, H, W, C] in [0, 255], converted inside, fused into the first
    resample when the pipeline starts with a geometric op) -> float32
    [N, H', W', C] in [0, 1]. One key per call; per-image keys are split
    inside. Static shapes only, so it compiles once under jit.
  """
  fused = policies.fuse_geometric(parse(spec))
  stages = _stages(fused)

  def augment(key, images):
    if jnp.ndim(images) != 4:
      raise ValueError(f'augment.build: images must have rank 4 [N, H, W, C],'
                       f' got shape {jnp.shape(images)}')
    if jnp.issubdtype(images.dtype, jnp.floating):
      images = images.astype(jnp.float32)
    elif images.dtype != jnp.uint8:
      raise TypeError(f'augment.build: images must be float32 in [0, 1] or '
                      f'uint8, got dtype {images.dtype}')
    if not stages:
      return to_float(images)
    keys = jax.random.split(key, len(stages))
    for i, (k, stage) in enumerate(zip(keys, stages)):
      if not (i == 0 and getattr(stage, 'accepts_uint8', False)):
        images = to_float(images)
      if getattr(stage, 'takes_head_key', False):
        images = stage(k, images, keys[i + 1])
      else:
        images = stage(k, images)
    return images

  return augment
