"""Stride-2 convs as stride-1 convs: same outputs and gradients as lax."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from research.models import strided_conv
from research.models.vae import VAE
from tests.jaxprs import equations

NHWC = ('NHWC', 'HWIO', 'NHWC')


def _data(shape, kshape, seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=shape), jnp.float32),
          jnp.asarray(rng.normal(size=kshape), jnp.float32))


def _check(fast, ref, x, k):
  np.testing.assert_allclose(fast(x, k), ref(x, k), rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda x, k: jnp.sum(jnp.sin(f(x, k)))
  gf = jax.grad(loss(fast), (0, 1))(x, k)
  gr = jax.grad(loss(ref), (0, 1))(x, k)
  for a, b in zip(gf, gr):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('size,kernel,padding', [
    (28, 4, 'SAME'), (14, 4, 'SAME'), (15, 4, 'SAME'), (16, 2, 'VALID'),
    (13, 6, 'SAME'), (12, 4, ((1, 2), (0, 1))), (9, 4, 'VALID'),
])
@pytest.mark.parametrize('channels', [1, 4, 5])  # patches matmul, lax
def test_conv_s2d_matches_lax(size, kernel, padding, channels):
  x, k = _data((3, size, size + 1, channels), (kernel, kernel, channels, 7))
  ref = lambda x, k: lax.conv_general_dilated(
      x, k, (2, 2), padding, dimension_numbers=NHWC)
  fast = lambda x, k: strided_conv.conv_s2d(
      x, k, (2, 2), padding, dimension_numbers=NHWC)
  _check(fast, ref, x, k)


def _primitives(fn, *args):
  return {e.primitive.name for e in equations(jax.make_jaxpr(fn)(*args).jaxpr)}


def test_conv_s2d_path_by_channels():
  """Up to PATCHES_MAX_CHANNELS input channels: one matmul, no conv; more:
  lax's stride-2 conv itself (bitwise)."""
  c = strided_conv.PATCHES_MAX_CHANNELS
  f = lambda x, k: strided_conv.conv_s2d(x, k, (2, 2), 'SAME',
                                         dimension_numbers=NHWC)
  x, k = _data((2, 28, 28, c), (4, 4, c, 8))
  prims = _primitives(f, x, k)
  assert 'dot_general' in prims and 'conv_general_dilated' not in prims
  x, k = _data((2, 14, 14, c + 1), (4, 4, c + 1, 8))
  np.testing.assert_array_equal(
      f(x, k), lax.conv_general_dilated(x, k, (2, 2), 'SAME',
                                        dimension_numbers=NHWC))


def test_conv_s2d_falls_back_for_other_convs():
  x, k = _data((2, 9, 9, 3), (3, 3, 3, 4))
  for strides in ((1, 1), (2, 2)):  # odd kernel: not rewritten
    out = strided_conv.conv_s2d(x, k, strides, 'SAME',
                                dimension_numbers=NHWC)
    ref = lax.conv_general_dilated(x, k, strides, 'SAME',
                                   dimension_numbers=NHWC)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize('size,kernel,padding', [
    (7, 4, 'SAME'), (14, 4, 'SAME'), (6, 3, 'SAME'), (5, 5, 'SAME'),
    (7, 4, 'VALID'), (6, 2, 'SAME'), (4, 3, 'VALID'),
])
@pytest.mark.parametrize('features', [3, 8])
def test_conv_transpose_subpixel_matches_lax(size, kernel, padding, features):
  x, k = _data((2, size, size + 2, 6), (kernel, kernel, 6, features), seed=1)
  ref = lambda x, k: lax.conv_transpose(x, k, (2, 2), padding,
                                        dimension_numbers=NHWC)
  fast = lambda x, k: strided_conv.conv_transpose_subpixel(
      x, k, (2, 2), padding)
  assert fast(x, k).shape == ref(x, k).shape
  _check(fast, ref, x, k)


def test_conv_transpose_one_tap_kernel_matches_lax():
  """Kernel 1 < stride: the odd output phases have no taps (zeros)."""
  x, k = _data((2, 5, 6, 3), (1, 1, 3, 8), seed=4)
  for padding in ('SAME', 'VALID'):
    ref = lambda x, k, p=padding: lax.conv_transpose(
        x, k, (2, 2), p, dimension_numbers=NHWC)
    fast = lambda x, k, p=padding: strided_conv.conv_transpose_subpixel(
        x, k, (2, 2), p)
    assert fast(x, k).shape == ref(x, k).shape
    _check(fast, ref, x, k)


@pytest.mark.parametrize('features', [1, 8])
def test_conv_transpose_gradients_are_undilated_convs(features):
  """The forward pass is lax's op itself (bitwise); the backward pass is two
  convolutions without a dilated input: the input gradient (stride 2) and the
  kernel gradient of a stride-2 convolution (XLA's rule would convolve the
  2x dilated input, off YNNPACK's fast path)."""
  f = lambda x, k: strided_conv.conv_transpose_subpixel(x, k, (2, 2), 'SAME')
  x, k = _data((2, 7, 7, 6), (4, 4, 6, features), seed=2)
  np.testing.assert_array_equal(
      f(x, k), lax.conv_transpose(x, k, (2, 2), 'SAME', dimension_numbers=NHWC))
  grad = jax.grad(lambda x, k: jnp.sum(f(x, k) ** 2), (0, 1))
  convs = [e for e in equations(jax.make_jaxpr(grad)(x, k).jaxpr)
           if e.primitive.name == 'conv_general_dilated']
  dilated = [e for e in convs if tuple(e.params['lhs_dilation']) != (1, 1)]
  assert len(convs) == 3 and len(dilated) == 1  # the forward pass
  assert dilated[0].outvars[0].aval.shape == (2, 14, 14, features)
  kernel_grad = [e for e in convs if e.outvars[0].aval.shape[:2] == (4, 4)]
  assert len(kernel_grad) == 1
  assert tuple(kernel_grad[0].params['rhs_dilation']) == (2, 2)


def test_subpixel_module_is_flax_conv_transpose():
  x, _ = _data((2, 7, 7, 8), (1, 1, 1, 1))
  ref = nn.ConvTranspose(5, (4, 4), strides=(2, 2))
  fast = strided_conv.SubpixelConvTranspose(5, (4, 4))
  p_ref = ref.init(jax.random.key(3), x)
  p_fast = fast.init(jax.random.key(3), x)
  jax.tree.map(np.testing.assert_array_equal, p_ref, p_fast)
  np.testing.assert_allclose(fast.apply(p_ref, x), ref.apply(p_ref, x),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('num_classes,likelihood', [(None, 'bernoulli'),
                                                    (10, 'logistic')])
def test_vae_fast_convs_same_params_and_function(num_classes, likelihood):
  x = jnp.asarray(np.random.default_rng(2).random((4, 28, 28, 1)),
                  jnp.float32)
  y = jnp.arange(4) % 10
  kw = dict(num_classes=num_classes, likelihood=likelihood)
  fast, plain = VAE(**kw), VAE(fast_strided_convs=False, **kw)
  labels = y if num_classes else None
  p = plain.init(jax.random.key(0), x, labels, key=jax.random.key(1))
  p_fast = fast.init(jax.random.key(0), x, labels, key=jax.random.key(1))
  jax.tree.map(np.testing.assert_array_equal, p, p_fast)
  out = lambda m: lambda p: m.apply(p, x, labels, key=jax.random.key(5))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-5),
               out(fast)(p), out(plain)(p))
  loss = lambda m: lambda p: jnp.sum(out(m)(p)[0][0] ** 2)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-4),
               jax.grad(loss(fast))(p), jax.grad(loss(plain))(p))


@pytest.mark.parametrize('spectral_norm', [False, True])
def test_gan_fast_convs_same_params_and_function(spectral_norm):
  from research.models.gan import Discriminator, Generator
  z = jnp.asarray(np.random.default_rng(3).normal(size=(4, 16)), jnp.float32)
  y = jnp.arange(4) % 10
  outs = []
  for fast in (True, False):
    g = Generator(width=8, conditioning='cbn', fast_strided_convs=fast)
    d = Discriminator(width=8, conditional=True, spectral_norm=spectral_norm,
                      fast_strided_convs=fast)
    gv = g.init(jax.random.key(0), z, y)
    x = g.apply(gv, z, y)
    dv = d.init(jax.random.key(1), x, y)
    grad = jax.grad(lambda p: jnp.sum(d.apply(
        {**dv, 'params': p}, x, y, mutable=['batch_stats'])[0]))(dv['params'])
    outs.append((gv, dv, x, d.apply(dv, x, y), grad))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-5),
               outs[0], outs[1])
