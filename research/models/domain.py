"""Domain classifier for adversarial domain adaptation (DANN) and importance weighting,
and the DANN paper's MNIST -> MNIST-M network."""
from __future__ import annotations

from typing import Optional

import flax.linen as nn


class DomainDiscriminator(nn.Module):
  """MLP domain classifier: features float [N, ...] -> logit of p(target | x), [N].

  Inputs are flattened, so it takes penultimate features [N, D] as well as
  images [N, H, W, C] (importance weighting in input space).
  """
  hidden: int = 256
  depth: int = 2

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    for _ in range(self.depth):
      x = nn.relu(nn.Dense(self.hidden)(x))
    return nn.Dense(1)(x)[:, 0]


class DannMnistNet(nn.Module):
  """Ganin et al. (2016, JMLR, Fig. 4a) MNIST -> MNIST-M network, without its domain head.

  Feature extractor conv5x5(32)-ReLU-maxpool2-conv5x5(48)-ReLU-maxpool2 (valid
  padding: 28x28 -> 4x4x48 = 768 features, spatial layout kept), label
  predictor Dense(100)-ReLU-Dense(100)-ReLU-Dense(classes). The paper's domain
  classifier on the 768 features is `DomainDiscriminator(hidden=100, depth=1)`.

  Input: float32 [N, 28, 28, C]. Output: logits [N, num_classes]; with
  `return_features=True`, also the features [N, 768] the GRL is applied to.
  """
  num_classes: int = 10
  dropout: float = 0.0
  axis_name: Optional[str] = None  # unused (no BatchNorm); kept for a uniform signature

  @nn.compact
  def __call__(self, x, train: bool = False, return_features: bool = False):
    x = nn.relu(nn.Conv(32, (5, 5), padding="VALID")(x))
    x = nn.max_pool(x, (2, 2), (2, 2))
    x = nn.relu(nn.Conv(48, (5, 5), padding="VALID")(x))
    x = nn.max_pool(x, (2, 2), (2, 2))
    features = x.reshape(x.shape[0], -1)
    h = nn.relu(nn.Dense(100)(features))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = nn.relu(nn.Dense(100)(h))
    logits = nn.Dense(self.num_classes, name="head")(h)
    return (logits, features) if return_features else logits
