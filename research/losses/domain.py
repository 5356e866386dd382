"""Domain adaptation losses: gradient reversal (DANN), CDAN, CORAL, MMD, importance weights.

Conventions: `source` / `target` features are float [N, D] / [M, D]; a domain
classifier outputs one logit per example, log p(target | x) / p(source | x),
i.e. label 1 = target, 0 = source.

* Gradient reversal (Ganin & Lempitsky, 2015): identity forward, -scale * g
  backward, with the warm-start schedule lambda_p = 2 / (1 + exp(-10 p)) - 1.
  Learning-rate annealing mu_p = mu_0 / (1 + alpha p)^beta is the
  optimizer schedule 'anneal' (research.optim).
* CDAN (Long et al., 2018): the domain classifier sees the multilinear map
  f (x) g of features f and class probabilities g, or its randomized version
  (R_f^T f) * (R_g^T g) / sqrt(d_out) when d_f * d_g is large; CDAN+E weights
  each example's domain loss by w = 1 + exp(-H(g)), normalised per domain.
* CORAL (Sun & Saenko, 2016): ||C_s - C_t||_F^2 / (4 d^2), unbiased covariances.
* MMD (Gretton et al., 2012; Long et al., 2015): biased (V-statistic) squared
  MMD with a sum of Gaussian kernels over several bandwidths.
* Importance weights (Shimodaira, 2000; Bickel et al., 2007): w(x) =
  p(target | x) / p(source | x) from a domain classifier, normalized to mean 1
  over the batch and clipped.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax


# ---------------------------------------------------------------- gradient reversal
@jax.custom_vjp
def gradient_reversal(x: jax.Array, scale: jax.Array) -> jax.Array:
  """Identity forward; multiplies the incoming gradient by -scale backward.

  Args:
    x: any float array (the features fed to a domain discriminator).
    scale: float scalar >= 0 (a traced value, so a schedule compiles once);
      it receives no gradient.
  Returns:
    x, unchanged.
  """
  del scale
  return x


def _grl_fwd(x, scale):
  return x, scale


def _grl_bwd(scale, g):
  return (jax.tree.map(lambda t: -scale * t, g), jnp.zeros_like(scale))


gradient_reversal.defvjp(_grl_fwd, _grl_bwd)


def grl_schedule(progress: jax.Array, gamma: float = 10.0) -> jax.Array:
  """DANN's warm start lambda_p = 2 / (1 + exp(-gamma p)) - 1; p in [0, 1] -> [0, 1)."""
  return 2.0 / (1.0 + jnp.exp(-gamma * jnp.asarray(progress, jnp.float32))) - 1.0


def lr_annealing(progress: jax.Array, mu0: float, alpha: float = 10.0,
                 beta: float = 0.75) -> jax.Array:
  """DANN's learning rate mu_p = mu0 / (1 + alpha p)^beta; p in [0, 1] -> (0, mu0]."""
  return mu0 / (1.0 + alpha * jnp.asarray(progress, jnp.float32)) ** beta


# ---------------------------------------------------------------- CDAN
def multilinear_map(features: jax.Array, probs: jax.Array) -> jax.Array:
  """CDAN's f (x) g: [N, D], [N, C] -> [N, C * D], entry c * D + d = g_c f_d.

  The layout is the reference code's torch.bmm(g[:, :, None], f[:, None, :]).
  """
  if features.ndim != 2 or probs.ndim != 2 or features.shape[0] != probs.shape[0]:
    raise ValueError(f"losses.domain.multilinear_map: expected features [N, D] and probs "
                     f"[N, C], got {features.shape} and {probs.shape}")
  out = probs[:, :, None] * features[:, None, :]
  return out.reshape(features.shape[0], -1)


def random_matrices(feature_dim: int, num_classes: int, out_dim: int = 1024,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Fixed Gaussian R_f float32 [feature_dim, out_dim], R_g [num_classes, out_dim].

  Drawn once from `seed` (never trained), as the reference RandomLayer's torch.randn.
  """
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((feature_dim, out_dim)).astype(np.float32),
          rng.standard_normal((num_classes, out_dim)).astype(np.float32))


def randomized_multilinear_map(features: jax.Array, probs: jax.Array, r_f: jax.Array,
                               r_g: jax.Array) -> jax.Array:
  """(f R_f) * (g R_g) / sqrt(d_out): [N, D], [N, C], [D, d_out], [C, d_out] -> [N, d_out].

  Its inner products approximate those of the full map in expectation
  (Long et al., 2018, Theorem 1).
  """
  if r_f.shape[1] != r_g.shape[1] or r_f.shape[0] != features.shape[-1] \
      or r_g.shape[0] != probs.shape[-1]:
    raise ValueError(f"losses.domain.randomized_multilinear_map: R_f {r_f.shape} and R_g "
                     f"{r_g.shape} do not fit features {features.shape} and probs "
                     f"{probs.shape}")
  return (features @ r_f) * (probs @ r_g) / jnp.sqrt(jnp.float32(r_f.shape[1]))


def entropy(probs: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Shannon entropy in nats of each row: float [N, C] (rows sum to 1) -> [N] in [0, log C]."""
  p = probs.astype(jnp.float32)
  return -jnp.sum(p * jnp.log(p + eps), axis=-1)


def entropy_weights(probs: jax.Array) -> jax.Array:
  """CDAN+E's w = 1 + exp(-H(g)): [N, C] -> [N] in (1, 2], without gradient."""
  return 1.0 + jnp.exp(-entropy(jax.lax.stop_gradient(probs)))


def weighted_domain_classifier_loss(source_logits: jax.Array, target_logits: jax.Array,
                                    source_weights: jax.Array,
                                    target_weights: jax.Array) -> jax.Array:
  """CDAN+E's domain loss: each domain's BCE weighted by w / sum(w) over that domain, halved.

  As the reference code: weight = w_s / sum(w_s) + w_t / sum(w_t), loss =
  sum(weight * BCE) / sum(weight); equal weights give `domain_classifier_loss`.
  """
  s = source_logits.reshape(-1).astype(jnp.float32)
  t = target_logits.reshape(-1).astype(jnp.float32)
  ws = jax.lax.stop_gradient(source_weights.reshape(-1).astype(jnp.float32))
  wt = jax.lax.stop_gradient(target_weights.reshape(-1).astype(jnp.float32))
  return 0.5 * (jnp.sum(ws * optax.sigmoid_binary_cross_entropy(s, jnp.zeros_like(s)))
                / jnp.sum(ws)
                + jnp.sum(wt * optax.sigmoid_binary_cross_entropy(t, jnp.ones_like(t)))
                / jnp.sum(wt))


# ---------------------------------------------------------------- CORAL
def _check_features(source, target, what):
  if source.ndim != 2 or target.ndim != 2 or source.shape[1] != target.shape[1]:
    raise ValueError(f"losses.domain.{what}: expected source [N, D] and target [M, D], "
                     f"got {source.shape} and {target.shape}")


def covariance(x: jax.Array) -> jax.Array:
  """Unbiased covariance of the rows of x: float [N, D] (N >= 2) -> [D, D]."""
  x = x.astype(jnp.float32)
  centered = x - jnp.mean(x, axis=0, keepdims=True)
  return centered.T @ centered / (x.shape[0] - 1)


def coral_loss(source: jax.Array, target: jax.Array) -> jax.Array:
  """Deep CORAL: ||C_s - C_t||_F^2 / (4 d^2).

  Args:
    source: float [N, D], N >= 2.
    target: float [M, D], M >= 2.
  Returns:
    float32 scalar >= 0.
  """
  _check_features(source, target, "coral_loss")
  if source.shape[0] < 2 or target.shape[0] < 2:
    raise ValueError(f"losses.domain.coral_loss: need >= 2 examples per domain, got "
                     f"{source.shape[0]} and {target.shape[0]}")
  d = source.shape[1]
  diff = covariance(source) - covariance(target)
  return jnp.sum(diff * diff) / (4.0 * d * d)


# ---------------------------------------------------------------- MMD
def _sq_dists(a, b):
  return jnp.maximum(jnp.sum(a * a, -1)[:, None] + jnp.sum(b * b, -1)[None, :]
                     - 2.0 * a @ b.T, 0.0)


def mmd_bandwidths(source: jax.Array, target: jax.Array, num_kernels: int = 5,
                   kernel_mul: float = 2.0) -> jax.Array:
  """DAN's bandwidths: sigma^2_k = base * kernel_mul^(k - num_kernels // 2), k < num_kernels.

  base is the mean squared distance over all pairs of the pooled sample
  (including i = j, as the reference code does), without gradient.
  Returns float32 [num_kernels] of squared bandwidths sigma^2 > 0.
  """
  z = jnp.concatenate([source, target], 0).astype(jnp.float32)
  n = z.shape[0]
  base = jax.lax.stop_gradient(jnp.sum(_sq_dists(z, z)) / (n * n))
  base = jnp.maximum(base, 1e-8)
  powers = jnp.arange(num_kernels, dtype=jnp.float32) - num_kernels // 2
  return base * kernel_mul ** powers


def gaussian_kernel(a: jax.Array, b: jax.Array, sigmas2: jax.Array) -> jax.Array:
  """sum_k exp(-||a_i - b_j||^2 / (2 sigma_k^2)): [N, D], [M, D], [K] -> [N, M]."""
  d2 = _sq_dists(a, b)
  return jnp.sum(jnp.exp(-d2[None] / (2.0 * sigmas2[:, None, None])), axis=0)


def mmd_loss(source: jax.Array, target: jax.Array,
             sigmas2: Sequence[float] | jax.Array | None = None,
             num_kernels: int = 5, kernel_mul: float = 2.0) -> jax.Array:
  """Biased squared MMD with a multi-bandwidth Gaussian kernel.

  MMD^2 = mean k(s, s') + mean k(t, t') - 2 mean k(s, t), all pairs including
  i = j, so it is exactly 0 for identical samples and >= 0 always (up to
  rounding).

  Args:
    source: float [N, D].
    target: float [M, D].
    sigmas2: squared bandwidths [K] (> 0); None = `mmd_bandwidths(source,
      target, num_kernels, kernel_mul)`.
  Returns:
    float32 scalar.
  """
  _check_features(source, target, "mmd_loss")
  source = source.astype(jnp.float32)
  target = target.astype(jnp.float32)
  if sigmas2 is None:
    sigmas2 = mmd_bandwidths(source, target, num_kernels, kernel_mul)
  sigmas2 = jnp.asarray(sigmas2, jnp.float32)
  if sigmas2.ndim != 1:
    raise ValueError(f"losses.domain.mmd_loss: sigmas2 must be [K], got shape {sigmas2.shape}")
  return (jnp.mean(gaussian_kernel(source, source, sigmas2))
          + jnp.mean(gaussian_kernel(target, target, sigmas2))
          - 2.0 * jnp.mean(gaussian_kernel(source, target, sigmas2)))


# ---------------------------------------------------------------- domain classifier
def domain_classifier_loss(source_logits: jax.Array, target_logits: jax.Array) -> jax.Array:
  """Binary cross-entropy of a domain classifier: source is label 0, target label 1.

  Args:
    source_logits: float [N] (or [N, 1]), logit of p(target | x) on source examples.
    target_logits: float [M] (or [M, 1]) on target examples.
  Returns:
    float32 scalar: the mean of the two domains' mean losses (balanced even
    when N != M).
  """
  s = source_logits.reshape(-1).astype(jnp.float32)
  t = target_logits.reshape(-1).astype(jnp.float32)
  return 0.5 * (jnp.mean(optax.sigmoid_binary_cross_entropy(s, jnp.zeros_like(s)))
                + jnp.mean(optax.sigmoid_binary_cross_entropy(t, jnp.ones_like(t))))


def domain_accuracy(source_logits: jax.Array, target_logits: jax.Array) -> jax.Array:
  """Balanced accuracy of the domain classifier in [0, 1] (0.5 = domains confused)."""
  return 0.5 * (jnp.mean(source_logits.reshape(-1) < 0)
                + jnp.mean(target_logits.reshape(-1) > 0))


def importance_weights(p_target: jax.Array, max_weight: float = 10.0,
                       eps: float = 1e-6) -> jax.Array:
  """Source-instance weights w = p / (1 - p), normalized to mean 1, then clipped.

  With equally many source and target examples per batch, p / (1 - p) is the
  density ratio p_target(x) / p_source(x). The weights carry no gradient.

  Args:
    p_target: float [N] in [0, 1], the domain classifier's p(target | x) on
      this batch's source examples (clipped to [eps, 1 - eps]).
    max_weight: clip normalized weights to [0, max_weight]; > 0 (inf = no clip).
  Returns:
    float32 [N] >= 0.
  """
  if not max_weight > 0:
    raise ValueError(f"losses.domain.importance_weights: max_weight must be > 0, "
                     f"got {max_weight}")
  p = jnp.clip(jax.lax.stop_gradient(p_target.astype(jnp.float32)), eps, 1.0 - eps)
  ratio = p / (1.0 - p)
  w = ratio / jnp.mean(ratio)
  return jnp.minimum(w, max_weight)


def effective_sample_size(weights: jax.Array) -> jax.Array:
  """Kish's (sum w)^2 / sum w^2 as a fraction of N: [N] -> scalar in (0, 1]."""
  w = weights.astype(jnp.float32)
  return jnp.sum(w) ** 2 / jnp.maximum(jnp.sum(w * w), 1e-12) / w.shape[0]
