"""Torch-free: the loaded ImageNet weights classify real photos correctly."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.models import efficientnet_lite
from research.transfer import pretrained
from research.transfer import torch_checkpoint


def _abstract_variables(num_classes=1000):
  model = efficientnet_lite.EfficientNetLite0(num_classes=num_classes)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3))))
  return model, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), variables)


@pytest.fixture(scope="module")
def state_dict():
  return torch_checkpoint.load_state_dict(pretrained.default_weights_path())


def test_top1_on_real_photos(photos):
  names, images, expected = photos
  model, variables = _abstract_variables()
  variables = pretrained.load_efficientnet_lite0(variables)
  logits = jax.jit(model.apply)(variables, images)
  top1 = dict(zip(names, np.asarray(logits.argmax(-1))))
  for name, cls in expected.items():
    assert top1[name] == cls, (name, top1)
  probs = jax.nn.softmax(logits)
  assert float(probs[1, 967]) > 0.5  # a confident espresso


def test_new_head_needs_dont_load(state_dict):
  _, variables = _abstract_variables(num_classes=10)
  with pytest.raises(ValueError, match=r"head/kernel.*\(1280, 1000\).*\(1280, 10\)"):
    pretrained.load_lukemelas_state_dict(variables, state_dict)
  head = jnp.full((1280, 10), 0.5)
  variables["params"]["head"]["kernel"] = head
  new = pretrained.load_lukemelas_state_dict(variables, state_dict,
                                             dont_load=("head/.*",))
  np.testing.assert_array_equal(new["params"]["head"]["kernel"], head)
  # Layouts: OIHW -> HWIO; depthwise [C, 1, kh, kw] -> [kh, kw, 1, C].
  w = state_dict["_conv_stem.weight"]
  np.testing.assert_array_equal(new["params"]["stem_conv"]["kernel"][1, 2, 0],
                                w[:, 0, 1, 2])
  dw = state_dict["_blocks.4._depthwise_conv.weight"]
  np.testing.assert_array_equal(
      new["params"]["block_4"]["depthwise_conv"]["kernel"][0, 4, 0], dw[:, 0, 0, 4])
  np.testing.assert_array_equal(new["batch_stats"]["block_15"]["project_bn"]["var"],
                                state_dict["_blocks.15._bn2.running_var"])


def test_missing_and_unused_keys_are_errors(state_dict):
  _, variables = _abstract_variables()
  partial = dict(state_dict)
  del partial["_blocks.3._bn1.running_mean"]
  with pytest.raises(ValueError, match="batch_stats/block_3/depthwise_bn/mean"):
    pretrained.load_lukemelas_state_dict(variables, partial)
  extra = dict(state_dict, **{"_blocks.3._se_reduce.weight": np.zeros(3),
                              "_blocks.99._bn1.weight": np.zeros(3)})
  with pytest.raises(ValueError, match=r"2 checkpoint keys unused.*_se_reduce"):
    pretrained.load_lukemelas_state_dict(variables, extra)
  with pytest.raises(ValueError, match="'heads/.*' matches no variable"):
    pretrained.load_lukemelas_state_dict(variables, state_dict,
                                         dont_load=("heads/.*",))


def test_preprocess_closed_form():
  image = np.zeros((300, 450, 3), np.uint8)
  image[..., 0] = 255
  out = pretrained.preprocess(image, 224)
  assert out.shape == (224, 224, 3) and out.dtype == np.float32
  np.testing.assert_allclose(out[0, 0], (np.array([1., 0., 0.]) - [0.485, 0.456, 0.406])
                             / [0.229, 0.224, 0.225], rtol=1e-5)
  gray = pretrained.preprocess(np.full((10, 20), 128, np.uint8), 8)
  np.testing.assert_allclose(gray[..., 0], (128 / 255 - 0.485) / 0.229, rtol=1e-5)
  with pytest.raises(ValueError, match="uint8"):
    pretrained.preprocess(image.astype(np.float32))
