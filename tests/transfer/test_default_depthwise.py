"""Lite0's default depthwise path: shifted sums on the CPU backend, XLA's
grouped convolution elsewhere; the same function either way."""
import functools
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

from research.models import efficientnet_lite as lite


def test_default_picks_shifted_on_cpu_and_grouped_elsewhere():
  assert jax.default_backend() == "cpu"
  assert lite.EfficientNetLite0().uses_shifted_depthwise()
  assert not lite.EfficientNetLite0(shifted_depthwise=False).uses_shifted_depthwise()
  assert not lite.EfficientNetLite0(fast_depthwise_grad=False).uses_shifted_depthwise()
  for backend in ("gpu", "tpu"):
    with mock.patch.object(jax, "default_backend", return_value=backend):
      assert not lite.EfficientNetLite0().uses_shifted_depthwise()
      assert lite.EfficientNetLite0(shifted_depthwise=True).uses_shifted_depthwise()


def test_default_model_on_cpu_equals_grouped_conv_path():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
  default = lite.EfficientNetLite0(num_classes=5)
  grouped = lite.EfficientNetLite0(num_classes=5, shifted_depthwise=False)
  variables = jax.jit(default.init)(jax.random.PRNGKey(0), x)
  # Non-trivial BatchNorm statistics so every layer's output matters.
  rng = np.random.default_rng(1)
  variables = jax.tree.map(lambda v: v + 0.1 * rng.random(v.shape).astype(v.dtype), variables)
  # The default jaxpr contains no grouped convolution; the forced one does.
  n_conv = lambda m: str(jax.make_jaxpr(m.apply)(variables, x)).count("conv_general_dilated")
  assert n_conv(default) < n_conv(grouped)
  apply = lambda m: jax.jit(functools.partial(m.apply, return_features=True))(variables, x)
  (la, fa), (lb, fb) = apply(default), apply(grouped)
  np.testing.assert_allclose(fa, fb, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(la, lb, rtol=1e-4, atol=1e-4)
