"""Ops register where they are defined; a new op is one decorated factory."""
import jax
import numpy as np
import pytest

from research import augment
from research.augment import registry


def test_every_op_a_spec_can_name_is_registered_by_its_module():
  assert set(augment.OPS) >= {"identity", "flip_lr", "affine", "color_jitter", "cutout",
                              "random_erasing", "rand_augment", "trivial_augment_wide"}
  for name, factory in augment.OPS.items():
    assert factory.__module__.startswith("research.augment."), name


def test_a_toy_op_registered_in_a_test_is_usable_from_a_spec():
  @registry.register("toy_negate")
  def toy_negate_op(offset=0.0):
    return lambda key, image: 1.0 - image + offset

  try:
    images = np.random.default_rng(0).uniform(size=(4, 8, 8, 3)).astype(np.float32)
    out = augment.build("toy_negate(offset=0.0)|flip_lr(p=0.0)")(jax.random.key(0), images)
    np.testing.assert_allclose(np.asarray(out), 1.0 - images, atol=1e-6)
    with pytest.raises(ValueError, match="bad arguments for toy_negate"):
      augment.build("toy_negate(scale=2)")
  finally:
    registry.unregister("toy_negate")
  with pytest.raises(ValueError, match="unknown op 'toy_negate'"):
    augment.build("toy_negate")


def test_a_name_cannot_be_registered_twice():
  with pytest.raises(ValueError, match="'flip_lr' is already registered"):
    registry.register("flip_lr")(lambda p=0.5: None)
