"""Linear probes against independent references: numpy's closed form for
ridge, scikit-learn's LogisticRegression for the multinomial probe."""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from research.transfer import probes


def _blobs(n=300, d=20, k=4, seed=0, spread=2.0):
  rng = np.random.default_rng(seed)
  centres = rng.normal(0, spread, (k, d))
  y = rng.integers(0, k, n)
  x = centres[y] + rng.normal(0, 1.5, (n, d))
  return x.astype(np.float32), y


@pytest.mark.parametrize("n,d", [(200, 12), (40, 64)])  # primal and dual forms
def test_ridge_matches_numpy_closed_form(n, d):
  x, y = _blobs(n, d)
  t = np.eye(4)[y]
  l2 = 3.0
  w, b = probes.ridge_fit(x, t.astype(np.float32), l2)
  x64 = x.astype(np.float64)
  xc, tc = x64 - x64.mean(0), t - t.mean(0)
  w_ref = np.linalg.solve(xc.T @ xc + l2 * np.eye(d), xc.T @ tc)
  b_ref = t.mean(0) - x64.mean(0) @ w_ref
  np.testing.assert_allclose(np.asarray(w), w_ref, atol=1e-5, rtol=1e-4)
  np.testing.assert_allclose(np.asarray(b), b_ref, atol=1e-5)
  # Predictions on the training features agree to 1e-5 too.
  np.testing.assert_allclose(x @ np.asarray(w) + np.asarray(b), x64 @ w_ref + b_ref,
                             atol=1e-5 * np.abs(x64 @ w_ref).max() + 1e-5)


@pytest.mark.parametrize("c", [0.1, 1.0])
def test_logistic_matches_sklearn(c):
  x, y = _blobs(240, 16, seed=1, spread=0.6)
  # Test points from the same class centres as the training points.
  rng = np.random.default_rng(1)
  centres = rng.normal(0, 0.6, (4, 16))
  y_test = np.random.default_rng(5).integers(0, 4, 400)
  x_test = (centres[y_test] + np.random.default_rng(6).normal(0, 1.5, (400, 16))).astype(np.float32)
  n = len(x)
  ref = LogisticRegression(C=c, tol=1e-10, max_iter=10000).fit(x, y)
  (w, b), loss, iters = probes.logistic_fit(x, y, 4, 1.0 / (c * n), max_iter=1000, tol=1e-7)
  w, b = np.asarray(w), np.asarray(b)
  # Objective of sklearn's solution under our normalisation (mean CE + l2/2 ||w||^2).
  ref_loss = float(probes.logistic_loss((ref.coef_.T.astype(np.float32),
                                         ref.intercept_.astype(np.float32)),
                                        x, y, 1.0 / (c * n)))
  assert abs(float(loss) - ref_loss) < 1e-3, (float(loss), ref_loss, int(iters))
  ours = np.mean(np.argmax(x_test @ w + b, -1) == y_test)
  theirs = ref.score(x_test, y_test)
  assert abs(ours - theirs) <= 0.005, (ours, theirs)
  assert 0.4 < theirs < 0.99  # a problem where the probe matters
  np.testing.assert_allclose(w, ref.coef_.T, atol=2e-2)


def test_fit_probe_picks_l2_on_validation_and_folds_standardisation():
  x, y = _blobs(200, 30, seed=3, spread=0.5)
  xv, yv = _blobs(200, 30, seed=3, spread=0.5)  # same law (same centres via seed)
  x = x * 10 + 5  # raw scale far from standardised
  xv = xv * 10 + 5
  grid = (1e-3, 1.0, 1e3)
  p = probes.fit_probe("ridge", x[:100], y[:100], xv[100:], yv[100:], 4, grid=grid)
  assert len(p.val_accuracy) == 3
  assert p.val_accuracy[grid.index(p.l2)] == max(p.val_accuracy)
  # The returned head on raw features equals ridge on centred features divided
  # by their root mean square.
  mean = x[:100].mean(0)
  scale = np.sqrt(np.mean((x[:100] - mean) ** 2))
  w, b = probes.ridge_fit((x[:100] - mean) / scale, np.eye(4, dtype=np.float32)[y[:100]], p.l2)
  np.testing.assert_allclose(p.logits(xv), ((xv - mean) / scale) @ np.asarray(w) + np.asarray(b),
                             atol=1e-3)
  with pytest.raises(ValueError, match="kind must be"):
    probes.fit_probe("svm", x, y, xv, yv, 4)


@pytest.mark.parametrize("kind", ["ridge", "logistic"])
def test_fit_probe_is_not_thrown_by_channels_constant_on_the_training_set(kind):
  """Pooled features of few images have near-constant channels (post-ReLU); one
  that is ~0 on every training image but large at test time must not take
  over the test logits (per-feature standardisation multiplied it by ~1e5)."""
  x, y = _blobs(300, 30, seed=4, spread=0.5)
  dead = np.zeros((300, 5), np.float32)
  dead[0, :] = 1e-5  # one training image barely activates them
  dead[200:] = 3.0   # the validation and test images do
  x = np.concatenate([x, dead], 1)
  clean = probes.fit_probe(kind, x[:100, :30], y[:100], x[100:200, :30], y[100:200], 4)
  noisy = probes.fit_probe(kind, x[:100], y[:100], x[100:200], y[100:200], 4)
  acc = lambda p, cols: np.mean(np.argmax(p.logits(x[200:, cols]), -1) == y[200:])
  assert acc(noisy, slice(None)) >= acc(clean, slice(0, 30)) - 0.02
