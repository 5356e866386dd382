"""Distillation loss against the KL divergence and cross-entropy by hand."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.losses import distillation


def _softmax(z):
  e = np.exp(z - z.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("temperature,alpha", [(1.0, 1.0), (4.0, 0.9),
                                               (2.5, 0.0), (8.0, 0.5)])
def test_matches_numpy_kl_and_ce(temperature, alpha):
  rng = np.random.default_rng(0)
  s = rng.normal(size=(7, 5)) * 3
  t = rng.normal(size=(7, 5)) * 3
  y = rng.integers(0, 5, size=7)
  p = _softmax(t / temperature)
  q = _softmax(s / temperature)
  kl = np.sum(p * np.log(p / q), axis=-1)
  ce = -np.log(_softmax(s)[np.arange(7), y])
  want = alpha * temperature ** 2 * kl + (1 - alpha) * ce
  got = distillation.distillation_loss(jnp.asarray(s, jnp.float32),
                                       jnp.asarray(t, jnp.float32),
                                       jnp.asarray(y), temperature, alpha)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
      distillation.soft_target_kl(jnp.asarray(s), jnp.asarray(t), temperature),
      kl, rtol=1e-5, atol=1e-6)


def test_zero_when_student_equals_teacher_and_no_teacher_gradient():
  rng = np.random.default_rng(1)
  z = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
  np.testing.assert_allclose(distillation.soft_target_kl(z, z, 3.0), 0.0,
                             atol=1e-6)
  g = jax.grad(lambda t: distillation.distillation_loss(
      z + 1.0, t, jnp.zeros(4, jnp.int32)).sum())(z)
  np.testing.assert_array_equal(g, 0.0)


def test_bad_arguments_name_the_value():
  z = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
    distillation.soft_target_kl(z, z, 0.0)
  with pytest.raises(ValueError, match="alpha must be in"):
    distillation.distillation_loss(z, z, jnp.zeros(2, jnp.int32), 2.0, 1.5)
  with pytest.raises(ValueError, match="must match"):
    distillation.soft_target_kl(z, jnp.zeros((2, 4)))
