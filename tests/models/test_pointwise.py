"""1x1 convolutions as matrix products: the same function as lax's convolution."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from research.models import pointwise
from research.models.efficientnet_lite import EfficientNetLite, MBConvBlock
from tests.jaxprs import equations

NHWC = ('NHWC', 'HWIO', 'NHWC')


@pytest.mark.parametrize('padding', ['SAME', 'VALID', ((0, 0), (0, 0))])
def test_pointwise_conv_matches_lax_with_gradients(padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 5, 6, 7)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(1, 1, 7, 4)), jnp.float32)
  ref = lambda x, k: lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=NHWC)
  fast = lambda x, k: pointwise.pointwise_conv(x, k, (1, 1), padding, dimension_numbers=NHWC)
  np.testing.assert_allclose(fast(x, k), ref(x, k), rtol=1e-5, atol=1e-5)
  w = jnp.asarray(rng.normal(size=(3, 5, 6, 4)), jnp.float32)
  grads = [jax.grad(lambda x, k, f=f: jnp.sum(f(x, k) * w), (0, 1))(x, k) for f in (fast, ref)]
  for a, b in zip(*grads):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  names = [e.primitive.name for e in jax.make_jaxpr(fast)(x, k).jaxpr.eqns]
  assert 'dot_general' in names and 'conv_general_dilated' not in names


@pytest.mark.parametrize('kernel,strides,padding,groups', [
    ((3, 3), (1, 1), 'SAME', 1), ((1, 1), (2, 2), 'SAME', 1),
    ((1, 1), (1, 1), ((1, 1), (0, 0)), 1), ((1, 1), (1, 1), 'SAME', 7)])
def test_other_convolutions_go_to_lax_unchanged(kernel, strides, padding, groups):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 6, 6, 7)), jnp.float32)
  k = jnp.asarray(rng.normal(size=kernel + (7 // groups, 7)), jnp.float32)
  args = (x, k, strides, padding)
  kw = dict(dimension_numbers=NHWC, feature_group_count=groups)
  np.testing.assert_array_equal(pointwise.pointwise_conv(*args, **kw),
                                lax.conv_general_dilated(*args, **kw))


def test_mbconv_block_same_parameters_and_function_either_way():
  """An inverted-residual block with and without `matmul_pointwise`: identical
  parameters from the same key; outputs and parameter gradients agree to float rounding.
  (The whole pretrained model, 1x1 products included, is checked against PyTorch's in
  tests/transfer/test_parity.py.)"""
  import functools
  import flax.linen as nn
  x = jnp.asarray(np.random.default_rng(2).normal(size=(4, 8, 8, 16)), jnp.float32)
  norm = functools.partial(nn.BatchNorm, use_running_average=True)
  blocks = [MBConvBlock(3, 1, 6, 16, norm, matmul_pointwise=m) for m in (True, False)]
  variables = [b.init(jax.random.PRNGKey(0), x, False) for b in blocks]
  jax.tree.map(np.testing.assert_array_equal, variables[0], variables[1])
  outs = [jax.jit(jax.value_and_grad(lambda p, b=b: jnp.sum(
      b.apply({**variables[0], "params": p}, x, False) ** 2)))(variables[0]["params"])
          for b in blocks]
  np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(outs[0][1]), jax.tree.leaves(outs[1][1])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max()))


def test_efficientnet_lite_runs_every_1x1_conv_as_a_product():
  """Same parameter shapes either way; with `matmul_pointwise` the only convolutions
  left are the stem (3x3) and the depthwise ones (traced, not compiled)."""
  x = jnp.zeros((1, 32, 32, 3), jnp.float32)
  models = [EfficientNetLite(width=0.25, depth=0.25, num_classes=10, matmul_pointwise=m,
                             shifted_depthwise=False) for m in (True, False)]
  shapes = [jax.eval_shape(m.init, jax.random.PRNGKey(0), x) for m in models]
  assert jax.tree.map(lambda a: a.shape, shapes[0]) == jax.tree.map(lambda a: a.shape, shapes[1])
  # 7 blocks (the first without an expand conv): 6 expand + 7 project + top = 14.
  for model, pointwise_convs in zip(models, (0, 14)):
    jaxpr = jax.make_jaxpr(lambda v, m=model: m.apply(v, x))(shapes[0])
    kernels = [e.invars[1].aval.shape for e in equations(jaxpr.jaxpr)
               if e.primitive.name == 'conv_general_dilated']
    assert sum(k[:2] == (1, 1) for k in kernels) == pointwise_convs, kernels
