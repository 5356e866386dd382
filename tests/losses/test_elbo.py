"""ELBO pieces against scipy and closed forms."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from research.losses import elbo


def test_bernoulli_log_likelihood_matches_scipy():
  rng = np.random.default_rng(0)
  logits = rng.normal(scale=3, size=(4, 5, 5, 1)).astype(np.float32)
  x = (rng.uniform(size=logits.shape) < 0.5).astype(np.float32)
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  expect = stats.bernoulli.logpmf(x, p).reshape(4, -1).sum(1)
  np.testing.assert_allclose(elbo.bernoulli_log_likelihood(logits, x), expect,
                             rtol=1e-5)


@pytest.mark.parametrize("learned", [False, True])
def test_gaussian_log_likelihood_matches_scipy(learned):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(3, 4, 4, 2)).astype(np.float32)
  mean = rng.normal(size=x.shape).astype(np.float32)
  log_scale = (rng.normal(scale=0.5, size=x.shape).astype(np.float32)
               if learned else math.log(0.3))
  expect = stats.norm.logpdf(x, mean, np.exp(log_scale)).reshape(3, -1).sum(1)
  np.testing.assert_allclose(
      elbo.gaussian_log_likelihood(mean, x, log_scale), expect, rtol=1e-5)


def test_discretized_logistic_matches_scipy_and_normalises():
  num_bins = 256
  rng = np.random.default_rng(2)
  k = rng.integers(0, num_bins, size=(4, 3, 3, 1))
  k[0, 0, 0, 0], k[0, 0, 1, 0] = 0, num_bins - 1  # both edge bins
  x = (k / (num_bins - 1)).astype(np.float32)
  mean = rng.uniform(-0.1, 1.1, size=x.shape).astype(np.float32)
  log_scale = rng.uniform(-5, -1, size=x.shape).astype(np.float32)
  s = np.exp(log_scale.astype(np.float64))
  half = 0.5 / (num_bins - 1)
  upper = np.where(k == num_bins - 1, np.inf, x + half)
  lower = np.where(k == 0, -np.inf, x - half)
  # Difference of CDFs left of the mean, of survival functions right of it,
  # so the float64 reference does not cancel catastrophically in the tails.
  left = x < mean
  prob = np.where(left,
                  stats.logistic.cdf(upper, mean, s)
                  - stats.logistic.cdf(lower, mean, s),
                  stats.logistic.sf(lower, mean, s)
                  - stats.logistic.sf(upper, mean, s))
  expect = np.log(prob).reshape(4, -1).sum(1)
  got = elbo.discretized_logistic_log_likelihood(mean, log_scale, x, num_bins)
  np.testing.assert_allclose(got, expect, rtol=1e-4)
  # The probabilities of all bins for one pixel sum to one.
  grid = (np.arange(num_bins) / (num_bins - 1)).astype(np.float32)
  lp = elbo.discretized_logistic_log_likelihood(
      np.full((num_bins, 1), 0.4, np.float32), np.float32(-3.0), grid[:, None],
      num_bins)
  np.testing.assert_allclose(np.exp(np.asarray(lp, np.float64)).sum(), 1.0,
                             rtol=1e-4)


def test_gaussian_kl_matches_numerical_integration():
  m1, v1, m2, v2 = 0.7, 0.5, -0.4, 2.0
  integrand = lambda z: stats.norm.pdf(z, m1, v1 ** 0.5) * (
      stats.norm.logpdf(z, m1, v1 ** 0.5) - stats.norm.logpdf(z, m2, v2 ** 0.5))
  expect, _ = integrate.quad(integrand, -30, 30)
  got = elbo.gaussian_kl(jnp.array([[m1]]), jnp.log(jnp.array([[v1]])),
                         m2, math.log(v2))
  np.testing.assert_allclose(got, [expect], rtol=1e-5)
  # Standard-normal prior, several dims: sum of 1-d closed forms.
  mean = np.array([[0.3, -1.0, 2.0]], np.float32)
  log_var = np.array([[0.1, -0.5, 0.0]], np.float32)
  v = np.exp(log_var)
  np.testing.assert_allclose(
      elbo.gaussian_kl(mean, log_var),
      [np.sum(0.5 * (v + mean ** 2 - 1 - log_var))], rtol=1e-5)
  np.testing.assert_allclose(elbo.gaussian_kl(np.zeros((2, 3)),
                                              np.zeros((2, 3))), [0, 0])


# A linear-Gaussian model where everything is closed form:
# p(z) = N(0, 1), p(x | z) = N(w z + b, s^2), so p(x) = N(b, w^2 + s^2).
W, B, S = 1.5, 0.2, 0.5
X = np.array([[-1.0], [0.4], [2.5]], np.float32)


def _loglik(z, x):
  return elbo.gaussian_log_likelihood(W * z + B, x, math.log(S))


def _exact_log_px():
  return stats.norm.logpdf(X[:, 0], B, math.sqrt(W ** 2 + S ** 2))


def _analytic_elbo(m, v):
  # E_q log N(x | w z + b, s^2) = log N(x | w m + b, s^2) - w^2 v / (2 s^2).
  ell = stats.norm.logpdf(X[:, 0], W * m + B, S) - W ** 2 * v / (2 * S ** 2)
  kl = 0.5 * (v + m ** 2 - 1 - np.log(v))
  return ell - kl


def test_iwae_exact_posterior_gives_log_px_for_every_k():
  post_var = S ** 2 / (W ** 2 + S ** 2)
  post_mean = W * (X[:, 0] - B) / (W ** 2 + S ** 2)
  mean = post_mean[:, None].astype(np.float32)
  log_var = np.full_like(mean, math.log(post_var))
  for k in (1, 10):
    got = elbo.iwae_bound(jax.random.key(0), X, mean, log_var, _loglik, k, 5)
    np.testing.assert_allclose(got, _exact_log_px(), rtol=1e-4)


def test_iwae_k1_is_elbo_and_increases_with_k():
  # A deliberately poor q: the gap to log p(x) is large.
  m = np.array([0.0, 0.0, 0.5]); v = np.array([0.3, 0.3, 0.3])
  mean = np.tile(m[:, None], (1, 1)).astype(np.float32)
  log_var = np.log(v)[:, None].astype(np.float32)
  bound = jax.jit(jax.vmap(
      lambda key, k: elbo.iwae_bound(key, X, mean, log_var, _loglik, k, 10),
      in_axes=(0, None)), static_argnums=1)
  # log w has a standard deviation of about 4.5 nats here: 50k repetitions
  # put the k=1 mean within ~0.02 nats (1 s.e.) of its expectation.
  reps = {1: 50_000, 10: 5_000, 100: 2_000}
  means = {k: np.asarray(bound(jax.random.split(jax.random.key(k), r), k)).mean(0)
           for k, r in reps.items()}
  expect_elbo = _analytic_elbo(m, v)
  np.testing.assert_allclose(means[1], expect_elbo, atol=0.08)
  log_px = _exact_log_px()
  assert np.all(means[10] > means[1] + 0.05)
  assert np.all(means[100] > means[10])
  assert np.all(means[100] < log_px + 0.01)
  assert np.all(log_px - means[100] < 0.5 * (log_px - expect_elbo))


def test_iwae_chunking_does_not_change_result_and_k1000_runs():
  mean = np.zeros((3, 1), np.float32); log_var = np.zeros((3, 1), np.float32)
  a = elbo.iwae_bound(jax.random.key(2), X, mean, log_var, _loglik, 1000, 1000)
  b = elbo.iwae_bound(jax.random.key(2), X, mean, log_var, _loglik, 1000, 50)
  np.testing.assert_allclose(a, b, rtol=1e-5)
  # q = prior: L_1000 is close to log p(x) for a 1-d latent.
  np.testing.assert_allclose(b, _exact_log_px(), atol=0.15)
  with pytest.raises(ValueError, match="chunk_size"):
    elbo.iwae_bound(jax.random.key(2), X, mean, log_var, _loglik, 1000, 300)


def test_bits_per_dim():
  np.testing.assert_allclose(elbo.bits_per_dim(784 * math.log(2) * 1.5, 784),
                             1.5, rtol=1e-6)
  # A uniform over 256 values is 8 bits/dim.
  np.testing.assert_allclose(elbo.bits_per_dim(784 * math.log(256), 784), 8.0,
                             rtol=1e-6)


def test_elbo_beta():
  np.testing.assert_allclose(elbo.elbo(jnp.array([-10.0]), jnp.array([4.0]), 0.5),
                             [-12.0])
