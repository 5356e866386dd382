"""Mixed precision (`dtype='bfloat16'`) in every registry model: float32 parameters,
BatchNorm statistics and outputs; bfloat16 layer activations; outputs near float32's."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import models
from research.models import depthwise
from research.models import gan, strided_conv, vae

BF16 = jnp.bfloat16
KEY = jax.random.PRNGKey(0)
IMAGES = jnp.asarray(np.random.default_rng(0).random((4, 28, 28, 1)), jnp.float32)
RGB = jnp.asarray(np.random.default_rng(1).normal(size=(4, 32, 32, 3)), jnp.float32)
LABELS = jnp.arange(4) % 10
Z = jnp.asarray(np.random.default_rng(2).normal(size=(4, 16)), jnp.float32)

# The layers whose outputs are the network's activations: in bf16 they compute in bf16.
LAYERS = (nn.Conv, nn.ConvTranspose, nn.Dense, nn.BatchNorm, nn.Embed,
          strided_conv.SubpixelConvTranspose, depthwise.DepthwiseConv)


def _classifier(name, x, **kw):
  def build(dtype):
    return models.get_model(name, dtype=dtype, **kw)
  return build, (x,), dict(train=True, return_features=True)


# name -> (build(dtype) -> module, call args, train-mode call kwargs), one case per
# registry model (plus the non-default code paths: shifted depthwise convs, lax
# transposed convs, conditioning, spectral norm).
CASES = {
    "small_cnn": _classifier("small_cnn", IMAGES, width=8, dropout=0.1),
    "resnet18": _classifier("resnet18", IMAGES, width=8),
    "resnet34": _classifier("resnet34", IMAGES, width=4),
    "dann_mnist": _classifier("dann_mnist", IMAGES, dropout=0.1),
    "domain_discriminator": (
        lambda dtype: models.get_model("domain_discriminator", hidden=32, dtype=dtype),
        (jnp.ones((4, 48)),), {}),
    "vae": (lambda dtype: models.get_model("vae", latent_dim=8, width=8, hidden=32,
                                           num_classes=10, dtype=dtype),
            (IMAGES, LABELS), dict(key=KEY)),
    "vae/logistic/lax": (lambda dtype: vae.VAE(latent_dim=8, width=8, hidden=32,
                                               likelihood="logistic",
                                               fast_strided_convs=False, dtype=dtype),
                         (IMAGES,), dict(key=KEY)),
    "dcgan_generator": (lambda dtype: models.get_model(
        "dcgan_generator", width=8, conditioning="cbn", dtype=dtype),
                        (Z, LABELS), dict(train=True)),
    "dcgan_generator/embed/lax": (lambda dtype: gan.Generator(
        image_size=32, channels=3, width=8, conditioning="embed",
        fast_strided_convs=False, dtype=dtype), (Z, LABELS), dict(train=True)),
    "dcgan_discriminator": (lambda dtype: models.get_model(
        "dcgan_discriminator", width=8, conditional=True, spectral_norm=True, dtype=dtype),
                            (IMAGES * 2 - 1, LABELS), dict(train=True, return_features=True)),
}
for _i in range(5):
  CASES[f"efficientnet_lite{_i}"] = _classifier(f"efficientnet_lite{_i}", RGB, num_classes=7)
CASES["efficientnet_lite0/xla_depthwise"] = _classifier(
    "efficientnet_lite0", RGB, num_classes=7, shifted_depthwise=False)
CASES["efficientnet_lite0/shifted_depthwise"] = _classifier(
    "efficientnet_lite0", RGB, num_classes=7, shifted_depthwise=True)


def test_every_registry_model_has_a_case():
  assert set(models.names()) <= {name.split("/")[0] for name in CASES}


def test_compute_dtype_names_the_bad_value():
  assert models.compute_dtype("float32") == jnp.float32
  assert models.compute_dtype("bfloat16") == jnp.bfloat16
  with pytest.raises(ValueError, match=r"dtype must be one of \('float32', 'bfloat16'\), "
                                       r"got 'float16'"):
    models.compute_dtype("float16")


def _float_dtypes(tree):
  return {str(x.dtype) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}


def _is_layer(module, method_name):
  return isinstance(module, LAYERS) and method_name == "__call__"


@pytest.mark.parametrize("name", sorted(CASES))
def test_bfloat16_computes_in_bf16_with_float32_params_stats_and_outputs(name):
  """Abstract evaluation (jax.eval_shape, nothing compiled): every variable float32,
  every layer's output bf16, the model's outputs and updated statistics float32."""
  build, args, kwargs = CASES[name]
  model = build(BF16)
  rngs = {"params": KEY, "dropout": KEY}
  variables = jax.eval_shape(lambda: model.init(rngs, *args, **kwargs))
  assert _float_dtypes(variables) == {"float32"}, name
  mutable = ["intermediates"] + [c for c in variables if c != "params"]
  out, state = jax.eval_shape(lambda v: model.apply(
      v, *args, **kwargs, rngs=rngs, mutable=mutable, capture_intermediates=_is_layer),
      variables)
  assert _float_dtypes(out) == {"float32"}, name
  updated = {c: v for c, v in state.items() if c != "intermediates"}
  assert _float_dtypes(updated) <= {"float32"}, name  # BatchNorm / spectral-norm stats
  activations = jax.tree.leaves(state["intermediates"])
  assert len(activations) >= 3, name
  assert {str(a.dtype) for a in activations} == {"bfloat16"}, name


def _max_rel_diff(a, b):
  """max |a - b| / max |b| over every output leaf."""
  return max(float(jnp.max(jnp.abs(x - y)) / jnp.max(jnp.abs(y)))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


_SLOW = pytest.mark.slow  # compiles a float32 and a bf16 model each: -m slow


@pytest.mark.parametrize("name", ["small_cnn", "vae", pytest.param("resnet18", marks=_SLOW),
                                  pytest.param("dcgan_generator", marks=_SLOW),
                                  pytest.param("dcgan_discriminator", marks=_SLOW),
                                  pytest.param("domain_discriminator", marks=_SLOW)])
def test_bfloat16_outputs_are_near_float32_with_the_same_parameters(name):
  """Same float32 variables, evaluation mode: bf16 (8 significant bits, relative
  rounding 2^-9 per op) stays within 2% of the float32 output's range (measured:
  0.3-0.75%)."""
  build, args, kwargs = CASES[name]
  kwargs = {k: v for k, v in kwargs.items() if k != "train"}
  variables = build(jnp.float32).init({"params": KEY, "dropout": KEY}, *args, **kwargs)
  want = jax.jit(lambda v: build(jnp.float32).apply(v, *args, **kwargs))(variables)
  got = jax.jit(lambda v: build(BF16).apply(v, *args, **kwargs))(variables)
  assert _float_dtypes(got) == {"float32"}
  assert _max_rel_diff(got, want) < 0.02, (name, _max_rel_diff(got, want))


@pytest.mark.parametrize("fn", [depthwise.depthwise_conv2d, depthwise.depthwise_conv2d_shifted])
def test_bf16_depthwise_convs_accumulate_in_float32(fn):
  """bf16 operands: the output is the float32 convolution of the same (bf16-valued)
  operands rounded once to bf16 (relative 2^-8), not a sum rounded at each of the
  k*k terms; gradients likewise within bf16 rounding of float32 XLA's."""
  r = np.random.default_rng(3)
  x = jnp.asarray(r.normal(size=(2, 9, 9, 6)), BF16)
  w = jnp.asarray(r.normal(size=(5, 5, 1, 6)), BF16)
  g = jnp.asarray(r.normal(size=(2, 5, 5, 6)), BF16)

  def xla(x, w):
    return jax.lax.conv_general_dilated(
        x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=6, precision="highest")

  f32 = lambda a: a.astype(jnp.float32)
  got, vjp = jax.vjp(lambda x, w: fn(x, w, 2), x, w)
  assert got.dtype == BF16
  want, want_vjp = jax.vjp(xla, f32(x), f32(w))
  np.testing.assert_allclose(f32(got), want, rtol=2 ** -8, atol=1e-6)
  for a, b in zip(vjp(g), want_vjp(f32(g))):
    assert a.dtype == BF16
    np.testing.assert_allclose(f32(a), b, rtol=2 ** -7, atol=2 ** -7 * float(jnp.max(jnp.abs(b))))
