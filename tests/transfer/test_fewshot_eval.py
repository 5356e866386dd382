"""Few-shot evaluation during training: the logged k-shot accuracies equal a
numpy ridge probe (closed form, centred features over one scale) on features of the
saved checkpoint computed with model.apply."""
import json

import jax
import ml_collections
import numpy as np
import pytest

from research import data, trainer
from research.tasks import get_task
from research.transfer import fewshot_eval


def _numpy_ridge_accuracy(x, y, x_test, y_test, l2, num_classes=10):
  mean = x.mean(0)
  scale = np.sqrt(np.mean((x - mean) ** 2))  # one scale for all features (probes.fit_probe)
  z, zt = (x - mean) / scale, (x_test - mean) / scale
  t = np.eye(num_classes)[y]
  zc, tc = z - z.mean(0), t - t.mean(0)
  w = zc.T @ np.linalg.solve(zc @ zc.T + l2 * np.eye(len(z)), tc)  # dual form, N < D
  b = t.mean(0) - z.mean(0) @ w
  return float(np.mean(np.argmax(zt @ w + b, -1) == y_test))


@pytest.mark.slow
def test_fewshot_metrics_are_logged_and_match_numpy(tiny_config, tmp_path):
  config = tiny_config(num_steps=10, eval_every=10, checkpoint_every=5)
  config.fewshot = ml_collections.ConfigDict(dict(every=5, k=(1, 5), seeds=(0, 1),
                                                  eval_size=300, l2=2.0, batch_size=64))
  trainer.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f if '"fewshot"' in line]
  assert [r["step"] for r in rows] == [5, 10]
  assert all(set(r) >= {"1shot", "5shot"} for r in rows)

  train = data.load(config.data.name, "train")
  test = data.load(config.data.name, "test")
  for row in rows:
    task, state = trainer.load_state(str(tmp_path), step=row["step"])
    feats = jax.jit(task.features)
    x_test = np.asarray(feats(state, test["image"][:300]), np.float64)
    for k in (1, 5):
      accs = []
      for seed in (0, 1):
        idx = data.few_shot_indices(train["label"], k, seed)
        x = np.asarray(feats(state, train["image"][idx]), np.float64)
        accs.append(_numpy_ridge_accuracy(x, train["label"][idx], x_test,
                                          test["label"][:300], 2.0))
      # float32 vs float64: at most one of the 300 test predictions may flip.
      assert row[f"{k}shot"] == pytest.approx(np.mean(accs), abs=1.01 / 300), (row["step"], k)
  # The probes see the representation of the current step, which moved.
  assert rows[0]["1shot"] != rows[1]["1shot"] or rows[0]["5shot"] != rows[1]["5shot"]


def test_fewshot_refuses_a_task_without_features_and_unknown_fields(tiny_config):
  config = tiny_config(task="probe")
  config.fewshot = ml_collections.ConfigDict(dict(every=5))
  with pytest.raises(ValueError, match="ProbeTask exposes no features"):
    fewshot_eval.for_run(config, get_task("probe", config))
  config = tiny_config()
  config.fewshot = ml_collections.ConfigDict(dict(every=5, shots=(1,)))
  with pytest.raises(ValueError, match=r"unknown field\(s\) \['shots'\]"):
    fewshot_eval.for_run(config, get_task("classify", config))
  config.fewshot = ml_collections.ConfigDict(dict(every=0))
  assert fewshot_eval.for_run(config, get_task("classify", config)) is None
