"""Evidence lower bound pieces: likelihoods, analytic KL, ELBO, IWAE bound.

All log-likelihoods are in nats and summed over every non-batch axis, so they
return one value per example, float32 [B]. Sign convention: functions named
`*_log_likelihood`, `elbo` and `iwae_bound` return log-probabilities (higher is
better); a training loss is their negative mean.
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

LOG_2PI = math.log(2.0 * math.pi)


def _sum_per_example(x: jax.Array) -> jax.Array:
  return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def bernoulli_log_likelihood(logits: jax.Array, x: jax.Array) -> jax.Array:
  """log Bernoulli(x | sigmoid(logits)), summed per example.

  Args:
    logits: float [B, ...], decoder outputs (any real value).
    x: float [B, ...] same shape, targets in {0, 1} (dynamically binarised
      data); values in [0, 1] give the continuous cross-entropy.

  Returns:
    float32 [B], <= 0 for binary x.
  """
  logits = jnp.asarray(logits, jnp.float32)
  x = jnp.asarray(x, jnp.float32)
  # x log s + (1-x) log(1-s) = x*l - softplus(l).
  return _sum_per_example(x * logits - jax.nn.softplus(logits))


def gaussian_log_likelihood(mean: jax.Array, x: jax.Array,
                            log_scale: jax.Array | float = 0.0) -> jax.Array:
  """log N(x | mean, exp(log_scale)^2), summed per example.

  Fixed variance: pass a Python float (e.g. log(0.1)); learned variance: pass
  an array broadcastable to `x` (per pixel or per example).

  Args:
    mean: float [B, ...], the decoder's mean.
    x: float [B, ...] same shape, the data.
    log_scale: float, scalar or broadcastable to x; log standard deviation.

  Returns:
    float32 [B] (a density: may be positive).
  """
  x = jnp.asarray(x, jnp.float32)
  log_scale = jnp.broadcast_to(jnp.asarray(log_scale, jnp.float32), x.shape)
  z = (x - mean) * jnp.exp(-log_scale)
  return _sum_per_example(-0.5 * jnp.square(z) - log_scale - 0.5 * LOG_2PI)


def discretized_logistic_log_likelihood(mean: jax.Array, log_scale: jax.Array,
                                        x: jax.Array,
                                        num_bins: int = 256) -> jax.Array:
  """log P(x) under a logistic discretized into `num_bins` bins on [0, 1].

  As in PixelCNN++ (Salimans et al. 2017) with data rescaled to [0, 1]: pixel
  value k in {0, ..., num_bins - 1} sits at x = k / (num_bins - 1) and owns the
  interval x +- 1 / (2 (num_bins - 1)); the first and last bins extend to -inf
  and +inf, so the probabilities over the bins sum to one.

  Args:
    mean: float [B, ...], logistic location.
    log_scale: float broadcastable to `mean`, log of the logistic scale.
    x: float [B, ...], data in [0, 1] on the grid k / (num_bins - 1).
    num_bins: number of discrete values (256 for 8-bit images).

  Returns:
    float32 [B], <= 0.
  """
  if num_bins < 2:
    raise ValueError(f"losses.discretized_logistic_log_likelihood: num_bins "
                     f"must be >= 2, got {num_bins}")
  x = jnp.asarray(x, jnp.float32)
  mean = jnp.asarray(mean, jnp.float32)
  log_scale = jnp.broadcast_to(jnp.asarray(log_scale, jnp.float32), x.shape)
  half = 0.5 / (num_bins - 1)
  inv_s = jnp.exp(-log_scale)
  upper = (x + half - mean) * inv_s
  lower = (x - half - mean) * inv_s
  # log sigmoid(u) for the last-bin-free upper tail, log(1 - sigmoid(l)).
  log_cdf_upper = jax.nn.log_sigmoid(upper)
  log_sf_lower = jax.nn.log_sigmoid(-lower)
  # log(sigmoid(u) - sigmoid(l)), stable: sigmoid(u) - sigmoid(l) =
  # sigmoid(u) * sigmoid(-l) * (1 - exp(l - u)).
  log_mid = (log_cdf_upper + log_sf_lower
             + jnp.log(-jnp.expm1(jnp.minimum(lower - upper, -1e-12))))
  is_first = x < half
  is_last = x > 1.0 - half
  logp = jnp.where(is_first, log_cdf_upper,
                   jnp.where(is_last, log_sf_lower, log_mid))
  return _sum_per_example(logp)


def gaussian_kl(mean: jax.Array, log_var: jax.Array,
                prior_mean: jax.Array | float = 0.0,
                prior_log_var: jax.Array | float = 0.0) -> jax.Array:
  """KL(N(mean, exp(log_var)) || N(prior_mean, exp(prior_log_var))), diagonal.

  Analytic, summed over the latent axes. Defaults give KL to N(0, I).

  Args:
    mean: float [B, D], posterior means.
    log_var: float [B, D], posterior log-variances.
    prior_mean, prior_log_var: float, broadcastable to [B, D].

  Returns:
    float32 [B], >= 0.
  """
  mean = jnp.asarray(mean, jnp.float32)
  log_var = jnp.asarray(log_var, jnp.float32)
  kl = 0.5 * (prior_log_var - log_var
              + (jnp.exp(log_var) + jnp.square(mean - prior_mean))
              * jnp.exp(-jnp.asarray(prior_log_var, jnp.float32))
              - 1.0)
  return _sum_per_example(kl)


def elbo(log_likelihood: jax.Array, kl: jax.Array,
         beta: jax.Array | float = 1.0) -> jax.Array:
  """ELBO (beta-VAE form) E_q[log p(x|z)] - beta * KL(q(z|x) || p(z)).

  beta = 1 is the evidence lower bound; beta != 1 is Higgins et al.'s
  objective (not a bound), and a schedule 0 -> 1 is KL warm-up.

  Args:
    log_likelihood: float [B], a (one-sample) estimate of E_q log p(x|z).
    kl: float [B], KL(q(z|x) || p(z)).
    beta: float scalar (may be traced).

  Returns:
    float32 [B], in nats.
  """
  return log_likelihood - beta * kl


def diagonal_gaussian_log_density(z: jax.Array, mean: jax.Array,
                                  log_var: jax.Array) -> jax.Array:
  """log N(z | mean, diag(exp(log_var))) summed over the last axis.

  Args:
    z, mean, log_var: float [..., D] (broadcastable).

  Returns:
    float32 [...].
  """
  return jnp.sum(-0.5 * (LOG_2PI + log_var
                         + jnp.square(z - mean) * jnp.exp(-log_var)), axis=-1)


def iwae_bound_from_log_weights(log_weights: jax.Array) -> jax.Array:
  """log (1/k sum_i exp(log_w_i)) over axis 0 (Burda et al. 2016).

  Args:
    log_weights: float [K, B], log p(x, z_i) - log q(z_i | x).

  Returns:
    float32 [B].
  """
  k = log_weights.shape[0]
  return jax.scipy.special.logsumexp(log_weights, axis=0) - math.log(k)


def iwae_bound(key: jax.Array, x: jax.Array, posterior_mean: jax.Array,
               posterior_log_var: jax.Array,
               log_likelihood_fn: Callable[[jax.Array, jax.Array], jax.Array],
               num_samples: int, chunk_size: int = 100) -> jax.Array:
  """The importance-weighted bound L_k on log p(x), with a N(0, I) prior.

  L_1 is the ELBO (in expectation); L_k does not decrease with k and tends to
  log p(x). The decoder runs on `chunk_size` samples at a time (a `lax.map`
  over chunks), so k = 1000 costs the memory of `chunk_size` decoder passes.
  The result depends only on `key` and k, not on `chunk_size`.

  Args:
    key: PRNG key for the latent samples.
    x: float [B, ...], the data, passed through to `log_likelihood_fn`.
    posterior_mean, posterior_log_var: float [B, D], q(z | x).
    log_likelihood_fn: `(z [B, D], x [B, ...]) -> log p(x | z)` float [B].
    num_samples: k >= 1.
    chunk_size: samples decoded at once; must divide `num_samples` (it is
      lowered to `num_samples` when larger).

  Returns:
    float32 [B], in nats.
  """
  if num_samples < 1:
    raise ValueError(f"losses.iwae_bound: num_samples must be >= 1, got "
                     f"{num_samples}")
  chunk_size = min(chunk_size, num_samples)
  if num_samples % chunk_size:
    raise ValueError(f"losses.iwae_bound: chunk_size ({chunk_size}) must "
                     f"divide num_samples ({num_samples})")
  mean = jnp.asarray(posterior_mean, jnp.float32)
  log_var = jnp.asarray(posterior_log_var, jnp.float32)
  keys = jax.random.split(key, num_samples)
  keys = keys.reshape((num_samples // chunk_size, chunk_size) + keys.shape[1:])

  def log_weights_for(sample_key):
    eps = jax.random.normal(sample_key, mean.shape, jnp.float32)
    z = mean + jnp.exp(0.5 * log_var) * eps
    log_q = diagonal_gaussian_log_density(z, mean, log_var)
    log_prior = diagonal_gaussian_log_density(z, 0.0, jnp.zeros_like(z))
    return log_likelihood_fn(z, x) + log_prior - log_q

  log_w = jax.lax.map(jax.vmap(log_weights_for), keys)
  log_w = log_w.reshape(num_samples, -1)
  return iwae_bound_from_log_weights(log_w)


def bits_per_dim(nats: jax.Array | float, num_dims: int) -> jax.Array:
  """Converts a per-example negative log-likelihood in nats to bits/dim.

  Only meaningful for a discrete likelihood (Bernoulli on binarised data,
  discretized logistic); a continuous density needs the dequantisation
  offset first.

  Args:
    nats: float [...] (e.g. -log p(x) per example, >= 0).
    num_dims: number of data dimensions per example, H * W * C.

  Returns:
    float [...], nats / (num_dims * ln 2).
  """
  if num_dims < 1:
    raise ValueError(f"losses.bits_per_dim: num_dims must be >= 1, got "
                     f"{num_dims}")
  return jnp.asarray(nats) / (num_dims * math.log(2.0))
