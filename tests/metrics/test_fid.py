"""FID/KID against scipy.linalg.sqrtm, closed forms and a naive MMD loop."""
import itertools

import numpy as np
import pytest
from scipy import linalg

from research.metrics import fid


def _scipy_fd(f1, f2):
  """The usual pytorch-fid formula with scipy.linalg.sqrtm."""
  mu1, mu2 = f1.mean(0), f2.mean(0)
  s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
  covmean = linalg.sqrtm(s1 @ s2).real
  return np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)


def test_frechet_distance_matches_scipy_sqrtm():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(400, 12)) @ rng.normal(size=(12, 12))
  b = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12)) + 0.5
  np.testing.assert_allclose(fid.frechet_distance(a, b), _scipy_fd(a, b),
                             rtol=1e-6)
  assert abs(fid.frechet_distance(a, a)) < 1e-8


def test_frechet_distance_closed_form_gaussians():
  # Commuting (diagonal) covariances: ||mu1-mu2||^2 + sum (s1 - s2)^2.
  mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.0])
  sd1, sd2 = np.array([1.0, 2.0, 0.5]), np.array([3.0, 1.0, 0.5])
  expect = np.sum((mu1 - mu2) ** 2) + np.sum((sd1 - sd2) ** 2)
  got = fid.frechet_distance_from_stats(mu1, np.diag(sd1 ** 2), mu2,
                                        np.diag(sd2 ** 2))
  np.testing.assert_allclose(got, expect, rtol=1e-10)
  # Non-commuting 2-d case: W2^2 between N(0, A) and N(0, I) is
  # tr(A) + 2 - 2 tr(A^{1/2}) = sum (sqrt(lambda_i) - 1)^2.
  a = np.array([[2.0, 0.8], [0.8, 1.0]])
  lam = np.linalg.eigvalsh(a)
  np.testing.assert_allclose(
      fid.frechet_distance_from_stats(np.zeros(2), a, np.zeros(2), np.eye(2)),
      np.sum((np.sqrt(lam) - 1) ** 2), rtol=1e-10)
  # From samples: converges to the closed form.
  rng = np.random.default_rng(1)
  x = rng.normal(mu1, sd1, size=(200_000, 3))
  y = rng.normal(mu2, sd2, size=(200_000, 3))
  np.testing.assert_allclose(fid.frechet_distance(x, y), expect, rtol=0.02)


def _naive_mmd2(x, y):
  k = lambda a, b: (np.dot(a, b) / len(a) + 1) ** 3
  m = len(x)
  xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2))
  yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2))
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
  return xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2 * xy / m ** 2


def test_kid_matches_naive_unbiased_mmd():
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(15, 4)), rng.normal(0.7, 1.0, size=(15, 4))
  mean, std = fid.kernel_inception_distance(x, y, num_subsets=3, subset_size=15)
  np.testing.assert_allclose(mean, _naive_mmd2(x, y), rtol=1e-10)
  assert std < 1e-12  # every subset is the whole set


def test_kid_is_near_zero_for_same_distribution():
  rng = np.random.default_rng(3)
  x, y = rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8))
  same, _ = fid.kernel_inception_distance(x, y, num_subsets=10, subset_size=500)
  shifted, _ = fid.kernel_inception_distance(x, y + 1.0, num_subsets=10,
                                             subset_size=500)
  assert abs(same) < 0.01 < shifted


def test_feature_extractor_batches_and_pads():
  calls = []

  def fn(images):
    calls.append(images.shape)
    return images.reshape(len(images), -1).sum(-1, keepdims=True)

  ext = fid.FeatureExtractor("sum", fid.hash_tree({"w": np.ones(3)}), fn,
                             batch_size=4)
  images = np.arange(10 * 2 * 2).reshape(10, 2, 2, 1).astype(np.float32)
  out = ext(images)
  np.testing.assert_allclose(out[:, 0], images.reshape(10, -1).sum(-1))
  assert calls == [(4, 2, 2, 1)] * 3
  assert fid.hash_tree({"w": np.ones(3)}) != fid.hash_tree({"w": np.zeros(3)})
  with pytest.raises(ValueError, match="shape"):
    ext(np.zeros((2, 2, 2)))


def test_cas_and_report():
  images = np.zeros((6, 2, 2, 1), np.float32)
  labels = np.array([0, 0, 1, 1, 2, 2])
  predict = lambda x: np.tile(np.eye(3)[[0]], (len(x), 1))  # always class 0
  out = fid.classification_accuracy_score(predict, images, labels, 4, 4)
  assert out["cas"] == pytest.approx(2 / 6)
  assert out["per_class"][:3] == [1.0, 0.0, 0.0] and np.isnan(out["per_class"][3])
  rng = np.random.default_rng(4)
  ext = fid.FeatureExtractor("id", "0", lambda x: x.reshape(len(x), -1), 50)
  real = rng.uniform(size=(100, 2, 2, 1))
  rep = fid.generative_report(ext, real + 0.5, real, rng.uniform(size=(100, 2, 2, 1)),
                              kid_subset_size=50)
  assert rep["fd"] > rep["fd_floor"] and rep["kid"] > rep["kid_floor"]
  assert rep["extractor"] == "id"
