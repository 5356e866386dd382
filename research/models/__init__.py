"""Flax Linen models and a registry by name.

`get_model(name, **kwargs)` builds a registered module; modules are imported
lazily so that, e.g., the GAN code is not loaded for a classification run.

Mixed precision: every registered model takes `dtype`, the dtype its layers
compute in (`compute_dtype(config.dtype)`: float32 or bfloat16). Parameters
and BatchNorm statistics are float32 either way, and the outputs a loss reads
(logits, features, decoder parameters, images) are cast back to float32.
"""
from __future__ import annotations

import difflib
import importlib

import jax.numpy as jnp

DTYPES = ("float32", "bfloat16")

_MODELS = {
    "small_cnn": "research.models.cnn:SmallCNN",
    "resnet18": "research.models.resnet:ResNet18",
    "resnet34": "research.models.resnet:ResNet34",
    "dcgan_generator": "research.models.gan:Generator",
    "dcgan_discriminator": "research.models.gan:Discriminator",
    "vae": "research.models.vae:VAE",
    "domain_discriminator": "research.models.domain:DomainDiscriminator",
    "dann_mnist": "research.models.domain:DannMnistNet",
    "efficientnet_lite0": "research.models.efficientnet_lite:EfficientNetLite0",
    "efficientnet_lite1": "research.models.efficientnet_lite:EfficientNetLite1",
    "efficientnet_lite2": "research.models.efficientnet_lite:EfficientNetLite2",
    "efficientnet_lite3": "research.models.efficientnet_lite:EfficientNetLite3",
    "efficientnet_lite4": "research.models.efficientnet_lite:EfficientNetLite4",
}


def register(name: str, target: str) -> None:
  """Registers `target` ('module:Class') under `name` (for models in other packages)."""
  _MODELS[name] = target


def names() -> list[str]:
  return sorted(_MODELS)


def get_model(name: str, **kwargs):
  """Builds the model registered as `name` with constructor `kwargs`."""
  if name not in _MODELS:
    close = difflib.get_close_matches(name, _MODELS, n=3)
    raise ValueError(f"Unknown model {name!r}; valid models: {names()}"
                     + (f" (did you mean {close}?)" if close else ""))
  module, cls = _MODELS[name].split(":")
  return getattr(importlib.import_module(module), cls)(**kwargs)


def compute_dtype(name: str) -> jnp.dtype:
  """The computation dtype named by a config's `dtype` field.

  Args:
    name: one of `DTYPES` ('float32', the default of every config, or
      'bfloat16': layers compute in bf16, parameters stay float32).
  Returns:
    jnp.float32 or jnp.bfloat16 (a numpy dtype).
  Raises:
    ValueError naming `name` and the allowed dtypes.
  """
  if name not in DTYPES:
    raise ValueError(f"dtype must be one of {DTYPES}, got {name!r}")
  return jnp.dtype(name)
