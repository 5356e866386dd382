"""research.tasks.generation: the generative interface and class-balanced sampling."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import tasks
from research.config_lib import load
from research.tasks import generation

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")


class _Ramp(generation.Generative):
  """A toy generator: pixel value = (label + z[0]) / 10, unclipped (values outside [0, 1])."""
  latent_dim, num_classes = 3, 4

  def images_from_latents(self, state, z, labels):
    v = (labels.astype(jnp.float32) + z[:, 0] * state) / 3.0
    return jnp.broadcast_to(v[:, None, None, None], (z.shape[0], 2, 2, 1))


def test_generate_balanced_is_balanced_clipped_and_deterministic():
  images, labels = generation.generate_balanced(_Ramp(), 1.0, num_per_class=5, seed=0, chunk=8)
  np.testing.assert_array_equal(labels, np.repeat(np.arange(4), 5))
  assert images.dtype == np.uint8 and images.shape == (20, 2, 2, 1)
  assert images.min() == 0 and images.max() == 255  # labels 3 (v >= 1) and 0 with z < 0 clip
  again, _ = generation.generate_balanced(_Ramp(), 1.0, num_per_class=5, seed=0, chunk=8)
  np.testing.assert_array_equal(images, again)
  other, _ = generation.generate_balanced(_Ramp(), 1.0, num_per_class=5, seed=1, chunk=8)
  assert not np.array_equal(images, other)
  # With the latent switched off, pixels are the label's value: samples follow their labels.
  flat, labels = generation.generate_balanced(_Ramp(), 0.0, num_per_class=2, seed=0)
  np.testing.assert_array_equal(flat[:, 0, 0, 0], np.round(np.clip(labels / 3.0, 0, 1) * 255))


def test_generate_draws_standard_normal_latents_from_the_key():
  images = _Ramp().generate(1.0, jax.random.PRNGKey(0), jnp.zeros(4, jnp.int32))
  z = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
  np.testing.assert_allclose(images[:, 0, 0, 0], z[:, 0] / 3.0, rtol=1e-6)


def test_require_refuses_a_task_that_cannot_generate():
  task = tasks.get_task("classify", load(os.path.join(CONFIGS, "mnist5k_classify.py:quick")))
  with pytest.raises(ValueError, match=r"runs/x holds a 'classify' run; expected a generative"):
    generation.require(task, "runs/x")
  with pytest.raises(NotImplementedError, match="cannot reconstruct"):
    _Ramp().reconstruct(None, None, None)


@pytest.mark.parametrize("config, latent, reconstructs", [
    ("mnist5k_cvae.py:quick", None, True), ("mnist5k_cgan.py:quick", None, False)])
def test_gan_and_vae_tasks_are_generative(config, latent, reconstructs):
  c = load(os.path.join(CONFIGS, config))
  task = generation.require(tasks.get_task(c.task, c))
  assert task.latent_dim == c.model.latent_dim and task.can_reconstruct == reconstructs
