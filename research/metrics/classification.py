"""Classification metrics: accuracy, confusion matrix, macro precision / recall / F1.

The confusion matrix is accumulated on the device (summable across batches
and devices); the ratios are computed on the host from the summed matrix.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def confusion_matrix(predictions: jax.Array, labels: jax.Array, num_classes: int,
                     mask: jax.Array | None = None) -> jax.Array:
  """Counts [C, C]: entry [t, p] = number of examples of true class t predicted p.

  predictions, labels: int [N] in [0, C); mask: float [N] in {0, 1} or None.
  Written as a one-hot matmul (no scatter), which is fast on every backend.
  """
  weight = jnp.ones(labels.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
  true = jax.nn.one_hot(labels, num_classes) * weight[:, None]
  pred = jax.nn.one_hot(predictions, num_classes)
  return true.T @ pred


def precision_recall_f1(confusion: np.ndarray) -> dict[str, float]:
  """Accuracy and macro-averaged precision, recall and F1 from a [C, C] confusion matrix.

  A class never predicted has precision 0; a class absent from the labels is
  left out of the macro average of recall (and F1).
  """
  c = np.asarray(confusion, np.float64)
  tp = np.diag(c)
  predicted = c.sum(0)
  actual = c.sum(1)
  present = actual > 0
  precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
  recall = np.divide(tp, actual, out=np.zeros_like(tp), where=present)
  denom = precision + recall
  f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
  return {
      "accuracy": float(tp.sum() / max(c.sum(), 1.0)),
      "precision": float(precision[present].mean()) if present.any() else 0.0,
      "recall": float(recall[present].mean()) if present.any() else 0.0,
      "f1": float(f1[present].mean()) if present.any() else 0.0,
  }


def per_class(confusion: np.ndarray, names: list[str]) -> dict[str, dict[str, float]]:
  """Precision, recall, F1 and support of each class of a [C, C] confusion matrix
  (rows: true class, columns: predicted), keyed by the class's name.

  `names[c]` names class c (research.data.class_names); a class never predicted
  has precision 0, a class absent from the labels recall 0 and support 0.
  """
  c = np.asarray(confusion, np.float64)
  if len(names) < c.shape[0]:
    raise ValueError(f"per_class: {len(names)} names for {c.shape[0]} classes")
  tp, predicted, actual = np.diag(c), c.sum(0), c.sum(1)
  out = {}
  for i in range(c.shape[0]):
    p = tp[i] / predicted[i] if predicted[i] else 0.0
    r = tp[i] / actual[i] if actual[i] else 0.0
    out[names[i]] = {"precision": float(p), "recall": float(r),
                     "f1": float(2 * p * r / (p + r)) if p + r else 0.0,
                     "support": int(actual[i])}
  return out
