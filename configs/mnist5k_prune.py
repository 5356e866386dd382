"""mnist5k classification pruned gradually to a target sparsity while it trains.

  python scripts/train.py --config configs/mnist5k_prune.py --workdir runs/prune90
  python scripts/train.py --config configs/mnist5k_prune.py:quick --workdir runs/pq
  python scripts/train.py --config configs/mnist5k_prune.py:resnet18 --workdir runs/r18p \
      --config.prune.sparsity=0.75

The classify config (same variants: quick, resnet18, augment) plus a `prune`
block (research.compress.pruning.SparsityConfig): unstructured, uniform across
layers, polynomial schedule from 20% to 70% of the variant's num_steps, masks
updated every `update_freq` steps; the last 30% trains with the final masks
fixed. The steps are fixed when the config is built: overriding
--config.num_steps does not move them (override prune.start_step/end_step too).
"""
import ml_collections

from research import config_lib


def get_config(arg: str = ""):
  c = config_lib.sibling(__file__, "mnist5k_classify").get_config(arg)  # validates the variants
  c.task = "prune"
  n = c.num_steps
  c.prune = ml_collections.ConfigDict(dict(
      sparsity=0.9, pattern="unstructured", distribution="uniform", schedule="gradual",
      start_step=int(0.2 * n), end_step=int(0.7 * n), update_freq=max(n // 30, 1),
      include=(r"(.*/)?kernel",), exclude=()))
  return c
