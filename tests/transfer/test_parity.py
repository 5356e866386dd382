"""Parity with the PyTorch reference (efficientnet-lite-pytorch), same weights."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.models import efficientnet_lite
from research.transfer import pretrained
from research.transfer import torch_checkpoint

pytestmark = pytest.mark.torch


def _torch_model(name="efficientnet-lite0", **override):
  from efficientnet_lite_pytorch import EfficientNet  # pylint: disable=g-import-not-at-top
  return EfficientNet.from_name(name, **override)


def _flax_variables(model, state_dict, shape):
  variables = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape)))
  variables = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), variables)
  return pretrained.load_lukemelas_state_dict(variables, state_dict)


def _nchw(x):
  import torch  # pylint: disable=g-import-not-at-top
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def test_pretrained_logits_match_reference(photos):
  import torch  # pylint: disable=g-import-not-at-top
  names, images, expected = photos
  path = pretrained.default_weights_path()
  ref = _torch_model()
  ref.load_state_dict(torch.load(path, weights_only=True))
  ref.eval()
  with torch.no_grad():
    want = ref(_nchw(images)).numpy()

  model = efficientnet_lite.EfficientNetLite0()
  variables = pretrained.load_efficientnet_lite0(
      jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(
          lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(images.shape)))))
  got = np.asarray(jax.jit(model.apply)(variables, images))
  assert np.abs(got - want).max() <= 1e-4
  for i, name in enumerate(names):
    if name in expected:
      assert want[i].argmax() == expected[name]
      assert got[i].argmax() == expected[name]


def test_train_mode_and_batchnorm_momentum_match_reference(photos):
  """Batch statistics in the forward pass and the running-stat update."""
  import torch  # pylint: disable=g-import-not-at-top
  _, images, _ = photos
  images = images[:2, ::2, ::2]  # 2 x 112 x 112: keeps the test fast
  state_dict = torch_checkpoint.load_state_dict(pretrained.default_weights_path())
  ref = _torch_model(image_size=None, dropout_rate=0.0, drop_connect_rate=0.0)
  ref.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()})
  ref.train()
  with torch.no_grad():
    want = ref(_nchw(images)).numpy()
  new_ref = {k: v.numpy() for k, v in ref.state_dict().items()}

  model = efficientnet_lite.EfficientNetLite0(dropout_rate=0.0,
                                              drop_connect_rate=0.0)
  variables = _flax_variables(model, state_dict, images.shape)
  got, new = jax.jit(functools.partial(model.apply, train=True,
                                       mutable=["batch_stats"]))(variables, images)
  assert np.abs(np.asarray(got) - want).max() <= 1e-3
  stats = new["batch_stats"]
  np.testing.assert_allclose(stats["stem_bn"]["mean"],
                             new_ref["_bn0.running_mean"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(stats["block_7"]["expand_bn"]["mean"],
                             new_ref["_blocks.7._bn0.running_mean"],
                             rtol=1e-4, atol=1e-4)
  # PyTorch updates running_var with the unbiased batch variance, Flax with
  # the biased one: recover the batch variance from PyTorch's update and
  # rescale it by (n - 1) / n, n = 2 images x 4 x 4 positions at the top.
  n = 2 * 4 * 4
  old = state_dict["_bn1.running_var"]
  unbiased = (new_ref["_bn1.running_var"] - 0.99 * old) / 0.01
  np.testing.assert_allclose(stats["top_bn"]["var"],
                             0.99 * old + 0.01 * unbiased * (n - 1) / n,
                             rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["efficientnet-lite1", "efficientnet-lite2",
                                  "efficientnet-lite3", "efficientnet-lite4"])
def test_lite1_to_4_structure_matches_reference(name):
  """Random reference weights load strictly and give the same logits."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  ref = _torch_model(name, image_size=None)
  with torch.no_grad():  # non-trivial BatchNorm statistics
    for m in ref.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.uniform_(-0.1, 0.1)
        m.running_var.uniform_(0.5, 1.5)
        m.weight.uniform_(0.5, 1.5)
  ref.eval()
  x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    want = ref(_nchw(x)).numpy()
  state_dict = {k: v.numpy() for k, v in ref.state_dict().items()}
  model = getattr(efficientnet_lite, "EfficientNetLite" + name[-1])()
  variables = _flax_variables(model, state_dict, x.shape)
  got = np.asarray(jax.jit(model.apply)(variables, x))
  scale = np.abs(want).max()
  assert np.abs(got - want).max() <= 1e-4 * max(scale, 1.0)
