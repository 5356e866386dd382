"""Classification with magnitude pruning during training (Zhu & Gupta, 2017).

A `ClassifyTask` whose optimizer is wrapped by `research.compress.pruning.wrap`,
so the masks live in the optimizer state (checkpointed and resumed with it) and
pruned weights are exactly zero after every step. The loss, data, augmentation
and evaluation are the classify task's.

Config fields read here (beside ClassifyTask's):
  prune.*  the fields of `research.compress.pruning.SparsityConfig`, e.g.
           sparsity=0.9, pattern='unstructured', distribution='uniform',
           schedule='gradual', start_step=200, end_step=1000, update_freq=50.
           Steps count optimizer updates (0-based), i.e. trainer steps.

Train metrics gain `sparsity`: the fraction of exactly-zero weights over the
prunable parameters (those `prune.include` selects), in [0, 1].
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from research.compress import pruning
from research.tasks import classify


class PruneTask(classify.ClassifyTask):
  """ClassifyTask that prunes its weights by magnitude while it trains."""

  def __init__(self, config):
    super().__init__(config)
    if "prune" not in config:
      raise ValueError("task 'prune' needs a `prune` config block "
                       "(research.compress.pruning.SparsityConfig fields), got none")
    self.sparsity_config = pruning.SparsityConfig.from_dict(config.prune)

  def optimizer(self, params, batch_stats):
    """ClassifyTask's optimizer with its transformation wrapped by `pruning.wrap`."""
    opt = super().optimizer(params, batch_stats)
    return dataclasses.replace(opt, tx=pruning.wrap(opt.tx, self.sparsity_config))

  def train_step(self, state, batch, rng):
    state, metrics = super().train_step(state, batch, rng)
    selected = jax.tree.leaves(pruning.prunable(state.params, self.sparsity_config))
    leaves = jax.tree.leaves(state.params)
    zeros = sum(jnp.sum(x == 0) for x, s in zip(leaves, selected) if s)
    total = sum(x.size for x, s in zip(leaves, selected) if s)
    # Identical on every device (the params are), so no pmean is needed.
    metrics["sparsity"] = zeros.astype(jnp.float32) / max(total, 1)
    return state, metrics
