"""Unsupervised domain adaptation between digit domains: one config family, the pair a variant.

Pairs (the variant; default mnistm):
  mnistm  mnist5k (labelled, gray) -> mnistm5k (unlabelled, MNIST digits blended
          with photo patches, colour); both fed as 3 channels (gray repeated).
  uci     mnist5k -> uci_digits (8x8, upsampled to 28x28 on load).
Other variants (comma-separated): quick (a < 1 minute smoke run), paper (the DANN
paper's MNIST network, research.models.domain.DannMnistNet, instead of the small CNN),
frame (digit framing of the source, research/data/frame.py: each mnist5k digit
cropped to its tight bounding box (pixels > 0, aspect kept, padded to a square),
area-averaged to 8x8 and quantised to 17 grey levels, then upsampled to 28x28 like
the target; chosen a priori from the datasets' documentation, not on any target
labels: a UCI digit is a size-normalised bitmap counted in 4x4 blocks into an 8x8
grid of values 0..16, an MNIST digit sits in a 20x20 box of a 28x28 frame).
Framing fields exist on both blocks (data.frame..., target.frame...).

  python scripts/train.py --config configs/digits_adapt.py:mnistm,paper --workdir runs/adapt/dann \
      --config.adapt.method=dann
  python scripts/train.py --config configs/digits_adapt.py:uci,quick --workdir runs/adapt/q

The experiment, one sweep per pair (get_sweep: 8 methods x 3 seeds; mnistm5k with the
paper network, as in research/transfer/ADAPTATION.md):

  python scripts/sweep.py --config configs/digits_adapt.py:mnistm,paper \
      --root runs/adapt_mnistm_paper --parallel 1
  python scripts/sweep.py --config configs/digits_adapt.py:uci --root runs/adapt_uci
  # or any grid:
  python scripts/sweep.py --config configs/digits_adapt.py:uci --root runs/adapt \
      --grid adapt.method=source_only,dann --grid seed=0,1,2 \
      --metrics accuracy,source_accuracy,target_val_accuracy

Methods: source_only, dann, cdan, cdan_e, coral, mmd, importance, oracle
(research/tasks/adapt.py). Training follows DANN as published for every method
(Ganin et al., 2016): SGD with momentum 0.9, lr mu_0 = 0.01 annealed as
mu_0 / (1 + 10 p)^0.75, adaptation weight ramped by lambda_p = 2 / (1 +
exp(-10 p)) - 1, 64 source + 64 target images a step, the domain classifier
Dense(100)-ReLU-Dense(1) (the paper's MNIST one). Other settings are the
papers' defaults, not tuned on the target test split: CDAN's randomized map
above 4,096 dims (d_out 1,024); MMD's five bandwidths base * 2^{-2..2};
importance weights clipped at 10. 20 labelled images per class are held out
of the target train split ('target_val_accuracy'): never trained on, their
labels only for selection. Runs report final-step numbers (best_metric off).
"""
import os

import ml_collections

from research import config_lib

_PAIRS = ("mnistm", "uci")
_VARIANTS = _PAIRS + ("quick", "paper", "frame")
# Digit framing fields (research/data/frame.py) of a data / target block: off.
_NO_FRAME = dict(frame="", frame_size=8, frame_threshold=0, frame_levels=0)
METHODS = ("source_only", "dann", "oracle", "cdan", "cdan_e", "coral", "mmd", "importance")


def _pair(args) -> str:
  pairs = sorted(args & set(_PAIRS))
  if len(pairs) > 1:
    raise ValueError(f"configs/digits_adapt.py: one pair at a time, got {pairs}")
  return pairs[0] if pairs else "mnistm"


def get_config(arg: str = ""):
  args = config_lib.variants(arg, _VARIANTS, __file__)
  pair = _pair(args)
  classify = config_lib.load_module(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist5k_classify.py"),
      "_mnist5k_classify_for_adapt")
  c = classify.get_config("quick" if "quick" in args else "")
  c.task = "adapt"
  c.pair = {"mnistm": "mnist5k->mnistm5k", "uci": "mnist5k->uci_digits"}[pair]  # a label
  c.data.image_size = 28  # source, as stored
  c.data.update(_NO_FRAME)
  c.target = ml_collections.ConfigDict(dict(
      name={"mnistm": "mnistm5k", "uci": "uci_digits"}[pair], train_split="train",
      eval_split="test", data_dir="", image_size=28, holdout_per_class=20, holdout_seed=0,
      **_NO_FRAME))
  c.input.channels = 3 if pair == "mnistm" else 0
  c.adapt = ml_collections.ConfigDict(dict(
      method="source_only",     # see METHODS
      weight=1.0,               # trade-off of the adaptation term (GRL scale for dann/cdan)
      schedule="warm",          # warm: 2 / (1 + exp(-gamma p)) - 1; constant: 1
      gamma=10.0,
      disc_hidden=100,          # domain classifier: Dense(100)-ReLU-Dense(1) (DANN, MNIST)
      disc_depth=1,
      disc_input="features",    # importance: classifier on 'features' or 'inputs'
      disc_width=8,             # small-CNN width when disc_input == 'inputs'
      max_weight=10.0,          # importance weights clipped (after mean-1 normalisation)
      mmd_kernels=5,
      mmd_kernel_mul=2.0,
      cdan_out_dim=1024,        # randomized multilinear map size ...
      cdan_random_threshold=4096,  # ... used when d_f * d_g exceeds this
      cdan_seed=0,
      standardize="per_image",  # both domains, every method: per-image zero mean, unit std
  ))
  c.augment = ""
  c.label_smoothing = 0.0
  c.model.width = 16
  c.model.dropout = 0.0
  c.optimizer = ml_collections.ConfigDict(dict(
      name="momentum", momentum=0.9, lr=0.01, schedule="anneal", anneal_alpha=10.0,
      anneal_beta=0.75, warmup_steps=0, weight_decay=0.0, wd_pattern=r".*kernel",
      grad_clip_norm=0.0, frozen=(), lr_mults=(), layer_decay=0.0))
  c.bn_mode = "train"
  c.batch_size = 64  # per domain: 64 source + 64 target images a step
  c.num_steps = 1000 if pair == "mnistm" else 600
  c.eval_every = c.num_steps
  c.checkpoint_every = c.num_steps // 2
  c.log_every = 50
  c.best_metric = ""  # no checkpoint chosen by a test metric
  if "paper" in args:  # the DANN paper's MNIST network (features: the 768-d conv output)
    c.model = ml_collections.ConfigDict(dict(name="dann_mnist", num_classes=10, dropout=0.0))
  if "frame" in args:  # the source in the target's frame: bbox -> 8x8, 17 levels -> 28x28
    c.data.update(dict(frame="bbox", frame_size=8, frame_threshold=0, frame_levels=17))
  if "quick" in args:
    c.update(dict(num_steps=40, eval_every=20, checkpoint_every=20, log_every=10))
  return c


def get_sweep(arg: str = ""):
  """Every method x seeds 0, 1, 2 for the pair `arg` names."""
  return [{"adapt.method": m, "seed": s} for m in METHODS for s in (0, 1, 2)]


def sweep_options(arg: str = ""):
  return {"metrics": "accuracy,source_accuracy,target_val_accuracy"}
