"""A small CNN for 28x28 digits: the cheap baseline classifier."""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp


class SmallCNN(nn.Module):
  """Conv(w)-pool-Conv(2w)-pool-Conv(4w)-global-pool-Dense(256)-Dense(classes).

  Input: float32 [N, H, W, C] (any H, W >= 8). Output: logits float32
  [N, num_classes]; with `return_features=True`, also the penultimate
  features float32 [N, 256]. `dtype` is the computation dtype (bfloat16 for
  mixed precision); parameters are float32 either way.
  """
  num_classes: int = 10
  width: int = 32
  dropout: float = 0.0
  axis_name: Optional[str] = None  # unused (no BatchNorm); kept for a uniform signature
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, return_features: bool = False):
    w = self.width
    x = nn.relu(nn.Conv(w, (3, 3), dtype=self.dtype)(x))
    x = nn.max_pool(x, (2, 2), (2, 2))
    x = nn.relu(nn.Conv(2 * w, (3, 3), dtype=self.dtype)(x))
    x = nn.max_pool(x, (2, 2), (2, 2))
    x = nn.relu(nn.Conv(4 * w, (3, 3), dtype=self.dtype)(x))
    x = jnp.concatenate([jnp.mean(x, axis=(1, 2)), jnp.max(x, axis=(1, 2))], axis=-1)
    features = nn.relu(nn.Dense(256, dtype=self.dtype, name="penultimate")(x))
    h = nn.Dropout(self.dropout, deterministic=not train)(features)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(h)
    # Losses and metrics in float32 (a no-op when computing in float32).
    logits, features = logits.astype(jnp.float32), features.astype(jnp.float32)
    return (logits, features) if return_features else logits
