"""Classification task pieces against independent references (numpy, scikit-learn)."""
import jax
import numpy as np
import pytest
from sklearn import metrics as skm

from research.losses import classification as losses
from research.metrics import classification as metrics
from research.tasks.classify import ClassifyTask
from tests.steps import one_device_step


def test_cross_entropy_with_label_smoothing_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, 5)).astype(np.float32)
  labels = rng.integers(0, 5, 6)
  s = 0.1
  target = np.full((6, 5), s / 5)
  target[np.arange(6), labels] += 1 - s
  logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  np.testing.assert_allclose(losses.cross_entropy(logits, labels, s), -(target * logp).sum(1),
                             rtol=1e-5)
  with pytest.raises(ValueError, match=r"smoothing must be in \[0, 1\), got 1.5"):
    losses.smooth_labels(np.eye(3), 1.5)


def test_confusion_and_macro_scores_match_scikit_learn():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 4, 200)
  preds = np.where(rng.random(200) < 0.7, labels, rng.integers(0, 4, 200))
  mask = (rng.random(200) < 0.9).astype(np.float32)
  conf = np.asarray(metrics.confusion_matrix(preds, labels, 4, mask))
  keep = mask > 0
  np.testing.assert_array_equal(conf, skm.confusion_matrix(labels[keep], preds[keep], labels=range(4)))
  ours = metrics.precision_recall_f1(conf)
  p, r, f, _ = skm.precision_recall_fscore_support(labels[keep], preds[keep], average="macro")
  assert ours["accuracy"] == pytest.approx(skm.accuracy_score(labels[keep], preds[keep]))
  assert (ours["precision"], ours["recall"], ours["f1"]) == pytest.approx((p, r, f))


def test_train_step_applies_the_configured_augmentation_on_the_device(tiny_config):
  config = tiny_config(augment="affine(rotate=10,translate=0.1,scale=0.1)|random_erasing(p=0.25)",
                       mix="mixup")
  task = ClassifyTask(config)
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (8, 28, 28, 1), dtype=np.uint8),
           "label": rng.integers(0, 10, 8).astype(np.int32)}
  state = task.init_state(jax.random.PRNGKey(0), batch)
  step = one_device_step(task)
  new, m = step(state, batch, jax.random.PRNGKey(1))
  assert np.isfinite(m["loss"]).all()
  changed = jax.tree.leaves(jax.tree.map(lambda a, b: np.any(np.asarray(a)[0] != np.asarray(b)),
                                         new.params, state.params))
  assert all(changed)
