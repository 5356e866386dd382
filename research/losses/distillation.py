"""Knowledge distillation (Hinton, Vinyals & Dean, 2015).

loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T))
       + (1 - alpha) * CE(labels, softmax(s)).
The T^2 factor keeps the soft-target gradients' magnitude independent of T.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def soft_target_kl(student_logits: jax.Array, teacher_logits: jax.Array,
                   temperature: float = 1.0) -> jax.Array:
  """Per-example KL(p_teacher || p_student) at temperature T (not scaled by T^2).

  Args:
    student_logits: float [N, C].
    teacher_logits: float [N, C]; treated as constants (no gradient).
    temperature: T > 0.
  Returns:
    float32 [N], >= 0.
  """
  if temperature <= 0:
    raise ValueError(f"distillation: temperature must be > 0, got {temperature}")
  if student_logits.shape != teacher_logits.shape:
    raise ValueError(f"distillation: student logits {student_logits.shape} and "
                     f"teacher logits {teacher_logits.shape} must match")
  t = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32)) / temperature
  s = student_logits.astype(jnp.float32) / temperature
  log_p = jax.nn.log_softmax(t, axis=-1)
  log_q = jax.nn.log_softmax(s, axis=-1)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def distillation_loss(student_logits: jax.Array, teacher_logits: jax.Array,
                      labels: jax.Array, temperature: float = 4.0,
                      alpha: float = 0.9) -> jax.Array:
  """Per-example KD loss mixing soft teacher targets and hard labels.

  Args:
    student_logits: float [N, C].
    teacher_logits: float [N, C] from the frozen teacher.
    labels: int [N] in [0, C).
    temperature: T > 0 softening both distributions in the KL term.
    alpha: weight in [0, 1] of the soft (KL * T^2) term; 1 - alpha weighs the
      hard-label cross-entropy at T = 1.
  Returns:
    float32 [N].
  """
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"distillation: alpha must be in [0, 1], got {alpha}")
  soft = soft_target_kl(student_logits, teacher_logits, temperature)
  log_q = jax.nn.log_softmax(student_logits.astype(jnp.float32), axis=-1)
  hard = -jnp.take_along_axis(log_q, labels[:, None].astype(jnp.int32),
                              axis=-1)[:, 0]
  return alpha * temperature ** 2 * soft + (1.0 - alpha) * hard
