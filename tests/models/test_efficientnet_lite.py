"""EfficientNet-Lite structure, against the published model sizes."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import models
from research import params as params_lib
from research.models import depthwise
from research.models import efficientnet_lite as lite


# Parameter counts of the TF-Lite model card (millions, 1 decimal), and the
# exact Lite0 count, which equals the reference checkpoint's.
@pytest.mark.parametrize("name,millions,blocks", [
    ("efficientnet_lite0", 4.7, 16), ("efficientnet_lite1", 5.4, 21),
    ("efficientnet_lite2", 6.1, 21), ("efficientnet_lite3", 8.2, 24),
    ("efficientnet_lite4", 13.0, 30)])
def test_parameter_counts(name, millions, blocks):
  model = models.get_model(name)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))))
  n = params_lib.count(variables["params"])
  assert round(n / 1e6, 1) == millions
  if name == "efficientnet_lite0":
    assert n == 4_652_008
  assert lite.num_blocks(model.width, model.depth) == blocks
  names = params_lib.flatten(variables["params"])
  assert f"block_{blocks - 1}/project_conv/kernel" in names
  assert f"block_{blocks}/project_conv/kernel" not in names
  # Fixed stem and head in every Lite size.
  assert variables["params"]["stem_conv"]["kernel"].shape == (3, 3, 3, 32)
  assert variables["params"]["top_conv"]["kernel"].shape[-1] == 1280


def test_round_filters_closed_form():
  # TF rule: nearest multiple of 8, but never below 90% of the scaled value.
  assert lite.round_filters(16, 1.4) == 24   # 22.4 -> 24
  assert lite.round_filters(40, 1.2) == 48   # 48.0
  assert lite.round_filters(112, 1.1) == 120  # 123.2 -> 120 (>= 110.9)
  assert lite.round_filters(320, 1.4) == 448


def _random_variables(model, shape, seed=0):
  """Variables without compiling `init`: He-normal kernels, unit BatchNorm."""
  abstract = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape)))
  r = np.random.default_rng(seed)

  def fill(name, leaf):
    if name.endswith("kernel"):
      fan_in = np.prod(leaf.shape[:-1])
      return jnp.asarray(r.normal(size=leaf.shape) * np.sqrt(2 / fan_in),
                         jnp.float32)
    if name.endswith(("scale", "var")):
      return jnp.ones(leaf.shape, jnp.float32)
    return jnp.asarray(r.normal(size=leaf.shape) * 0.1, jnp.float32)
  return params_lib.tree_map_with_names(fill, abstract)


@pytest.fixture(scope="module")
def small_lite0():
  """One compile for the eval and train outputs of a Lite0 on 32x32 images."""
  model = lite.EfficientNetLite0(num_classes=7)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 32, 32, 3)),
                  jnp.float32)
  variables = _random_variables(model, x.shape)

  @jax.jit
  def run(variables, x, rng):
    eval_out = model.apply(variables, x, return_features=True)
    _, new = model.apply(variables, x, train=True, mutable=["batch_stats"],
                         rngs={"dropout": rng})
    return eval_out, new
  return model, variables, x, run(variables, x, jax.random.PRNGKey(1))


def test_outputs_and_shapes(small_lite0):
  model, variables, x, ((logits, feats), _) = small_lite0
  assert logits.shape == (4, 7) and feats.shape == (4, 1280)
  # Features are the pooled ReLU6 output of the top conv: in [0, 6].
  assert float(feats.min()) >= 0 and float(feats.max()) <= 6
  assert float(feats.max()) > 0
  head = variables["params"]["head"]
  np.testing.assert_allclose(logits, feats @ head["kernel"] + head["bias"],
                             rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
    model.apply(variables, x[..., :1])


def test_train_mode_updates_stats_with_momentum(small_lite0):
  _, variables, x, (_, new) = small_lite0
  old = variables["batch_stats"]["stem_bn"]
  # One step with Flax momentum 0.99: new = 0.99 * old + 0.01 * batch stat.
  stem = jax.lax.conv_general_dilated(
      x, variables["params"]["stem_conv"]["kernel"], (2, 2), "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(new["batch_stats"]["stem_bn"]["mean"],
                             0.99 * old["mean"] + 0.01 * stem.mean((0, 1, 2)),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(new["batch_stats"]["stem_bn"]["var"],
                             0.99 * old["var"] + 0.01 * stem.var((0, 1, 2)),
                             rtol=1e-4, atol=1e-6)


def test_train_mode_needs_dropout_rng():
  model = lite.EfficientNetLite0(num_classes=7)
  x = jnp.zeros((2, 32, 32, 3))
  variables = _random_variables(model, x.shape)
  with pytest.raises(Exception, match="dropout"):
    jax.eval_shape(lambda v: model.apply(v, x, train=True,
                                         mutable=["batch_stats"]), variables)


@pytest.mark.slow
def test_cross_replica_batchnorm_equals_big_batch(small_lite0):
  _, variables, x, _ = small_lite0

  def step(axis_name):
    model = lite.EfficientNetLite0(num_classes=7, axis_name=axis_name,
                                   dropout_rate=0.0, drop_connect_rate=0.0)
    return lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])
  logits_1, stats_1 = jax.jit(step(None))(variables, x)
  logits_2, stats_2 = jax.pmap(step("batch"), axis_name="batch",
                               in_axes=(None, 0))(
      variables, x.reshape(2, 2, *x.shape[1:]))
  # Late layers see 1x1 maps, so 4 values per statistic: loose tolerance.
  # Local (per-device) statistics would differ by O(1).
  np.testing.assert_allclose(logits_2.reshape(4, 7), logits_1, rtol=1e-2,
                             atol=1e-2)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a[0], b, rtol=1e-3,
                                                       atol=1e-4),
               stats_2, stats_1)


@pytest.mark.parametrize("fn", [depthwise.depthwise_conv2d,
                                depthwise.depthwise_conv2d_shifted])
@pytest.mark.parametrize("size,k,stride", [(9, 3, 1), (9, 5, 2), (8, 5, 2),
                                           (8, 3, 2), (7, 5, 1)])
def test_depthwise_conv_gradients_match_xla(size, k, stride, fn):
  r = np.random.default_rng(size + k + stride)
  x = jnp.asarray(r.normal(size=(2, size, size, 6)), jnp.float32)
  w = jnp.asarray(r.normal(size=(k, k, 1, 6)), jnp.float32)
  g = jnp.asarray(r.normal(size=(2, -(-size // stride), -(-size // stride), 6)),
                  jnp.float32)

  def xla(x, w):
    return jax.lax.conv_general_dilated(
        x, w, (stride, stride), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=6)

  ours = lambda x, w: fn(x, w, stride)
  np.testing.assert_allclose(ours(x, w), xla(x, w), rtol=1e-5, atol=1e-5)
  want = jax.vjp(xla, x, w)[1](g)
  got = jax.vjp(ours, x, w)[1](g)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_shifted_depthwise_model_matches_default(small_lite0):
  """shifted_depthwise=False (XLA's grouped conv) vs the default (shifted on
  the CPU): same parameters, same outputs up to rounding."""
  _, variables, x, ((logits, feats), _) = small_lite0
  model = lite.EfficientNetLite0(num_classes=7, shifted_depthwise=False)
  got_logits, got_feats = jax.jit(functools.partial(
      model.apply, return_features=True))(variables, x)
  np.testing.assert_allclose(got_feats, feats, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(got_logits, logits, rtol=1e-4, atol=1e-4)
