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
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.models import pointwise
from research.models.depthwise import DepthwiseConv, conv_init


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
  matmul_pointwise: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(nn.Conv, use_bias=False, padding="SAME",
                             kernel_init=conv_init, dtype=self.dtype)
    pointwise_conv = (functools.partial(conv, conv_general_dilated=pointwise.pointwise_conv)
                      if self.matmul_pointwise else conv)
    inputs = x
    in_filters = x.shape[-1]
    hidden = in_filters * self.expand_ratio
    if self.expand_ratio != 1:
      x = pointwise_conv(hidden, (1, 1), name="expand_conv")(x)
      x = jax.nn.relu6(self.norm(name="expand_bn")(x))
    k, s = self.kernel_size, self.stride
    if self.fast_depthwise_grad:
      x = DepthwiseConv(k, s, dtype=self.dtype, shifted=self.shifted_depthwise,
                        name="depthwise_conv")(x)
    else:
      x = conv(hidden, (k, k), (s, s), feature_group_count=hidden,
               name="depthwise_conv")(x)
    x = jax.nn.relu6(self.norm(name="depthwise_bn")(x))
    x = pointwise_conv(self.out_filters, (1, 1), name="project_conv")(x)
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
    matmul_pointwise: compute the 1x1 convolutions (expand, project, top)
      as matrix products (`research.models.pointwise`): same parameters and
      function, several times faster gradients on the CPU; False uses
      XLA's convolution.
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
  matmul_pointwise: bool = True
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
                      matmul_pointwise=self.matmul_pointwise,
                      dtype=self.dtype, name=f"block_{i}")(x, train)
    top_conv = (functools.partial(conv, conv_general_dilated=pointwise.pointwise_conv)
                if self.matmul_pointwise else conv)
    x = top_conv(TOP_FILTERS, (1, 1), name="top_conv")(x)
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
