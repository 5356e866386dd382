"""Adversarial losses and penalties against hand-computed closed forms."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.losses import adversarial

REAL = np.array([2.0, -1.0, 0.5], np.float32)
FAKE = np.array([-3.0, 0.25, 1.5], np.float32)


def _log_sigmoid(x):
  return -np.log1p(np.exp(-x))


def test_non_saturating_values():
  d = adversarial.discriminator_loss(REAL, FAKE, "non_saturating")
  expect_d = (-np.mean(_log_sigmoid(REAL.astype(np.float64)))
              - np.mean(np.log(1 - 1 / (1 + np.exp(-FAKE.astype(np.float64))))))
  np.testing.assert_allclose(d, expect_d, rtol=1e-6)
  g = adversarial.generator_loss(FAKE, "non_saturating")
  np.testing.assert_allclose(g, -np.mean(_log_sigmoid(FAKE.astype(np.float64))),
                             rtol=1e-6)
  # At D = 0 everywhere: D loss is 2 log 2, G loss log 2.
  z = np.zeros(4, np.float32)
  np.testing.assert_allclose(adversarial.discriminator_loss(z, z), 2 * math.log(2),
                             rtol=1e-6)


def test_hinge_values():
  # relu(1-r): [0, 2, 0.5] -> 2.5/3; relu(1+f): [0, 1.25, 2.5] -> 3.75/3.
  d = adversarial.discriminator_loss(REAL, FAKE, "hinge")
  np.testing.assert_allclose(d, 2.5 / 3 + 3.75 / 3, rtol=1e-6)
  g = adversarial.generator_loss(FAKE, "hinge")
  np.testing.assert_allclose(g, -(-3.0 + 0.25 + 1.5) / 3, rtol=1e-6)


def test_least_squares_and_wasserstein_values():
  d = adversarial.discriminator_loss(REAL, FAKE, "least_squares")
  expect = 0.5 * np.mean((REAL - 1) ** 2) + 0.5 * np.mean(FAKE ** 2)
  np.testing.assert_allclose(d, expect, rtol=1e-6)
  np.testing.assert_allclose(adversarial.generator_loss(FAKE, "least_squares"),
                             0.5 * np.mean((FAKE - 1) ** 2), rtol=1e-6)
  np.testing.assert_allclose(
      adversarial.discriminator_loss(REAL, FAKE, "wasserstein"),
      FAKE.mean() - REAL.mean(), rtol=1e-6)
  np.testing.assert_allclose(adversarial.generator_loss(FAKE, "wasserstein"),
                             -FAKE.mean(), rtol=1e-6)


def test_unknown_kind_names_it():
  with pytest.raises(ValueError, match="'hingee'"):
    adversarial.discriminator_loss(REAL, FAKE, "hingee")


def test_gradient_penalty_linear_discriminator():
  # D(x) = <w, x> + b has gradient w everywhere: penalty = (||w|| - 1)^2
  # whatever the interpolation point.
  rng = np.random.default_rng(0)
  w = rng.normal(size=(4, 4, 1)).astype(np.float32)
  disc = lambda x: jnp.sum(x * w, axis=(1, 2, 3)) + 0.3
  real = rng.normal(size=(5, 4, 4, 1)).astype(np.float32)
  fake = rng.normal(size=(5, 4, 4, 1)).astype(np.float32)
  gp = adversarial.gradient_penalty(disc, real, fake, jax.random.key(0))
  np.testing.assert_allclose(gp, (np.linalg.norm(w) - 1.0) ** 2, rtol=1e-5)
  r1 = adversarial.r1_penalty(disc, real)
  np.testing.assert_allclose(r1, np.sum(w.astype(np.float64) ** 2), rtol=1e-5)


def test_gradient_penalty_quadratic_discriminator():
  # D(x) = 1/2 ||x||^2 has gradient x: the penalty evaluates at the
  # interpolate x_hat = eps real + (1 - eps) fake, eps in [0, 1] per example.
  # With real == fake the interpolate is exactly real.
  disc = lambda x: 0.5 * jnp.sum(x ** 2, axis=(1, 2, 3))
  real = np.random.default_rng(1).normal(size=(3, 2, 2, 1)).astype(np.float32)
  gp = adversarial.gradient_penalty(disc, real, real, jax.random.key(3))
  norms = np.linalg.norm(real.reshape(3, -1), axis=1)
  np.testing.assert_allclose(gp, np.mean((norms - 1) ** 2), rtol=1e-5)
  np.testing.assert_allclose(adversarial.r1_penalty(disc, real),
                             np.mean(norms ** 2), rtol=1e-5)


def test_a_new_loss_is_a_registered_pair_of_functions():
  """Registering a toy kind makes it usable by name; no kind falls through to a default."""
  @adversarial.register("toy_linear", "discriminator")
  def toy_d(real_logits, fake_logits):
    return jnp.mean(fake_logits) - 2.0 * jnp.mean(real_logits)

  with pytest.raises(ValueError, match="kind must be one of"):  # no generator half yet
    adversarial.discriminator_loss(jnp.ones(3), jnp.zeros(3), "toy_linear")

  @adversarial.register("toy_linear", "generator")
  def toy_g(fake_logits):
    return -3.0 * jnp.mean(fake_logits)

  try:
    assert "toy_linear" in adversarial.kinds()
    np.testing.assert_allclose(
        adversarial.discriminator_loss(jnp.array([1.0, 3.0]), jnp.array([0.5]), "toy_linear"),
        0.5 - 2.0 * 2.0)
    np.testing.assert_allclose(adversarial.generator_loss(jnp.array([2.0]), "toy_linear"), -6.0)
  finally:
    del adversarial.DISCRIMINATOR_LOSSES["toy_linear"], adversarial.GENERATOR_LOSSES["toy_linear"]
  for fn in (lambda: adversarial.generator_loss(jnp.ones(2), "hinge_typo"),
             lambda: adversarial.discriminator_loss(jnp.ones(2), jnp.ones(2), "toy_linear")):
    with pytest.raises(ValueError, match="kind must be one of"):
      fn()
