"""Classify the 4,000-image mnist5k training split; test on its 1,000 held-out images.

  python scripts/train.py --config configs/mnist5k_classify.py --workdir runs/cnn
  python scripts/train.py --config configs/mnist5k_classify.py:quick --workdir runs/q
  python scripts/train.py --config configs/mnist5k_classify.py:resnet18 --workdir runs/r18
  python scripts/train.py --config configs/mnist5k_classify.py:augment --workdir runs/aug

Variants (comma-separated, combinable): quick (a < 1 minute smoke run),
resnet18 (CIFAR ResNet-18 with BatchNorm), augment (on-device augmentation).
"""
import ml_collections

from research import config_lib


VARIANTS = ("quick", "resnet18", "augment")


def get_config(arg: str = ""):
  args = config_lib.variants(arg, VARIANTS, __file__)
  c = config_lib.task_config(
      "classify", input=dict(size=0, channels=0, normalize="unit"),
      model=dict(name="small_cnn", num_classes=10, width=32, dropout=0.3))
  c.augment = ""
  c.mix = "none"
  c.mix_alpha = 1.0
  c.label_smoothing = 0.1
  c.optimizer = config_lib.optimizer_config("adamw", 2e-3, warmup_steps=100, weight_decay=1e-4,
                                            wd_pattern=r".*kernel")
  config_lib.set_trainer_fields(c, batch_size=128, eval_batch_size=500, num_steps=1500,
                                log_every=50, eval_every=500, checkpoint_every=500,
                                best_metric="accuracy", best_mode="max")

  if "resnet18" in args:
    c.model = ml_collections.ConfigDict(dict(name="resnet18", num_classes=10, width=32))
    c.optimizer.name = "momentum"
    c.optimizer.lr = 0.1
    c.optimizer.weight_decay = 5e-4
  if "augment" in args:
    c.augment = "affine(rotate=10,translate=0.1,scale=0.1)|random_erasing(p=0.25)"
  if "quick" in args:
    c.update(dict(num_steps=60, log_every=20, eval_every=30, checkpoint_every=30))
    c.optimizer.warmup_steps = 10
    if "resnet18" in args:
      c.model.width = 8
  return c
