"""Domain classifier for adversarial domain adaptation (DANN) and importance weighting,
and the DANN paper's MNIST -> MNIST-M network."""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp


class DomainDiscriminator(nn.Module):
  """MLP domain classifier: features float [N, ...] -> logit of p(target | x),
  float32 [N].

  Inputs are flattened, so it takes penultimate features [N, D] as well as
  images [N, H, W, C] (importance weighting in input space). `dtype` is the
  computation dtype (bfloat16 for mixed precision); parameters are float32.
  """
  hidden: int = 256
  depth: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    for _ in range(self.depth):
      x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(x))
    return nn.Dense(1, dtype=self.dtype)(x)[:, 0].astype(jnp.float32)


class DannMnistNet(nn.Module):
  """Ganin et al. (2016, JMLR, Fig. 4a) MNIST -> MNIST-M network, without its domain head.

  Feature extractor conv5x5(32)-ReLU-maxpool2-conv5x5(48)-ReLU-maxpool2 (valid
  padding: 28x28 -> 4x4x48 = 768 features, spatial layout kept), label
  predictor Dense(100)-ReLU-Dense(100)-ReLU-Dense(classes). The paper's domain
  classifier on the 768 features is `DomainDiscriminator(hidden=100, depth=1)`.

  Input: float32 [N, 28, 28, C]. Output: logits float32 [N, num_classes]; with
  `return_features=True`, also the features float32 [N, 768] the GRL is
  applied to. `dtype` is the computation dtype; parameters are float32.
  """
  num_classes: int = 10
  dropout: float = 0.0
  axis_name: Optional[str] = None  # unused (no BatchNorm); kept for a uniform signature
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, return_features: bool = False):
    x = nn.relu(nn.Conv(32, (5, 5), padding="VALID", dtype=self.dtype)(x))
    x = nn.max_pool(x, (2, 2), (2, 2))
    x = nn.relu(nn.Conv(48, (5, 5), padding="VALID", dtype=self.dtype)(x))
    x = nn.max_pool(x, (2, 2), (2, 2))
    features = x.reshape(x.shape[0], -1)
    h = nn.relu(nn.Dense(100, dtype=self.dtype)(features))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = nn.relu(nn.Dense(100, dtype=self.dtype)(h))
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(h)
    # Losses and metrics in float32 (a no-op when computing in float32).
    logits, features = logits.astype(jnp.float32), features.astype(jnp.float32)
    return (logits, features) if return_features else logits
