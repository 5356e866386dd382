"""Mixed precision on real weights: ImageNet EfficientNet-Lite0 in bfloat16 vs float32."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.models import efficientnet_lite
from research.transfer import pretrained

# Measured max |logit_bf16 - logit_f32| over the four photos: 0.168 with the shifted
# depthwise convs (the CPU default), 0.152 with XLA's grouped convs; float32 logits
# reach 10.4 and the smallest top-1 margin (chelsea: 285 over 282) is 0.40.
LOGIT_TOLERANCE = 0.4


def _logits(dtype, images):
  model = efficientnet_lite.EfficientNetLite0(dtype=dtype)
  abstract = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3))))
  variables = pretrained.load_efficientnet_lite0(
      jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), abstract))
  assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  return jax.jit(model.apply)(variables, images)


@pytest.mark.slow  # two 224 px Lite0 compiles (float32, bf16): -m slow
def test_bf16_lite0_keeps_top1_and_logits_near_float32(photos):
  names, images, expected = photos
  want = _logits(jnp.float32, images)
  got = _logits(jnp.bfloat16, images)
  assert got.dtype == jnp.float32
  top1 = dict(zip(names, np.asarray(got.argmax(-1))))
  assert top1 == dict(zip(names, np.asarray(want.argmax(-1)))), top1
  for name, cls in expected.items():
    assert top1[name] == cls, (name, top1)
  diff = float(jnp.max(jnp.abs(got - want)))
  assert diff < LOGIT_TOLERANCE, diff
  assert diff > 0  # it did compute in bf16
