"""The probe task end to end on the trainer: num_steps=0 gives the accuracy of
a linear probe fitted on directly computed features (independent of the task's
extraction, cache and subset plumbing); a second run reads the feature cache."""
import json
import os

import jax
import ml_collections
import numpy as np
import pytest

from research import data, trainer
from research.tasks.classify import ClassifyTask
from research.transfer import features, probes


def _config(tiny_config, cache_dir, kind):
  c = tiny_config(task="probe", num_steps=0, eval_batch_size=128,
                  **{"data.few_shot_k": 10, "data.few_shot_val": 2,
                     "data.train_split": "train[:600]", "data.eval_split": "test[:300]"})
  c.probe = ml_collections.ConfigDict(dict(kind=kind, l2_grid=(), cache_dir=str(cache_dir),
                                           batch_size=128))
  return c


def _reference(config):
  """(test accuracy, l2) of the probe on features from model.apply, no cache."""
  task = ClassifyTask(config)  # the same backbone and initialisation as the probe task
  cfg = config.data
  train = data.load(cfg.name, cfg.train_split)
  test = data.load(cfg.name, cfg.eval_split)
  variables = task.init_variables(jax.random.PRNGKey(0), {"image": train["image"][:1]})
  feats = lambda images: np.asarray(task.model.apply(
      variables, task.inputs(images), train=False, return_features=True)[1])
  tr, va = data.train_val_indices(train["label"], 10, cfg.few_shot_seed, 2)
  x = feats(train["image"])
  probe = probes.fit_probe(config.probe.kind, x[tr], train["label"][tr], x[va],
                           train["label"][va], 10)
  pred = np.argmax(feats(test["image"]) @ probe.w + probe.b, -1)
  return float(np.mean(pred == test["label"])), probe.l2


@pytest.mark.parametrize("kind", ["ridge", pytest.param("logistic", marks=pytest.mark.slow)])
def test_probe_task_reports_the_probe_accuracy_and_reuses_the_cache(tiny_config, tmp_path,
                                                                    monkeypatch, kind):
  config = _config(tiny_config, tmp_path / "cache", kind)
  out = trainer.train_and_evaluate(config, str(tmp_path / "run1"))
  want_acc, want_l2 = _reference(config)
  assert out["step"] == 0
  assert out["accuracy"] == pytest.approx(want_acc, abs=1e-9)
  assert out["probe_l2"] == want_l2
  assert 0 <= out["val_accuracy"] <= 1
  with open(tmp_path / "run1" / "probe.json") as f:
    assert json.load(f)["l2"] == want_l2
  cached = sorted(os.listdir(tmp_path / "cache"))
  assert len(cached) == 2  # train and test split

  # Second run (another workdir): both splits come from the cache, no extraction.
  def no_extraction(*args, **kwargs):
    raise AssertionError("features extracted although cached")
  monkeypatch.setattr(features, "extract", no_extraction)
  again = trainer.train_and_evaluate(config, str(tmp_path / "run2"))
  assert again["accuracy"] == out["accuracy"]
  assert sorted(os.listdir(tmp_path / "cache")) == cached
