"""Report plumbing: accuracy and byte counts against hand counts, and an
end-to-end run on a tiny CNN (rows, exact sparsities, PNG)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.compress import report


class _CNN(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3))(x))
    x = nn.relu(nn.Conv(16, (3, 3), strides=2)(x))
    return nn.Dense(2)(x.mean(axis=(1, 2)))


def _data(n, seed):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 2, n)
  x = rng.normal(size=(n, 8, 8, 1)).astype(np.float32) * 0.3
  x[y == 1, :4] += 1.0  # class 1: bright top half
  return x, y


def test_accuracy_counts_only_unmasked_examples():
  def apply_fn(v, x):
    return jnp.stack([x[:, 0], -x[:, 0]], -1)  # predicts 0 iff x > 0
  x = np.array([1.0, -1.0, 1.0, -1.0], np.float32)
  labels = np.array([0, 0, 1, 1])
  mask = np.array([1, 1, 1, 0])
  acc = report.accuracy(lambda v, im: apply_fn(v, im[:, None]), {},
                        [(x, labels, mask)])
  assert acc == 1 / 3  # correct: example 0 only; example 3 is padding


def test_sparse_bytes_closed_form():
  params = {"k": jnp.zeros((10, 10)).at[0, :3].set(1.0), "b": jnp.ones(5)}
  got = report.sparse_bytes(params, {"k": True, "b": False})
  assert got == 13 + 3 * 4 + 5 * 4  # ceil(100/8) mask + 3 values + dense bias


@pytest.mark.slow  # ~60 s; the compress_report script test covers the same path by default
def test_compress_and_evaluate_end_to_end(tmp_path):
  model = _CNN()
  x, y = _data(512, 0)
  xt, yt = _data(256, 1)
  v = jax.jit(model.init)(jax.random.key(0), x[:1])
  train = lambda: iter([(x[i:i + 64], y[i:i + 64], np.ones(64))
                        for i in range(0, 512, 64)] * 100)
  v, _ = report.finetune(model.apply, v, train(), 150, optax.adam(1e-2))
  evals = lambda: [(xt[i:i + 128], yt[i:i + 128], np.ones(128))
                   for i in range(0, 256, 128)]
  rows = report.compress_and_evaluate(
      model.apply, v, evals, [x[:64], x[64:128]], model="tiny",
      sparsities=(0.5, 0.9), bits=(8, 4), train_batches=train,
      finetune_steps=20, lr=1e-3)
  assert rows[0].method == "float" and rows[0].accuracy > 0.9
  prune = [r for r in rows if r.method.startswith("prune")]
  n_kernel = 3 * 3 * 1 * 8 + 3 * 3 * 8 * 16 + 16 * 2
  zeros = lambda s: sum(round(s * n) for n in (72, 1152, 32))
  # 2:4 leaves Conv_0 (1 input channel) dense: half of the other two layers
  want = [zeros(0.5) / n_kernel, zeros(0.9) / n_kernel, (576 + 16) / n_kernel]
  np.testing.assert_allclose([r.sparsity for r in prune], want, rtol=1e-12)
  r90 = prune[1]
  assert r90.bytes_sparse < r90.bytes_stored == rows[0].bytes_stored
  nz = n_kernel - round(0.9 * 72) - round(0.9 * 1152) - round(0.9 * 32)
  masks = sum(int(np.ceil(n / 8)) for n in (72, 1152, 32))
  assert r90.bytes_sparse == masks + 4 * nz + 4 * (8 + 16 + 2)
  ptq8 = [r for r in rows if r.method == "ptq (minmax)" and r.bits == 8][0]
  assert ptq8.bytes_stored == n_kernel + 4 * (8 + 16 + 2) + 4 * (8 + 16 + 2) + 4 * 3
  assert ptq8.accuracy > rows[0].accuracy - 0.05
  assert any(r.method.startswith("qat") and r.bits == 4 for r in rows)
  md = report.to_markdown(rows)
  assert md.count("\n") == len(rows) + 1
  report.plot_accuracy_vs_sparsity(rows, str(tmp_path / "acc.png"))
  assert (tmp_path / "acc.png").read_bytes()[:4] == b"\x89PNG"


def test_val_batches_give_every_row_a_val_accuracy():
  model = _CNN()
  x, y = _data(128, 0)
  v = jax.jit(model.init)(jax.random.key(0), x[:1])
  evals = lambda: [(x[:64], y[:64], np.ones(64))]
  vals = lambda: [(x[64:], y[64:], np.ones(64))]
  rows = report.compress_and_evaluate(model.apply, v, evals, [x[:32]], val_batches=vals,
                                      sparsities=(0.5,), n_m=(), bits=(8,),
                                      calibration=("minmax",))
  want = report.accuracy(model.apply, v, vals())
  assert rows[0].val_accuracy == want
  assert all(r.val_accuracy is not None for r in rows)
  assert "val accuracy" in report.to_markdown(rows)


def test_summarize_against_numpy():
  rng = np.random.default_rng(0)
  acc = rng.uniform(0.8, 1.0, size=(3, 2))
  runs = [[report.Row("m", "float", 0.0, "-", 32, 100, 100, acc[s, 0], acc[s, 0] - 0.01),
           report.Row("m", "ptq (minmax)", 0.0, "-", 8, 25, 25, acc[s, 1], None)]
          for s in range(3)]
  summary = report.summarize(runs)
  assert [e["method"] for e in summary] == ["float", "ptq (minmax)"]
  np.testing.assert_allclose(summary[0]["accuracy_mean"], acc[:, 0].mean())
  np.testing.assert_allclose(summary[1]["accuracy_std"], np.std(acc[:, 1], ddof=1))
  np.testing.assert_allclose(summary[0]["val_accuracy_std"], np.std(acc[:, 0] - 0.01, ddof=1))
  assert "val_accuracy_mean" not in summary[1]  # not every run has one
  assert summary[0]["n"] == 3
  assert "±" in report.summary_markdown(summary)


def test_summarize_refuses_runs_with_different_rows():
  a = [report.Row("m", "float", 0.0, "-", 32, 1, 1, 0.9)]
  b = [report.Row("m", "ptq (minmax)", 0.0, "-", 8, 1, 1, 0.9)]
  with pytest.raises(ValueError, match="same settings"):
    report.summarize([a, b])
