"""Classification losses: cross-entropy with hard, smoothed or soft targets."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def smooth_labels(onehot: jax.Array, smoothing: float) -> jax.Array:
  """Label smoothing: (1 - s) * onehot + s / C.  onehot: [N, C] rows summing to 1."""
  if not 0.0 <= smoothing < 1.0:
    raise ValueError(f"losses.smooth_labels: smoothing must be in [0, 1), got {smoothing}")
  return onehot * (1.0 - smoothing) + smoothing / onehot.shape[-1]


def softmax_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """-sum_c targets_c * log softmax(logits)_c per example.

  logits: float [N, C]; targets: float [N, C] (one-hot, smoothed or soft,
  rows summing to 1). Returns [N].
  """
  return -jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32)), axis=-1)


def cross_entropy(logits: jax.Array, labels: jax.Array, smoothing: float = 0.0) -> jax.Array:
  """Cross-entropy with integer labels [N] in [0, C) and optional label smoothing; [N]."""
  onehot = jax.nn.one_hot(labels, logits.shape[-1])
  if smoothing:
    onehot = smooth_labels(onehot, smoothing)
  return softmax_cross_entropy(logits, onehot)
