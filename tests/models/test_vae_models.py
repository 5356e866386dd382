"""VAE encoder/decoder shapes and conditioning."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.models import vae


@pytest.mark.parametrize("likelihood,n_out,shape", [
    ("bernoulli", 1, (28, 28, 1)), ("gaussian", 1, (32, 32, 3)),
    ("gaussian_learned", 2, (28, 28, 1)), ("logistic", 2, (32, 32, 3))])
def test_vae_output_shapes(likelihood, n_out, shape):
  m = vae.VAE(image_shape=shape, latent_dim=5, width=8, hidden=32,
              likelihood=likelihood)
  x = jnp.zeros((3,) + shape)
  v = m.init(jax.random.key(0), x, key=jax.random.key(1))
  params, mean, log_var = m.apply(v, x, key=jax.random.key(2))
  assert len(params) == n_out and all(p.shape == (3,) + shape for p in params)
  assert mean.shape == log_var.shape == (3, 5)
  if likelihood == "logistic":
    assert float(params[0].min()) >= 0 and float(params[0].max()) <= 1


def test_conditional_decoder_depends_on_label():
  m = vae.VAE(latent_dim=4, width=8, hidden=32, num_classes=10)
  x = jnp.zeros((2, 28, 28, 1))
  v = m.init(jax.random.key(0), x, jnp.zeros(2, jnp.int32), key=jax.random.key(1))
  z = jnp.zeros((2, 4))
  a, = m.apply(v, z, jnp.array([3, 3]), method=m.decode)
  b, = m.apply(v, z, jnp.array([3, 7]), method=m.decode)
  np.testing.assert_allclose(a[0], b[0])
  assert not np.allclose(a[1], b[1])


def test_bad_likelihood_is_named():
  with pytest.raises(ValueError, match="'poisson'"):
    vae.VAE(likelihood="poisson").init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)),
                                       key=jax.random.key(1))
