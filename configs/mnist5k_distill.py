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
    raise ValueError(f"configs/mnist5k_distill.py: unknown variant(s) {sorted(unknown)}; "
                     f"valid: {', '.join(_VARIANTS)}")
  c = _classify_config(",".join(sorted(args)))
  c.task = "distill"
  c.model = ml_collections.ConfigDict(dict(name="small_cnn", num_classes=10, width=8,
                                           dropout=0.3))
  c.label_smoothing = 0.0  # not read by the distill task; recorded as what was used
  c.distill = ml_collections.ConfigDict(dict(
      teacher_workdir="",  # a finished classification run (config.json + checkpoints/)
      temperature=4.0,
      alpha=0.9))
  return c
