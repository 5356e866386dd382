"""GAN generator/discriminator: shapes, ranges, spectral norm vs numpy SVD."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.models import gan


@pytest.mark.parametrize("size,channels,conditioning",
                         [(28, 1, None), (32, 3, "embed"), (28, 3, "cbn")])
def test_generator_shapes_and_range(size, channels, conditioning):
  g = gan.Generator(image_size=size, channels=channels, width=8,
                    conditioning=conditioning)
  z = jax.random.normal(jax.random.key(0), (4, 16))
  y = jnp.arange(4)
  v = g.init(jax.random.key(1), z, y)
  out, upd = g.apply(v, 5 * z, y, train=True, mutable=["batch_stats"])
  assert out.shape == (4, size, size, channels)
  assert float(jnp.max(jnp.abs(out))) <= 1.0
  assert "batch_stats" in upd


def test_generator_conditioning_changes_output_and_needs_labels():
  g = gan.Generator(width=8, conditioning="cbn")
  z = jnp.ones((2, 8))
  v = g.init(jax.random.key(0), z, jnp.zeros(2, jnp.int32))
  # Give class 1 a different scale so the label matters.
  v = jax.tree_util.tree_map_with_path(
      lambda p, x: x.at[1].mul(3.0) if "gamma" in jax.tree_util.keystr(p) else x, v)
  a = g.apply(v, z, jnp.array([0, 0]))
  b = g.apply(v, z, jnp.array([0, 1]))
  np.testing.assert_allclose(a[0], b[0])
  assert not np.allclose(a[1], b[1])
  with pytest.raises(ValueError, match="needs labels"):
    g.apply(v, z)
  with pytest.raises(ValueError, match="image_size"):
    gan.Generator(image_size=30).init(jax.random.key(0), z)


def test_projection_discriminator_is_linear_in_the_label_embedding():
  d = gan.Discriminator(width=8, conditional=True)
  x = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1), minval=-1, maxval=1)
  v = d.init(jax.random.key(1), x, jnp.zeros(3, jnp.int32))
  l0, feats = d.apply(v, x, jnp.zeros(3, jnp.int32), return_features=True)
  l5 = d.apply(v, x, jnp.full(3, 5))
  e = np.asarray(v["params"]["projection"]["embedding"])
  np.testing.assert_allclose(l5 - l0, np.asarray(feats) @ (e[5] - e[0]),
                             rtol=1e-4, atol=1e-4)


def test_spectral_norm_sigma_matches_svd_after_power_iteration():
  d = gan.Discriminator(width=8, spectral_norm=True)
  x = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1))
  v = d.init(jax.random.key(1), x)
  stats = v["batch_stats"]
  step = jax.jit(lambda s: d.apply({"params": v["params"], "batch_stats": s}, x,
                                   train=True, mutable=["batch_stats"])[1]
                 ["batch_stats"])
  for _ in range(100):
    stats = step(stats)
  kernel = np.asarray(v["params"]["down_1"]["kernel"], np.float64)
  top = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
  sigma = float(stats["down_1_sn"]["down_1/kernel/sigma"])
  np.testing.assert_allclose(sigma, top, rtol=1e-3)
  # Eval mode leaves the power-iteration state alone.
  _, upd = d.apply({"params": v["params"], "batch_stats": stats}, x,
                   train=False, mutable=["batch_stats"])
  np.testing.assert_array_equal(upd["batch_stats"]["down_1_sn"]["down_1/kernel/u"],
                                stats["down_1_sn"]["down_1/kernel/u"])
