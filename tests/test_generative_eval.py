"""scripts/generative_eval.py's label agreement: classifier predictions vs conditioning labels."""
import os
import types

import jax.numpy as jnp
import ml_collections
import numpy as np

from research import config_lib, trainer

REPO = os.path.join(os.path.dirname(__file__), "..")


def _script():
  return config_lib.load_module(os.path.join(REPO, "scripts", "generative_eval.py"),
                                "_generative_eval")


def test_label_agreement_counts_predictions_equal_to_the_conditioning_label(monkeypatch):
  # A stand-in classifier that reads the class from the top-left pixel.
  def apply(params, batch_stats, x, train):
    del params, batch_stats, train
    cls = jnp.round(x[:, 0, 0, 0] * 9).astype(jnp.int32)
    return jnp.eye(10)[cls], None

  task = types.SimpleNamespace(config=ml_collections.ConfigDict({"input": {"normalize": "unit"}}),
                               apply=apply)
  state = types.SimpleNamespace(params={}, batch_stats={})
  monkeypatch.setattr(trainer, "load_state", lambda workdir: (task, state))
  labels = np.repeat(np.arange(10), 4)
  shown = labels.copy()
  shown[labels == 3] = 5          # class 3 never looks like a 3
  shown[[0, 1]] = 7               # half of class 0 looks like a 7
  images = np.zeros((40, 28, 28, 1), np.float32)
  images[:, 0, 0, 0] = shown / 9.0
  out = _script().label_agreement("unused", images, labels, batch_size=16)
  assert out["label_agreement"] == (40 - 4 - 2) / 40
  expected = [1.0] * 10
  expected[0], expected[3] = 0.5, 0.0
  assert out["label_agreement_per_class"] == expected
