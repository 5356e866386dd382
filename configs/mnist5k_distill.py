"""Distil a trained mnist5k classifier into a narrow small CNN (Hinton et al., 2015).

First train a teacher with the classify config, then the student against it:

  python scripts/train.py --config configs/mnist5k_classify.py --workdir runs/teacher
  python scripts/train.py --config configs/mnist5k_distill.py --workdir runs/student \
      --config.distill.teacher_workdir=runs/teacher

The baseline "same student trained alone" is the classify config with the
student's model and steps:

  python scripts/train.py --config configs/mnist5k_classify.py --workdir runs/alone \
      --config.model.width=8

Variants (comma-separated): quick (a < 1 minute smoke run; pair it with a
teacher trained by mnist5k_classify.py:quick).

Everything but the task, the model and the `distill` block is the classify
config's, so student and baseline differ only in the loss (no label smoothing
and no augmentation when distilling: the soft targets take their place).
"""
import ml_collections

from research import config_lib

VARIANTS = ("quick",)


def get_config(arg: str = ""):
  args = config_lib.variants(arg, VARIANTS, __file__)
  c = config_lib.sibling(__file__, "mnist5k_classify").get_config(",".join(sorted(args)))
  c.task = "distill"
  c.model = ml_collections.ConfigDict(dict(name="small_cnn", num_classes=10, width=8,
                                           dropout=0.3))
  c.label_smoothing = 0.0  # not read by the distill task; recorded as what was used
  c.distill = ml_collections.ConfigDict(dict(
      teacher_workdir="",  # a finished classification run (config.json + checkpoints/)
      temperature=4.0,
      alpha=0.9))
  return c
