"""Fine-tune ImageNet-pretrained EfficientNet-Lite0 on mnist5k (classify task).

  python scripts/train.py --config configs/mnist5k_finetune.py --workdir runs/ft
  python scripts/train.py --config configs/mnist5k_finetune.py:linear_probe --workdir runs/lp
  python scripts/train.py --config configs/mnist5k_finetune.py:scratch --workdir runs/scratch
  python scripts/train.py --config configs/mnist5k_finetune.py:quick --workdir runs/q \
      --config.data.few_shot_k=10

Grayscale 28x28 digits are resized on the device to input.size (bilinear),
repeated to 3 channels and normalised with the ImageNet mean/std the weights
expect. The resolution is far below ImageNet's 224: on the shared 2-core CPU a
Lite0 train step costs seconds per image at 224 (research/transfer/README.md),
so the default is 32 (the backbone's 1/32 stride leaves a 1x1 final map).

Variants (comma-separated, combinable):
  full (default): every layer trained, pretrained init, new 10-class head.
  linear_probe: only the head trains; BatchNorm fully frozen (running
    statistics and scale/bias); the backbone costs no backward pass.
  partial: stem and the first 8 blocks frozen, BatchNorm statistics frozen.
  llrd: full fine-tune with layer-wise LR decay 0.8 per depth from the head.
  scratch: the same network and recipe from a random init.
  fewshot: 50 steps of 32 images, one final eval, jit+shard_map so the
    persistent compilation cache hits.
  quick: a short smoke run.
  res64: input.size 64.

BatchNorm momentum is 0.9 (the ImageNet weights used 0.99): with a few hundred
steps or fewer the running statistics must forget ImageNet's quickly, or the
eval-mode network sees statistics of a different input distribution.
"""
import ml_collections

from research import config_lib

_VARIANTS = ("full", "linear_probe", "partial", "llrd", "scratch", "fewshot", "quick",
             "res64")


def get_config(arg: str = ""):
  args = config_lib.variants(arg, _VARIANTS, __file__)
  c = config_lib.task_config(
      "classify", input=dict(size=32, channels=3, normalize="imagenet"),
      model=dict(name="efficientnet_lite0", num_classes=10, dropout_rate=0.2,
                 drop_connect_rate=0.2, bn_momentum=0.9))
  c.init = ml_collections.ConfigDict(dict(checkpoint="efficientnet_lite0",
                                          dont_load=("head/.*",)))
  c.bn_mode = "train"
  c.augment = ""
  c.mix = "none"
  c.mix_alpha = 1.0
  c.label_smoothing = 0.1
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", lr=1e-3, schedule="cosine", warmup_steps=20,
      weight_decay=1e-4, wd_pattern=r".*kernel", grad_clip_norm=0.0,
      frozen=(), lr_mults=(), layer_decay=0.0))
  config_lib.set_trainer_fields(c, batch_size=64, eval_batch_size=500, num_steps=300,
                                log_every=25, eval_every=300, checkpoint_every=300,
                                keep_checkpoints=1, best_metric="accuracy", best_mode="max")

  if "linear_probe" in args:
    c.optimizer.frozen = (r"(?!head/).*",)
    c.bn_mode = "frozen"
    c.optimizer.lr = 1e-2
  if "partial" in args:
    c.optimizer.frozen = (r"stem_.*", r"block_[0-7]/.*")
    c.bn_mode = "frozen_stats"
  if "llrd" in args:
    c.optimizer.layer_decay = 0.8
  if "scratch" in args:
    c.init.checkpoint = ""
    c.init.dont_load = ()
  if "res64" in args:
    c.input.size = 64
  if "fewshot" in args:
    c.num_steps = 50
    c.batch_size = 32
    c.optimizer.warmup_steps = 5
    c.log_every = 10
    c.eval_every = c.checkpoint_every = 50
    c.parallel = "shard_map"
  if "quick" in args:
    c.update(dict(num_steps=20, batch_size=32, log_every=5, eval_every=20, checkpoint_every=20))
    c.optimizer.warmup_steps = 2
  return c
