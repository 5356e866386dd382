"""CIFAR-style ResNets (3x3 stem, no max-pool) with BatchNorm.

BatchNorm statistics are averaged across devices when `axis_name` is set
(cross-replica BatchNorm), so 8 devices x 16 images train like 1 x 128.
"""
from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp


class BasicBlock(nn.Module):
  filters: int
  strides: int
  norm: functools.partial
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = nn.Conv(self.filters, (3, 3), (self.strides, self.strides),
                use_bias=False, dtype=self.dtype)(x)
    y = nn.relu(self.norm()(y))
    y = nn.Conv(self.filters, (3, 3), use_bias=False, dtype=self.dtype)(y)
    y = self.norm(scale_init=nn.initializers.zeros)(y)
    if x.shape != y.shape:
      x = nn.Conv(self.filters, (1, 1), (self.strides, self.strides),
                  use_bias=False, dtype=self.dtype, name="shortcut_conv")(x)
      x = self.norm(name="shortcut_bn")(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """Input float32 [N, H, W, C]; output logits float32 [N, num_classes] (and
  the pooled features float32 [N, 8 * width] with `return_features`).

  `dtype` is the computation dtype (bfloat16 for mixed precision); parameters
  and the BatchNorm running statistics are float32 either way (Flax computes
  the batch mean and variance in at least float32).
  """
  stage_sizes: Sequence[int]
  num_classes: int = 10
  width: int = 64
  axis_name: Optional[str] = None
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, return_features: bool = False):
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=self.bn_momentum, epsilon=1e-5, dtype=self.dtype,
                             axis_name=self.axis_name if train else None)
    x = nn.Conv(self.width, (3, 3), use_bias=False, dtype=self.dtype,
                name="stem_conv")(x)
    x = nn.relu(norm(name="stem_bn")(x))
    for i, n in enumerate(self.stage_sizes):
      for j in range(n):
        x = BasicBlock(self.width * 2**i, 2 if (i > 0 and j == 0) else 1,
                       norm, self.dtype, name=f"stage{i}_block{j}")(x)
    features = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(features)
    # Losses and metrics in float32 (a no-op when computing in float32).
    logits, features = logits.astype(jnp.float32), features.astype(jnp.float32)
    return (logits, features) if return_features else logits


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2))
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3))
