"""The DANN paper's MNIST network: shapes and parameter count from the paper's layer sizes."""
import jax
import jax.numpy as jnp
import numpy as np

from research import models


def test_dann_mnist_net_has_the_papers_layers():
  net = models.get_model("dann_mnist", num_classes=10)
  x = jnp.zeros((2, 28, 28, 3))
  variables = net.init(jax.random.PRNGKey(0), x)
  logits, feats = net.apply(variables, x, return_features=True)
  assert logits.shape == (2, 10) and feats.shape == (2, 4 * 4 * 48)
  # conv5x5(3->32), conv5x5(32->48), Dense(768->100), Dense(100->100), Dense(100->10).
  want = (25 * 3 * 32 + 32) + (25 * 32 * 48 + 48) + (768 * 100 + 100) + (100 * 100 + 100) \
      + (100 * 10 + 10)
  assert sum(np.size(p) for p in jax.tree.leaves(variables["params"])) == want
  disc = models.get_model("domain_discriminator", hidden=100, depth=1)
  d_vars = disc.init(jax.random.PRNGKey(1), feats)
  assert disc.apply(d_vars, feats).shape == (2,)
  assert sum(np.size(p) for p in jax.tree.leaves(d_vars)) == 768 * 100 + 100 + 100 + 1
