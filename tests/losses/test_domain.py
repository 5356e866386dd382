"""Domain adaptation losses against numpy written from the papers' formulas."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.losses import domain


def _rng(seed=0):
  return np.random.default_rng(seed)


# ---------------------------------------------------------------- gradient reversal
def test_gradient_reversal_is_identity_forward_and_negates_scaled_gradient_backward():
  x = _rng().normal(size=(5, 3)).astype(np.float32)
  g = _rng(1).normal(size=(5, 3)).astype(np.float32)
  for lam in (0.0, 0.37, 2.0):
    y, vjp = jax.vjp(lambda v: domain.gradient_reversal(v, jnp.float32(lam)), x)
    np.testing.assert_array_equal(np.asarray(y), x)
    (gx,) = vjp(g)
    np.testing.assert_allclose(np.asarray(gx), -lam * g, rtol=1e-6, atol=0)


def test_gradient_reversal_inside_a_loss_under_jit_with_traced_scale():
  # d/dx sum(w * GRL(x)) = -lam * w; the scale gets no gradient.
  w = np.array([1.0, -2.0, 3.0], np.float32)
  f = jax.jit(jax.grad(lambda x, lam: jnp.sum(w * domain.gradient_reversal(x, lam)),
                       argnums=(0, 1)))
  gx, glam = f(jnp.ones(3), jnp.float32(0.5))
  np.testing.assert_allclose(np.asarray(gx), -0.5 * w)
  assert float(glam) == 0.0


def test_grl_schedule_matches_ganin():
  p = np.linspace(0, 1, 11)
  np.testing.assert_allclose(np.asarray(domain.grl_schedule(p)),
                             2.0 / (1.0 + np.exp(-10.0 * p)) - 1.0, rtol=1e-6, atol=1e-7)
  assert float(domain.grl_schedule(0.0)) == 0.0


# ---------------------------------------------------------------- CORAL
def _np_coral(s, t):
  d = s.shape[1]
  def cov(x):
    n = x.shape[0]
    one = np.ones((1, n))
    return (x.T @ x - (one @ x).T @ (one @ x) / n) / (n - 1)  # Sun & Saenko, eq. 2
  return np.sum((cov(s) - cov(t)) ** 2) / (4 * d * d)


def test_coral_equals_paper_formula():
  s = _rng(2).normal(size=(16, 6))
  t = 2.0 * _rng(3).normal(size=(11, 6)) + 1.0
  np.testing.assert_allclose(float(domain.coral_loss(jnp.asarray(s, jnp.float32),
                                                     jnp.asarray(t, jnp.float32))),
                             _np_coral(s, t), rtol=1e-4)
  np.testing.assert_allclose(np.asarray(domain.covariance(jnp.asarray(s, jnp.float32))),
                             np.cov(s, rowvar=False), rtol=1e-4, atol=1e-6)


def test_coral_is_zero_for_identical_covariances_and_rejects_bad_shapes():
  s = _rng(4).normal(size=(10, 4)).astype(np.float32)
  assert float(domain.coral_loss(s, s + 3.0)) == pytest.approx(0.0, abs=1e-6)
  with pytest.raises(ValueError, match=r"\(10, 4\) and \(10, 3\)"):
    domain.coral_loss(s, s[:, :3])


# ---------------------------------------------------------------- MMD
def _np_mmd(s, t, sigmas2):
  def k(a, b):
    return sum(np.exp(-np.sum((a - b) ** 2) / (2 * s2)) for s2 in sigmas2)
  kss = np.mean([[k(a, b) for b in s] for a in s])
  ktt = np.mean([[k(a, b) for b in t] for a in t])
  kst = np.mean([[k(a, b) for b in t] for a in s])
  return kss + ktt - 2 * kst


def test_mmd_equals_numpy_double_loop_with_given_bandwidths():
  s = _rng(5).normal(size=(9, 4))
  t = _rng(6).normal(size=(7, 4)) + 0.7
  sigmas2 = [0.5, 1.0, 4.0]
  got = float(domain.mmd_loss(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32),
                              sigmas2=sigmas2))
  np.testing.assert_allclose(got, _np_mmd(s, t, sigmas2), rtol=1e-4)


def test_mmd_default_bandwidths_are_dans_mean_distance_times_powers_of_two():
  s = _rng(7).normal(size=(8, 3))
  t = _rng(8).normal(size=(6, 3)) * 1.5
  z = np.concatenate([s, t])
  base = np.mean([[np.sum((a - b) ** 2) for b in z] for a in z])
  sigmas2 = base * 2.0 ** np.arange(-2, 3)
  np.testing.assert_allclose(np.asarray(domain.mmd_bandwidths(s, t)), sigmas2, rtol=1e-4)
  np.testing.assert_allclose(float(domain.mmd_loss(jnp.asarray(s, jnp.float32),
                                                   jnp.asarray(t, jnp.float32))),
                             _np_mmd(s, t, sigmas2), rtol=1e-4)


def test_mmd_is_zero_for_identical_samples_and_grows_with_shift():
  s = _rng(9).normal(size=(12, 5)).astype(np.float32)
  assert abs(float(domain.mmd_loss(s, s))) < 1e-5
  near = float(domain.mmd_loss(s, s + 0.1))
  far = float(domain.mmd_loss(s, s + 2.0, sigmas2=[1.0, 4.0]))
  assert 0.0 < near < far


# ---------------------------------------------------------------- domain classifier
def test_domain_classifier_loss_is_balanced_bce():
  ls = _rng(10).normal(size=6)
  lt = _rng(11).normal(size=4)
  sig = lambda z: 1 / (1 + np.exp(-z))
  want = 0.5 * (np.mean(-np.log(1 - sig(ls))) + np.mean(-np.log(sig(lt))))
  np.testing.assert_allclose(float(domain.domain_classifier_loss(
      jnp.asarray(ls, jnp.float32), jnp.asarray(lt, jnp.float32))), want, rtol=1e-5)
  assert float(domain.domain_accuracy(jnp.array([-1.0, 2.0]), jnp.array([3.0, 1.0]))) == 0.75


def test_importance_weights_are_normalized_density_ratio():
  p = _rng(12).uniform(0.05, 0.9, size=10)
  ratio = p / (1 - p)
  want = ratio / ratio.mean()
  got = np.asarray(domain.importance_weights(jnp.asarray(p, jnp.float32), max_weight=1e9))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  np.testing.assert_allclose(got.mean(), 1.0, rtol=1e-5)
  clipped = np.asarray(domain.importance_weights(jnp.asarray(p, jnp.float32), max_weight=1.5))
  np.testing.assert_allclose(clipped, np.minimum(want, 1.5), rtol=1e-5)
  # Equal probabilities -> uniform weights; no gradient flows to the classifier.
  np.testing.assert_allclose(np.asarray(domain.importance_weights(jnp.full(4, 0.3))), 1.0,
                             rtol=1e-6)
  g = jax.grad(lambda q: jnp.sum(domain.importance_weights(q) * jnp.arange(4.0)))(
      jnp.array([0.2, 0.4, 0.6, 0.8]))
  np.testing.assert_array_equal(np.asarray(g), 0.0)
  with pytest.raises(ValueError, match="max_weight must be > 0, got 0"):
    domain.importance_weights(jnp.full(3, 0.5), max_weight=0.0)


def test_effective_sample_size():
  assert float(domain.effective_sample_size(jnp.ones(8))) == pytest.approx(1.0)
  w = np.array([4.0, 0.0, 0.0, 0.0])
  assert float(domain.effective_sample_size(jnp.asarray(w))) == pytest.approx(0.25)


# ---------------------------------------------------------------- DANN as published
def test_grl_gradient_is_minus_lambda_p_times_the_plain_gradient():
  # A domain head on features: the gradient through GRL is -lambda_p times the plain one.
  f = _rng(20).normal(size=(6, 4)).astype(np.float32)
  w = _rng(21).normal(size=(4,)).astype(np.float32)
  head = lambda z: jnp.sum(jnp.tanh(z @ w))
  for p in (0.0, 0.1, 0.5, 1.0):
    lam = 2.0 / (1.0 + np.exp(-10.0 * p)) - 1.0
    plain = jax.grad(head)(f)
    reversed_ = jax.grad(lambda z: head(domain.gradient_reversal(z, domain.grl_schedule(p))))(f)
    np.testing.assert_allclose(np.asarray(reversed_), -lam * np.asarray(plain),
                               rtol=1e-5, atol=1e-7)


def test_lr_annealing_and_the_optimizer_schedule_match_the_closed_form():
  from research import optim
  p = np.linspace(0, 1, 6)
  want = 0.01 / (1.0 + 10.0 * p) ** 0.75
  np.testing.assert_allclose(np.asarray(domain.lr_annealing(p, 0.01)), want, rtol=1e-6)
  sched = optim.schedule(0.01, "anneal", num_steps=100)
  got = [float(sched(s)) for s in (0, 20, 40, 60, 80, 100)]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # With warm-up, the annealing runs over the steps after it; other alpha / beta.
  sched = optim.schedule(0.1, "anneal", num_steps=110, warmup_steps=10, anneal_alpha=5.0,
                         anneal_beta=0.5)
  np.testing.assert_allclose(float(sched(5)), 0.05, rtol=1e-6)
  np.testing.assert_allclose(float(sched(60)), 0.1 / (1 + 5.0 * 0.5) ** 0.5, rtol=1e-6)


# ---------------------------------------------------------------- CDAN
def test_multilinear_map_is_the_flattened_outer_product():
  f = _rng(22).normal(size=(5, 4)).astype(np.float32)
  g = _rng(23).dirichlet(np.ones(3), size=5).astype(np.float32)
  want = np.stack([np.outer(g[i], f[i]).reshape(-1) for i in range(5)])  # torch.bmm layout
  np.testing.assert_allclose(np.asarray(domain.multilinear_map(f, g)), want, rtol=1e-6)
  with pytest.raises(ValueError, match=r"\(5, 4\) and \(4, 3\)"):
    domain.multilinear_map(f, g[:4])


def test_randomized_multilinear_map_against_numpy_and_its_inner_products():
  f = _rng(24).normal(size=(4, 6)).astype(np.float32)
  g = _rng(25).dirichlet(np.ones(3), size=4).astype(np.float32)
  r_f, r_g = domain.random_matrices(6, 3, out_dim=32, seed=7)
  assert r_f.shape == (6, 32) and r_g.shape == (3, 32)
  r_f2, _ = domain.random_matrices(6, 3, out_dim=32, seed=7)
  np.testing.assert_array_equal(r_f, r_f2)  # fixed by the seed
  want = (f @ r_f) * (g @ r_g) / np.sqrt(32.0)
  np.testing.assert_allclose(np.asarray(domain.randomized_multilinear_map(f, g, r_f, r_g)),
                             want, rtol=1e-5, atol=1e-6)
  # Long et al. (2018), Theorem 1: <T(h), T(h')> ~ <f, f'> <g, g'> for large d_out.
  r_f, r_g = domain.random_matrices(6, 3, out_dim=200_000, seed=0)
  t = np.asarray(domain.randomized_multilinear_map(f, g, r_f, r_g))
  full = np.asarray(domain.multilinear_map(f, g))
  np.testing.assert_allclose(t @ t.T, full @ full.T, rtol=0.05,
                             atol=0.05 * np.abs(full @ full.T).max())


def test_cdan_e_entropy_weights_and_weighted_loss_as_the_reference_code():
  g = _rng(26).dirichlet(np.ones(4), size=10).astype(np.float32)
  h = -np.sum(g * np.log(g + 1e-5), axis=1)
  w = 1.0 + np.exp(-h)
  np.testing.assert_allclose(np.asarray(domain.entropy_weights(g)), w, rtol=1e-5)
  logits = _rng(27).normal(size=10).astype(np.float32)
  # thuml/CDAN loss.py: source rows first (label 0 here: target = 1 in this codebase).
  sig = 1 / (1 + np.exp(-logits))
  bce = np.concatenate([-np.log(1 - sig[:6]), -np.log(sig[6:])])
  weight = np.concatenate([w[:6] / w[:6].sum(), w[6:] / w[6:].sum()])
  want = np.sum(weight * bce) / np.sum(weight)
  got = domain.weighted_domain_classifier_loss(logits[:6], logits[6:], w[:6], w[6:])
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  equal = domain.weighted_domain_classifier_loss(logits[:6], logits[6:], np.ones(6), np.ones(4))
  np.testing.assert_allclose(float(equal), float(domain.domain_classifier_loss(
      logits[:6], logits[6:])), rtol=1e-6)
  # Confident predictions weigh more: one-hot -> 2, uniform -> 1 + 1/C (up to eps).
  np.testing.assert_allclose(np.asarray(domain.entropy_weights(
      jnp.array([[1.0, 0, 0, 0], [0.25, 0.25, 0.25, 0.25]]))), [2.0, 1.25], rtol=1e-4)
