"""EfficientNet-Lite0..4 (Tan & Le 2019; the TF-Lite variants) in Flax Linen.

The Lite family differs from EfficientNet-B*: no squeeze-excite, ReLU6
instead of swish, and the stem (32 filters), the head conv (1280 filters) and
the repeats of the first and last stage are not scaled with the model size.
Convolutions use TF-style 'SAME' padding (extra pixel at the bottom/right for
strided convs), as the reference implementation and its weights do.

Parameter names follow the structure of the network so that regular
expressions over paths select parts of it: `stem_conv`, `stem_bn`,
`block_{i}/{expand,depthwise,project}_{conv,bn}` with `i` the global block
index (0..15 for Lite0), `top_conv`, `top_bn` and the classifier `head`.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class StageArgs:
  """One stage of MBConv blocks, before width/depth scaling."""
  repeats: int
  kernel_size: int
  stride: int
  expand_ratio: int
  out_filters: int


# From efficientnet/lite/efficientnet_lite_builder.py ('r1_k3_s11_e1_i32_o16', ...).
BASE_STAGES = (
    StageArgs(1, 3, 1, 1, 16),
    StageArgs(2, 3, 2, 6, 24),
    StageArgs(2, 5, 2, 6, 40),
    StageArgs(3, 3, 2, 6, 80),
    StageArgs(3, 5, 1, 6, 112),
    StageArgs(4, 5, 2, 6, 192),
    StageArgs(1, 3, 1, 6, 320),
)

# name -> (width_coefficient, depth_coefficient, resolution, dropout_rate).
LITE_PARAMS = {
    "efficientnet-lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet-lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet-lite2": (1.1, 1.2, 260, 0.3),
    "efficientnet-lite3": (1.2, 1.4, 280, 0.3),
    "efficientnet-lite4": (1.4, 1.8, 300, 0.3),
}

STEM_FILTERS = 32
TOP_FILTERS = 1280
BN_MOMENTUM = 0.99  # Flax convention; PyTorch's momentum is 1 - 0.99 = 0.01.
BN_EPSILON = 1e-3

# TF EfficientNet initialisers: conv N(0, 2/fan_out), dense U(+-1/sqrt(fan_out)).
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
dense_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_out", "uniform")


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
  """Scales a filter count by `width`, rounded to a multiple of `divisor` (>=90%)."""
  scaled = filters * width
  new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  if new < 0.9 * scaled:
    new += divisor
  return int(new)


def round_repeats(repeats: int, depth: float) -> int:
  return int(math.ceil(depth * repeats))


def block_specs(width: float, depth: float) -> list[tuple[int, int, int, int]]:
  """The per-block (kernel_size, stride, expand_ratio, out_filters) list."""
  specs = []
  last = len(BASE_STAGES) - 1
  for i, s in enumerate(BASE_STAGES):
    repeats = (s.repeats if i in (0, last)  # fixed in the Lite family
               else round_repeats(s.repeats, depth))
    out = round_filters(s.out_filters, width)
    for j in range(repeats):
      specs.append((s.kernel_size, s.stride if j == 0 else 1,
                    s.expand_ratio, out))
  return specs


def _same_padding(size: int, k: int, s: int) -> tuple[int, int]:
  """TF 'SAME' padding (lo, hi) of one spatial dim: extra pixel at the end."""
  total = max((-(-size // s) - 1) * s + k - size, 0)
  return total // 2, total - total // 2


def _depthwise_fwd_conv(x, kernel, stride):
  return jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=x.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_conv2d(x, kernel, stride: int):
  """Depthwise conv with TF 'SAME' padding and a fast kernel gradient.

  Args:
    x: [N, H, W, C] float.
    kernel: [kh, kw, 1, C] float (Flax HWIO layout, feature_group_count=C).
    stride: spatial stride.

  Returns:
    [N, ceil(H / stride), ceil(W / stride), C].

  The forward pass and the input gradient are XLA's grouped convolution;
  the kernel gradient is kh * kw shifted multiply-and-sum reductions. XLA on
  CPU lowers the grouped filter-gradient convolution to a slow dense one
  (measured ~14x slower than these reductions at 32 x 56 x 56 x 144).
  """
  return _depthwise_fwd_conv(x, kernel, stride)


def _depthwise_vjp_fwd(x, kernel, stride):
  return _depthwise_fwd_conv(x, kernel, stride), (x, kernel)


def _depthwise_vjp_bwd(stride, res, g):
  x, kernel = res
  _, vjp_x = jax.vjp(lambda x: _depthwise_fwd_conv(x, kernel, stride), x)
  (dx,) = vjp_x(g)
  return dx, _depthwise_kernel_grad(stride, x, kernel, g)


def _accumulation_dtype(dtype):
  """float32 for bfloat16/float16 operands (products and sums as a convolution
  accumulates them), else `dtype` itself (then the casts below are no-ops)."""
  return jnp.promote_types(dtype, jnp.float32)


def _depthwise_kernel_grad(stride, x, kernel, g):
  kh, kw = kernel.shape[:2]
  acc = _accumulation_dtype(x.dtype)
  ho, wo = g.shape[1:3]
  xp = jnp.pad(x, ((0, 0), _same_padding(x.shape[1], kh, stride),
                   _same_padding(x.shape[2], kw, stride), (0, 0)))
  rows = []
  for i in range(kh):
    cols = []
    for j in range(kw):
      patch = jax.lax.slice(
          xp, (0, i, j, 0),
          (xp.shape[0], i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1,
           xp.shape[3]), (1, stride, stride, 1))
      cols.append(jnp.sum(patch.astype(acc) * g.astype(acc), axis=(0, 1, 2)))
    rows.append(jnp.stack(cols))
  return jnp.stack(rows)[:, :, None, :].astype(kernel.dtype)


depthwise_conv2d.defvjp(_depthwise_vjp_fwd, _depthwise_vjp_bwd)


def _shifted_sum(xp, kernel, stride, out_hw):
  """sum_ij xp[:, i + s*h, j + s*w, :] * kernel[i, j, 0] (one loop fusion).

  bfloat16 operands are multiplied and summed in float32 (as XLA's
  convolution accumulates them) and the sum is rounded to bfloat16 once.
  """
  kh, kw = kernel.shape[:2]
  ho, wo = out_hw
  acc = _accumulation_dtype(xp.dtype)
  out = None
  for i in range(kh):
    for j in range(kw):
      patch = jax.lax.slice(
          xp, (0, i, j, 0),
          (xp.shape[0], i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1,
           xp.shape[3]), (1, stride, stride, 1))
      term = patch.astype(acc) * kernel[i, j, 0].astype(acc)
      out = term if out is None else out + term
  return out.astype(xp.dtype)


def _shifted_fwd(x, kernel, stride):
  kh, kw = kernel.shape[:2]
  h, w = x.shape[1:3]
  xp = jnp.pad(x, ((0, 0), _same_padding(h, kh, stride),
                   _same_padding(w, kw, stride), (0, 0)))
  return _shifted_sum(xp, kernel, stride, (-(-h // stride), -(-w // stride)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_conv2d_shifted(x, kernel, stride: int):
  """`depthwise_conv2d` with forward and input gradient as shifted sums too.

  Same arguments and result as `depthwise_conv2d` (up to float rounding: the
  k*k products are summed in a different order). XLA:CPU runs a grouped
  convolution with one channel per group at a small fraction of a GFLOP/s
  (Eigen and YNNPACK alike), for the forward pass and the input gradient;
  k*k multiply-adds of shifted slices fuse into loops over the output instead
  (10-25x faster per layer at 128 x 64x64 inputs; see
  benchmarks/profile_efficientnet.py and research/transfer/README.md). The
  input gradient is the same sum over the gradient, dilated by the stride and
  padded, with the kernel flipped; the kernel gradient is
  `depthwise_conv2d`'s.
  """
  return _shifted_fwd(x, kernel, stride)


def _shifted_vjp_fwd(x, kernel, stride):
  return _shifted_fwd(x, kernel, stride), (x, kernel)


def _shifted_vjp_bwd(stride, res, g):
  x, kernel = res
  kh, kw = kernel.shape[:2]
  (plh, phh), (plw, phw) = (_same_padding(x.shape[1], kh, stride),
                            _same_padding(x.shape[2], kw, stride))
  gp = jax.lax.pad(g, jnp.zeros((), g.dtype),
                   ((0, 0, 0), (kh - 1 - plh, kh - 1 - phh, stride - 1),
                    (kw - 1 - plw, kw - 1 - phw, stride - 1), (0, 0, 0)))
  dx = _shifted_sum(gp, kernel[::-1, ::-1], 1, x.shape[1:3]).astype(x.dtype)
  return dx, _depthwise_kernel_grad(stride, x, kernel, g)


depthwise_conv2d_shifted.defvjp(_shifted_vjp_fwd, _shifted_vjp_bwd)


class DepthwiseConv(nn.Module):
  """Depthwise conv layer; parameter `kernel` [k, k, 1, C] like nn.Conv's."""
  kernel_size: int
  stride: int = 1
  dtype: Any = jnp.float32
  shifted: bool = False  # depthwise_conv2d_shifted instead of depthwise_conv2d

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    kernel = self.param("kernel", conv_init,
                        (self.kernel_size, self.kernel_size, 1, c))
    fn = depthwise_conv2d_shifted if self.shifted else depthwise_conv2d
    return fn(x.astype(self.dtype), kernel.astype(self.dtype), self.stride)


class MBConvBlock(nn.Module):
  """Inverted residual block without squeeze-excite; input/output [N, H, W, C]."""
  kernel_size: int
  stride: int
  expand_ratio: int
  out_filters: int
  norm: Any
  drop_connect_rate: float = 0.0
  fast_depthwise_grad: bool = True
  shifted_depthwise: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(nn.Conv, use_bias=False, padding="SAME",
                             kernel_init=conv_init, dtype=self.dtype)
    inputs = x
    in_filters = x.shape[-1]
    hidden = in_filters * self.expand_ratio
    if self.expand_ratio != 1:
      x = conv(hidden, (1, 1), name="expand_conv")(x)
      x = jax.nn.relu6(self.norm(name="expand_bn")(x))
    k, s = self.kernel_size, self.stride
    if self.fast_depthwise_grad:
      x = DepthwiseConv(k, s, dtype=self.dtype, shifted=self.shifted_depthwise,
                        name="depthwise_conv")(x)
    else:
      x = conv(hidden, (k, k), (s, s), feature_group_count=hidden,
               name="depthwise_conv")(x)
    x = jax.nn.relu6(self.norm(name="depthwise_bn")(x))
    x = conv(self.out_filters, (1, 1), name="project_conv")(x)
    x = self.norm(name="project_bn")(x)
    if self.stride == 1 and in_filters == self.out_filters:
      if train and self.drop_connect_rate > 0:
        # Stochastic depth: drop the whole residual branch per example.
        keep = 1.0 - self.drop_connect_rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep,
                                    (x.shape[0], 1, 1, 1))
        x = jnp.where(mask, x / keep, 0.0).astype(x.dtype)
      x = x + inputs
    return x


class EfficientNetLite(nn.Module):
  """EfficientNet-Lite classifier.

  Attributes:
    width: width coefficient (1.0 for Lite0).
    depth: depth coefficient (1.0 for Lite0).
    num_classes: size of the classifier `head` (1000 for ImageNet weights).
    dropout_rate: dropout before the head, in training mode.
    drop_connect_rate: stochastic-depth rate of the last block (block i of n
      uses rate * i / n), in training mode. Needs a 'dropout' rng when > 0.
    axis_name: pmap/shard_map axis over which BatchNorm statistics are
      averaged in training mode (cross-replica BatchNorm); None for local.
    bn_momentum, bn_epsilon: Flax BatchNorm constants (momentum is the
      decay of the running averages, i.e. 1 - PyTorch's momentum).
    fast_depthwise_grad: depthwise convs with a custom kernel gradient
      (`depthwise_conv2d`); False uses XLA's grouped conv gradient, which is
      much slower on CPU. Same parameters and outputs either way.
    shifted_depthwise: with `fast_depthwise_grad`, also compute the depthwise
      forward pass and input gradient as shifted multiply-adds
      (`depthwise_conv2d_shifted`), much faster than XLA's grouped
      convolution on CPU. Same parameters; outputs equal up to float
      rounding (summation order). None (default): on when JAX's default
      backend is the CPU, off on GPU/TPU (whose grouped-conv kernels are
      fast); True/False force it (`uses_shifted_depthwise`).
    dtype: computation dtype, float32 or bfloat16 (mixed precision: the
      convolutions compute in bf16, including the shifted depthwise path,
      which accumulates in float32). Parameters and BatchNorm statistics are
      float32 either way; the returned logits and features are float32.

  Call: `model.apply(variables, x, train, return_features=False,
  use_running_average=None)` with `x` float32 [N, H, W, 3], normalised with
  the ImageNet mean/std (see research.transfer.pretrained.preprocess).
  Returns logits [N, num_classes], or `(logits, features)` with features
  [N, 1280] (the pooled output of the top conv) when `return_features`.
  `use_running_average` defaults to `not train`; setting it True while
  training freezes the BatchNorm statistics (fine-tuning with frozen stats).
  """
  width: float = 1.0
  depth: float = 1.0
  num_classes: int = 1000
  dropout_rate: float = 0.2
  drop_connect_rate: float = 0.2
  axis_name: Optional[str] = None
  bn_momentum: float = BN_MOMENTUM
  bn_epsilon: float = BN_EPSILON
  fast_depthwise_grad: bool = True
  shifted_depthwise: Optional[bool] = None
  dtype: Any = jnp.float32

  def uses_shifted_depthwise(self) -> bool:
    """Whether the depthwise convs run as shifted sums (see shifted_depthwise)."""
    if self.shifted_depthwise is None:
      return self.fast_depthwise_grad and jax.default_backend() == "cpu"
    return self.fast_depthwise_grad and bool(self.shifted_depthwise)

  @nn.compact
  def __call__(self, x, train: bool = False, return_features: bool = False,
               use_running_average: Optional[bool] = None):
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"EfficientNetLite: expected images [N, H, W, 3], "
                       f"got shape {x.shape}")
    if use_running_average is None:
      use_running_average = not train
    norm = functools.partial(
        nn.BatchNorm, use_running_average=use_running_average,
        momentum=self.bn_momentum, epsilon=self.bn_epsilon, dtype=self.dtype,
        axis_name=None if use_running_average else self.axis_name)
    conv = functools.partial(nn.Conv, use_bias=False, padding="SAME",
                             kernel_init=conv_init, dtype=self.dtype)

    x = x.astype(self.dtype)
    x = conv(STEM_FILTERS, (3, 3), (2, 2), name="stem_conv")(x)
    x = jax.nn.relu6(norm(name="stem_bn")(x))
    specs = block_specs(self.width, self.depth)
    for i, (k, s, e, out) in enumerate(specs):
      x = MBConvBlock(k, s, e, out, norm,
                      drop_connect_rate=self.drop_connect_rate * i / len(specs),
                      fast_depthwise_grad=self.fast_depthwise_grad,
                      shifted_depthwise=self.uses_shifted_depthwise(),
                      dtype=self.dtype, name=f"block_{i}")(x, train)
    x = conv(TOP_FILTERS, (1, 1), name="top_conv")(x)
    x = jax.nn.relu6(norm(name="top_bn")(x))
    features = jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
    y = nn.Dropout(self.dropout_rate, deterministic=not train)(features)
    logits = nn.Dense(self.num_classes, kernel_init=dense_init,
                      dtype=self.dtype, name="head")(y).astype(jnp.float32)
    return (logits, features) if return_features else logits


def _lite(name: str):
  width, depth, _, dropout = LITE_PARAMS[name]
  return functools.partial(EfficientNetLite, width=width, depth=depth,
                           dropout_rate=dropout)


EfficientNetLite0 = _lite("efficientnet-lite0")
EfficientNetLite1 = _lite("efficientnet-lite1")
EfficientNetLite2 = _lite("efficientnet-lite2")
EfficientNetLite3 = _lite("efficientnet-lite3")
EfficientNetLite4 = _lite("efficientnet-lite4")


def num_blocks(width: float = 1.0, depth: float = 1.0) -> int:
  """Number of MBConv blocks (16 for Lite0), for layer-wise learning rates."""
  return len(block_specs(width, depth))


def resolution(name: str) -> int:
  """The input resolution the named model was trained at (224 for Lite0)."""
  if name not in LITE_PARAMS:
    raise ValueError(f"resolution: unknown model {name!r}; "
                     f"expected one of {sorted(LITE_PARAMS)}")
  return LITE_PARAMS[name][2]
