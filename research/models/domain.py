"""Domain classifier for adversarial domain adaptation (DANN) and importance weighting."""
from __future__ import annotations

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
