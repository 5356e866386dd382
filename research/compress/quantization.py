"""Post-training quantization, quantization-aware training, integer evaluation.

Works on any Flax Linen model you do not control: the `nn.Conv` and `nn.Dense`
layers are found and rewritten at call time with `nn.intercept_methods`, and
their kernels are transformed in the params tree. The model code is untouched.

Scheme (TensorRT-style symmetric quantization):
  weights      per output channel (last axis), scale_w = max|w| / qmax;
  activations  the input of every Conv/Dense, one scale per layer,
               scale_x = range / qmax with `range` calibrated on a few batches
               by 'minmax' (max(|min|, |max|) over all batches) or
               'percentile' (the mean over batches of the p-th percentile of |x|);
  qmax = 2^(bits-1) - 1 (127 at 8 bits, 7 at 4 bits); values are stored in int8
  containers (4-bit values are not packed).
Integer evaluation (`integer_apply`) runs each Conv/Dense as int8 x int8 ->
int32 (`lax.conv_general_dilated` / `lax.dot_general` with
`preferred_element_type=int32`), then rescales by scale_x * scale_w and adds the
float bias. Everything between layers (BatchNorm, activations, pooling) stays
float32.

QAT (`qat_apply`) fake-quantizes the kernels (per channel, from their current
magnitudes) and the layer inputs (per batch absmax) with a straight-through
estimator; after QAT, calibrate and convert with the PTQ functions.

Why not qwix: see research/compress/README.md.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import flax
import flax.linen as nn
from flax.linen import linear as flax_linear
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

ApplyFn = Callable[[Any, jax.Array], jax.Array]  # (variables, images) -> logits
CALIBRATION_METHODS = ("minmax", "percentile")


def qmax(bits: int) -> int:
  """Largest symmetric integer level: 127 for 8 bits, 7 for 4 bits."""
  if not 2 <= bits <= 8:
    raise ValueError(f"quantization: bits must be in [2, 8], got {bits}")
  return 2 ** (bits - 1) - 1


# ---------------------------------------------------------------- primitives


def channel_scale(w: jax.Array, bits: int = 8) -> jax.Array:
  """Per-output-channel symmetric scale of a kernel.

  Args:
    w: float [..., C_out].
    bits: 2..8.
  Returns:
    float32 [C_out] = max|w| over all but the last axis / qmax (1 where a
    channel is all zero, so that it quantizes to zeros without dividing by 0).
  """
  absmax = jnp.max(jnp.abs(w.reshape(-1, w.shape[-1])), axis=0)
  return jnp.where(absmax > 0, absmax / qmax(bits), 1.0).astype(jnp.float32)


def quantize(x: jax.Array, scale: jax.Array, bits: int = 8) -> jax.Array:
  """round(x / scale) clipped to [-qmax, qmax], as int8. `scale` broadcasts."""
  q = qmax(bits)
  return jnp.clip(jnp.round(x / scale), -q, q).astype(jnp.int8)


def dequantize(q: jax.Array, scale: jax.Array) -> jax.Array:
  """int -> float32: q * scale."""
  return q.astype(jnp.float32) * scale


def fake_quant(x: jax.Array, scale: jax.Array, bits: int = 8) -> jax.Array:
  """Quantize-dequantize with a straight-through estimator.

  Forward: round(clip(x, -qmax*scale, qmax*scale) / scale) * scale.
  Backward: d/dx = 1 inside the clipping range (boundary included), 0
  outside; no gradient flows into `scale` (a statistic, not a parameter).
  """
  scale = lax.stop_gradient(scale)
  limit = qmax(bits) * scale
  clipped = jnp.clip(x, -limit, limit)
  rounded = jnp.round(clipped / scale) * scale
  # Not `clipped + stop_gradient(...)`: jnp.clip's gradient is 1/2 at the
  # boundary, where the per-channel absmax weight always sits.
  inside = jnp.abs(x) <= limit
  passthrough = jnp.where(inside, x, lax.stop_gradient(clipped))
  return passthrough + lax.stop_gradient(rounded - passthrough)


# ---------------------------------------------------------------- layers


def _is_quantizable(context) -> bool:
  m = context.module
  if context.method_name != "__call__":
    return False
  if isinstance(m, nn.Dense):
    return True
  return (isinstance(m, nn.Conv) and m.shared_weights and m.mask is None
          and not (isinstance(m.padding, str)
                   and m.padding.upper() in ("CIRCULAR", "REFLECT", "CAUSAL")))


def _name(module) -> str:
  return "/".join(module.path)


def find_layers(apply_fn: ApplyFn, variables: Any, x: jax.Array) -> list[str]:
  """Paths ('block1/Conv_0') of the Conv/Dense layers that get quantized.

  Traced abstractly (`jax.eval_shape`), nothing is computed.
  """
  found = []

  def interceptor(next_fun, args, kwargs, context):
    if _is_quantizable(context) and _name(context.module) not in found:
      found.append(_name(context.module))
    return next_fun(*args, **kwargs)

  def run(v, x):
    with nn.intercept_methods(interceptor):
      return apply_fn(v, x)

  jax.eval_shape(run, variables, x)
  return found


def _input_stats(x, percentile):
  a = jnp.abs(x.astype(jnp.float32)).reshape(-1)
  return jnp.stack([jnp.min(x), jnp.max(x), jnp.percentile(a, percentile)])


def calibrate(apply_fn: ApplyFn, variables: Any, batches: Iterable[jax.Array],
              method: str = "minmax", percentile: float = 99.99
              ) -> dict[str, float]:
  """Activation range of the input of every Conv/Dense layer.

  Args:
    apply_fn: (variables, images) -> logits, in inference mode.
    variables: the float model variables ({'params': ..., 'batch_stats': ...}).
    batches: a few image batches, float32 [N, H, W, C] as the model expects.
    method: 'minmax' -> max over batches of max|x|; 'percentile' -> mean over
      batches of the `percentile`-th percentile of |x|.
    percentile: in (0, 100], used by 'percentile'.
  Returns:
    {layer path: range > 0}; the quantization scale is range / qmax(bits).
  """
  if method not in CALIBRATION_METHODS:
    raise ValueError(f"quantization.calibrate: method must be one of "
                     f"{CALIBRATION_METHODS}, got {method!r}")
  if not 0 < percentile <= 100:
    raise ValueError(f"quantization.calibrate: percentile must be in (0, 100], "
                     f"got {percentile}")

  @jax.jit
  def stats_of(v, x):
    stats = {}

    def interceptor(next_fun, args, kwargs, context):
      if _is_quantizable(context):
        s = _input_stats(args[0], percentile)
        name = _name(context.module)
        if name in stats:  # a layer called twice: widest range
          old = stats[name]
          s = jnp.stack([jnp.minimum(old[0], s[0]), jnp.maximum(old[1], s[1]),
                         jnp.maximum(old[2], s[2])])
        stats[name] = s
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
      apply_fn(v, x)
    return stats

  per_batch = [jax.device_get(stats_of(variables, x)) for x in batches]
  if not per_batch:
    raise ValueError("quantization.calibrate: no calibration batches")
  ranges = {}
  for name in per_batch[0]:
    s = np.stack([b[name] for b in per_batch])  # [batches, 3]
    if method == "minmax":
      r = max(abs(s[:, 0].min()), abs(s[:, 1].max()))
    else:
      r = float(s[:, 2].mean())
    ranges[name] = float(r) if r > 0 else 1.0
  return ranges


# ---------------------------------------------------------------- PTQ


def _kernel_paths(layers):
  return {tuple(l.split("/")) + ("kernel",) for l in layers}


def quantize_variables(variables: Mapping[str, Any], act_ranges: Mapping[str, float],
                       bits: int = 8) -> dict[str, Any]:
  """Post-training quantization of the layers in `act_ranges`.

  Args:
    variables: float variables {'params': ..., maybe 'batch_stats': ...}.
    act_ranges: {layer path: input range} from `calibrate`.
    bits: 2..8 for weights and activations.
  Returns:
    Variables for `integer_apply`: the same collections, with each quantized
    layer's kernel replaced by int8 values in [-qmax, qmax], plus a 'quant'
    collection {layer: {'kernel_scale': f32 [C_out], 'input_scale': f32 []}}.
  """
  q = qmax(bits)
  params = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables["params"]))
  wanted = _kernel_paths(act_ranges)
  missing = wanted - set(params)
  if missing:
    raise ValueError(f"quantization: layers {sorted(missing)[:3]} have no "
                     f"'kernel' in params; params has {list(params)[:6]}")
  quant = {}
  for path in wanted:
    w = params[path]
    s = channel_scale(w, bits)
    params[path] = quantize(w, s, bits)
    layer = path[:-1]
    quant[layer + ("kernel_scale",)] = s
    quant[layer + ("input_scale",)] = jnp.float32(act_ranges["/".join(layer)] / q)
  out = dict(variables)
  out["params"] = flax.traverse_util.unflatten_dict(params)
  out["quant"] = flax.traverse_util.unflatten_dict(quant)
  return out


def _conv_int(module, x_q, w_q):
  """Integer nn.Conv: same padding/strides/dilation/groups as `module`."""
  kernel_size = tuple(w_q.shape[:-2])
  nd = len(kernel_size)

  def bcast(v):
    v = 1 if v is None else v
    return (v,) * nd if isinstance(v, int) else tuple(v)

  padding = flax_linear.canonicalize_padding(module.padding, nd)
  return lax.conv_general_dilated(
      x_q, w_q, bcast(module.strides), padding,
      lhs_dilation=bcast(module.input_dilation),
      rhs_dilation=bcast(module.kernel_dilation),
      dimension_numbers=flax_linear._conv_dimension_numbers(x_q.shape),  # pylint: disable=protected-access
      feature_group_count=module.feature_group_count,
      preferred_element_type=jnp.int32)


def _integer_layer(module, x, bits):
  """y = (int32 op on int8 x, int8 w) * scale_x * scale_w + bias, float32."""
  w_q = module.get_variable("params", "kernel")
  if w_q.dtype != jnp.int8:
    raise ValueError(f"quantization.integer_apply: {_name(module)}/kernel is "
                     f"{w_q.dtype}, expected int8 from quantize_variables")
  s_w = module.get_variable("quant", "kernel_scale")
  s_x = module.get_variable("quant", "input_scale")
  x_q = quantize(x, s_x, bits)
  if isinstance(module, nn.Dense):
    acc = lax.dot_general(x_q, w_q, (((x.ndim - 1,), (0,)), ((), ())),
                          preferred_element_type=jnp.int32)
  else:
    batch_shape = x_q.shape[:x_q.ndim - w_q.ndim + 1]
    flat = x_q.reshape((-1,) + x_q.shape[len(batch_shape):])
    acc = _conv_int(module, flat, w_q)
    acc = acc.reshape(batch_shape + acc.shape[1:])
  y = acc.astype(jnp.float32) * (s_x * s_w)
  if module.use_bias:
    y = y + module.get_variable("params", "bias")
  return y


def integer_apply(apply_fn: ApplyFn, bits: int = 8) -> ApplyFn:
  """An apply function that runs quantized layers on integer weights.

  Args:
    apply_fn: (variables, images) -> logits, the float model in inference mode.
    bits: the bits used in `quantize_variables` (sets the activation clip).
  Returns:
    (qvariables, images) -> logits, with `qvariables` from
    `quantize_variables`. Layers without a 'quant' entry run in float.
  """
  qmax(bits)

  def interceptor(next_fun, args, kwargs, context):
    if (_is_quantizable(context)
        and context.module.has_variable("quant", "kernel_scale")):
      return _integer_layer(context.module, args[0], bits)
    return next_fun(*args, **kwargs)

  def apply(qvariables, x, *args, **kwargs):
    with nn.intercept_methods(interceptor):
      return apply_fn(qvariables, x, *args, **kwargs)

  return apply


def stored_bytes(tree: Any) -> int:
  """Bytes of all arrays in `tree` as stored (int8 kernels count 1 byte)."""
  return int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree)))


# ---------------------------------------------------------------- QAT / simulation


def fake_quant_params(params: Any, layers: Iterable[str], bits: int = 8) -> Any:
  """Kernels of `layers` fake-quantized per output channel (STE gradients)."""
  wanted = _kernel_paths(layers)
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  for path in wanted:
    w = flat[path]
    flat[path] = fake_quant(w, channel_scale(w, bits), bits)
  return flax.traverse_util.unflatten_dict(flat)


def fake_quant_apply(apply_fn: ApplyFn, layers: Iterable[str], bits: int = 8,
                     act_ranges: Mapping[str, float] | None = None) -> ApplyFn:
  """Simulated quantization: fake-quant kernels and layer inputs in float.

  Args:
    apply_fn: (variables, images) -> logits.
    layers: layer paths to quantize (from `find_layers`).
    bits: 2..8.
    act_ranges: static input ranges (PTQ simulation); None -> per-batch
      max|x| (QAT), which never clips, so the input STE is the identity.
  Returns:
    (variables, images) -> logits, differentiable w.r.t. the float params by
    the straight-through estimator.
  """
  layers = list(layers)
  q = qmax(bits)

  def interceptor(next_fun, args, kwargs, context):
    name = _name(context.module)
    if _is_quantizable(context) and name in layers:
      x = args[0]
      if act_ranges is None:
        scale = jnp.maximum(jnp.max(jnp.abs(x)), 1e-8) / q
      else:
        scale = jnp.float32(act_ranges[name] / q)
      args = (fake_quant(x, scale, bits),) + tuple(args[1:])
    return next_fun(*args, **kwargs)

  def apply(variables, x, *args, **kwargs):
    variables = dict(variables)
    variables["params"] = fake_quant_params(variables["params"], layers, bits)
    with nn.intercept_methods(interceptor):
      return apply_fn(variables, x, *args, **kwargs)

  return apply


def qat_apply(apply_fn: ApplyFn, layers: Iterable[str], bits: int = 8) -> ApplyFn:
  """Quantization-aware training forward pass (see `fake_quant_apply`)."""
  return fake_quant_apply(apply_fn, layers, bits, act_ranges=None)
