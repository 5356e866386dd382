"""Quantization: rounding error bounds, the straight-through estimator, integer
layers against numpy int32 arithmetic, and PTQ on registry models."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.compress import quantization as quant
from research.models import get_model


@pytest.mark.parametrize("bits", [8, 4])
def test_weights_dequantize_within_half_a_step(bits):
  rng = np.random.default_rng(0)
  w = rng.normal(size=(3, 3, 8, 16)).astype(np.float32)
  w[..., 3] = 0.0  # an all-zero channel must not divide by zero
  qm = 2 ** (bits - 1) - 1
  absmax = np.abs(w).reshape(-1, 16).max(axis=0)
  step = np.where(absmax > 0, absmax / qm, 1.0)  # numpy reference scale
  s = np.asarray(quant.channel_scale(jnp.asarray(w), bits))
  np.testing.assert_allclose(s, step, rtol=1e-6)
  q = np.asarray(quant.quantize(jnp.asarray(w), s, bits))
  assert q.dtype == np.int8 and q.min() >= -qm and q.max() <= qm
  # the largest-magnitude weight of each nonzero channel hits +-qmax
  assert np.all(np.abs(q).reshape(-1, 16).max(axis=0)[absmax > 0] == qm)
  err = np.abs(np.asarray(quant.dequantize(jnp.asarray(q), s)) - w)
  assert np.all(err <= step / 2 * (1 + 1e-5))
  assert np.all(q[..., 3] == 0)


@pytest.mark.parametrize("bits", [8, 4])
def test_ste_gradient_identity_inside_zero_outside(bits):
  scale = 0.1
  limit = (2 ** (bits - 1) - 1) * scale
  x = jnp.asarray(np.linspace(-2 * limit, 2 * limit, 201)[
      np.abs(np.abs(np.linspace(-2 * limit, 2 * limit, 201)) - limit) > 1e-3],
                  jnp.float32)
  g = np.asarray(jax.grad(lambda v: quant.fake_quant(v, scale, bits).sum())(x))
  inside = np.abs(np.asarray(x)) < limit
  np.testing.assert_array_equal(g[inside], 1.0)
  np.testing.assert_array_equal(g[~inside], 0.0)
  # forward: numpy round-to-grid of the clipped value
  want = np.round(np.clip(np.asarray(x), -limit, limit) / scale) * scale
  np.testing.assert_allclose(quant.fake_quant(x, scale, bits), want, atol=1e-6)


class _Dense(nn.Module):

  @nn.compact
  def __call__(self, x):
    return nn.Dense(5)(x)


def test_integer_dense_matches_numpy_int32():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(6, 12)).astype(np.float32)
  model = _Dense()
  v = model.init(jax.random.key(0), x)
  ranges = quant.calibrate(model.apply, v, [x], "minmax")
  qv = quant.quantize_variables(v, ranges, bits=8)
  got = np.asarray(quant.integer_apply(model.apply)(qv, x))
  # numpy reference
  w = np.asarray(v["params"]["Dense_0"]["kernel"])
  b = np.asarray(v["params"]["Dense_0"]["bias"])
  s_x = np.abs(x).max() / 127
  s_w = np.abs(w).max(axis=0) / 127
  x_q = np.clip(np.round(x / s_x), -127, 127).astype(np.int32)
  w_q = np.clip(np.round(w / s_w), -127, 127).astype(np.int32)
  want = (x_q @ w_q).astype(np.float64) * s_x * s_w + b
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert qv["params"]["Dense_0"]["kernel"].dtype == jnp.int8


class _Convs(nn.Module):
  """Conv variants: strides, explicit padding, dilation, depthwise groups."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3), strides=2, padding="SAME")(x))
    x = nn.relu(nn.Conv(8, (3, 3), padding=((1, 0), (2, 1)),
                        kernel_dilation=2)(x))
    x = nn.relu(nn.Conv(8, (3, 3), feature_group_count=8, use_bias=False)(x))
    x = nn.Conv(16, 1, padding="VALID")(x)
    return nn.Dense(3)(x.mean(axis=(1, 2)))


def _np_conv_int(x_q, w_q, stride, pad, dil, groups):
  """Direct int64 NHWC convolution (reference)."""
  x = np.pad(x_q.astype(np.int64), ((0, 0), pad[0], pad[1], (0, 0)))
  kh, kw, cin_g, cout = w_q.shape
  n, h, wd, _ = x.shape
  eh, ew = (kh - 1) * dil + 1, (kw - 1) * dil + 1
  oh, ow = (h - eh) // stride + 1, (wd - ew) // stride + 1
  out = np.zeros((n, oh, ow, cout), np.int64)
  cout_g = cout // groups
  for o in range(cout):
    g = o // cout_g
    for i in range(kh):
      for j in range(kw):
        patch = x[:, i * dil:i * dil + (oh - 1) * stride + 1:stride,
                  j * dil:j * dil + (ow - 1) * stride + 1:stride,
                  g * cin_g:(g + 1) * cin_g]
        out[..., o] += patch @ w_q[i, j, :, o].astype(np.int64)
  return out


def test_integer_conv_layer_matches_numpy_reference():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 9, 9, 4)).astype(np.float32)
  conv = nn.Conv(6, (3, 3), strides=2, padding=((1, 2), (0, 1)),
                 kernel_dilation=1)
  v = conv.init(jax.random.key(0), x)
  ranges = quant.calibrate(conv.apply, v, [x])
  assert list(ranges) == [""]
  qv = quant.quantize_variables(
      {"params": {"layer": v["params"]}}, {"layer": ranges[""]})
  # wrap so the layer has a name
  class Wrap(nn.Module):
    @nn.compact
    def __call__(self, y):
      return nn.Conv(6, (3, 3), strides=2, padding=((1, 2), (0, 1)),
                     name="layer")(y)
  got = np.asarray(quant.integer_apply(Wrap().apply)(qv, x))
  w = np.asarray(v["params"]["kernel"])
  s_x = np.abs(x).max() / 127
  s_w = np.abs(w).reshape(-1, 6).max(axis=0) / 127
  x_q = np.clip(np.round(x / s_x), -127, 127)
  w_q = np.clip(np.round(w / s_w), -127, 127)
  acc = _np_conv_int(x_q, w_q, 2, ((1, 2), (0, 1)), 1, 1)
  want = acc * s_x * s_w + np.asarray(v["params"]["bias"])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_integer_path_runs_int8_ops_and_matches_simulation():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(4, 16, 16, 3)).astype(np.float32)
  model = _Convs()
  v = jax.jit(model.init)(jax.random.key(0), x)
  layers = quant.find_layers(model.apply, v, x)
  assert layers == ["Conv_0", "Conv_1", "Conv_2", "Conv_3", "Dense_0"]
  ranges = quant.calibrate(model.apply, v, [x[:2], x[2:]], "minmax")
  qv = quant.quantize_variables(v, ranges, bits=8)
  int_fn = quant.integer_apply(model.apply)
  jaxpr = str(jax.make_jaxpr(int_fn)(qv, x))
  assert jaxpr.count("preferred_element_type=int32") == 5
  got = np.asarray(jax.jit(int_fn)(qv, x))
  sim = np.asarray(jax.jit(
      quant.fake_quant_apply(model.apply, layers, 8, ranges))(v, x))
  np.testing.assert_allclose(got, sim, rtol=1e-4, atol=1e-4)
  ref = np.asarray(model.apply(v, x))
  assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()


def test_calibration_minmax_and_percentile_of_first_layer_input():
  rng = np.random.default_rng(4)
  batches = [rng.normal(size=(4, 16, 16, 3)).astype(np.float32) * (i + 1)
             for i in range(3)]
  model = _Convs()
  v = jax.jit(model.init)(jax.random.key(0), batches[0])
  mm = quant.calibrate(model.apply, v, batches, "minmax")
  pc = quant.calibrate(model.apply, v, batches, "percentile", percentile=99.0)
  assert mm["Conv_0"] == pytest.approx(max(np.abs(b).max() for b in batches),
                                       rel=1e-6)
  want = np.mean([np.percentile(np.abs(b), 99.0) for b in batches])
  assert pc["Conv_0"] == pytest.approx(want, rel=1e-5)
  assert all(pc[k] <= mm[k] for k in mm)
  with pytest.raises(ValueError, match="method must be one of"):
    quant.calibrate(model.apply, v, batches, "kl")


def test_qat_kernel_gradient_is_straight_through():
  rng = np.random.default_rng(5)
  x = rng.normal(size=(6, 12)).astype(np.float32)
  g_out = rng.normal(size=(6, 5)).astype(np.float32)
  model = _Dense()
  v = model.init(jax.random.key(0), x)
  fn = quant.qat_apply(model.apply, ["Dense_0"], bits=4)
  grads = jax.grad(lambda p: jnp.sum(fn({"params": p}, x) * g_out))(v["params"])
  # y = fq(x) @ fq(W) + b with STE -> dL/dW = fq(x)^T g (numpy reference)
  s_x = np.abs(x).max() / 7
  fq_x = np.round(x / s_x) * s_x
  np.testing.assert_allclose(grads["Dense_0"]["kernel"], fq_x.T @ g_out,
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(grads["Dense_0"]["bias"], g_out.sum(0), rtol=1e-5)


@pytest.mark.parametrize(
    "name", ["small_cnn", pytest.param("resnet18", marks=pytest.mark.slow)])
def test_ptq_on_registry_model(name):
  model = get_model(name, num_classes=10)
  rng = np.random.default_rng(6)
  x = rng.uniform(size=(4, 28, 28, 1)).astype(np.float32)
  v = jax.jit(model.init)(jax.random.key(0), x)
  apply_fn = lambda var, im: model.apply(var, im, train=False)
  ranges = quant.calibrate(apply_fn, v, [x])
  qv = quant.quantize_variables(v, ranges, bits=8)
  n_int8 = sum(l.dtype == jnp.int8 for l in jax.tree.leaves(qv["params"]))
  assert n_int8 == len(ranges) > 3
  got = np.asarray(jax.jit(quant.integer_apply(apply_fn))(qv, x))
  ref = np.asarray(apply_fn(v, x))
  assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max() + 1e-3
  assert quant.stored_bytes(qv) < 0.4 * quant.stored_bytes(v)
