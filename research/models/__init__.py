"""Flax Linen models and a registry by name.

`get_model(name, **kwargs)` builds a registered module; modules are imported
lazily so that, e.g., the GAN code is not loaded for a classification run.
"""
from __future__ import annotations

import difflib
import importlib

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
