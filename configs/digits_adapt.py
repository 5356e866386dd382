"""Unsupervised domain adaptation mnist5k (labelled) -> uci_digits (unlabelled 8x8, upsampled).

  python scripts/train.py --config configs/digits_adapt.py --workdir runs/adapt/dann \
      --config.adapt.method=dann
  python scripts/train.py --config configs/digits_adapt.py:quick --workdir runs/adapt/q

The experiment (3 seeds x 5 methods, table of target test accuracy):

  python scripts/sweep.py --config configs/digits_adapt.py --root runs/adapt \
      --grid adapt.method=source_only,dann,coral,mmd,importance --grid seed=0,1,2 \
      --parallel 2 --metrics accuracy,source_accuracy,target_val_accuracy

Variants (comma-separated): quick (a < 1 minute smoke run).

The classifier, optimizer and input pipeline are the same for every method
(mnist5k_classify's small CNN and AdamW); only `adapt` differs. Adaptation
settings are the papers' defaults, not tuned on the target test split:
trade-off weight 1 with DANN's warm-start ramp for DANN, CORAL and MMD; five
Gaussian bandwidths base * 2^{-2..2} for MMD (DAN); importance weights clipped
at 10. 20 labelled images per class are held out of the target train split
('target_val_accuracy'): never trained on, their labels only for selection.
"""
import importlib.util
import os

import ml_collections

_VARIANTS = ("quick",)


def _classify_config(arg: str) -> ml_collections.ConfigDict:
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist5k_classify.py")
  spec = importlib.util.spec_from_file_location("_mnist5k_classify", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def get_config(arg: str = ""):
  args = set(filter(None, arg.split(",")))
  unknown = args - set(_VARIANTS)
  if unknown:
    raise ValueError(f"configs/digits_adapt.py: unknown variant(s) {sorted(unknown)}; "
                     f"valid: {', '.join(_VARIANTS)}")
  c = _classify_config(",".join(sorted(args)))
  c.task = "adapt"
  c.data.image_size = 28  # source, as stored
  c.target = ml_collections.ConfigDict(dict(
      name="uci_digits", train_split="train", eval_split="test", data_dir="",
      image_size=28, holdout_per_class=20, holdout_seed=0))
  c.adapt = ml_collections.ConfigDict(dict(
      method="source_only",     # source_only | dann | coral | mmd | importance
      weight=1.0,               # trade-off of the adaptation term (GRL scale for dann)
      schedule="warm",          # warm: 2 / (1 + exp(-gamma p)) - 1; constant: 1
      gamma=10.0,
      disc_hidden=256,          # domain classifier MLP width (dann, importance)
      disc_input="features",    # importance: classifier on 'features' or 'inputs'
      disc_width=8,             # small-CNN width when disc_input == 'inputs'
      max_weight=10.0,          # importance weights clipped (after mean-1 normalisation)
      mmd_kernels=5,
      mmd_kernel_mul=2.0,
      standardize="per_image",  # both domains, every method: per-image zero mean, unit std
  ))
  c.augment = ""
  c.label_smoothing = 0.0
  # Budget: 15 runs (5 methods x 3 seeds) in ~40 minutes on 2 shared CPU cores.
  c.model.width = 16
  c.batch_size = 64  # per domain: 64 source + 64 target images a step
  c.num_steps = 600
  c.eval_every = 600
  c.checkpoint_every = 300
  c.log_every = 50
  c.optimizer.warmup_steps = 50
  c.best_metric = ""  # no checkpoint chosen by a test metric
  if "quick" in args:
    c.num_steps = 40
    c.eval_every = 20
    c.checkpoint_every = 20
    c.log_every = 10
    c.optimizer.warmup_steps = 5
  return c
