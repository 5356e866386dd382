"""VAE task: end-to-end on the trainer; a few steps improve the ELBO."""
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from research import data, parallel, trainer
from research.config_lib import load
from research.tasks.vae import VAETask

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")


def test_cvae_quick_trains_and_reports_nll(tmp_path):
  config = load(os.path.join(CONFIGS, "mnist5k_cvae.py") + ":quick")
  # Compile-bound: one train step (a second would recompile, see
  # test_gan.py) and a 64-image eval keep it to one compile per function.
  config.num_steps = config.eval_every = 1
  config.data.eval_split = "test[:64]"
  config.eval_batch_size = 64
  result = trainer.train_and_evaluate(config, str(tmp_path))
  assert result["step"] == config.num_steps
  # The IWAE bound is a tighter bound than the one-sample ELBO on average,
  # and nll / bits_per_dim are its negative and the unit conversion.
  assert result["iwae"] >= result["elbo"] - 1.0
  assert result["nll"] == -result["iwae"]
  np.testing.assert_allclose(result["bits_per_dim"],
                             result["nll"] / (784 * np.log(2)), rtol=1e-6)
  np.testing.assert_allclose(result["elbo"], result["recon"] - result["kl"], rtol=1e-5)
  assert (tmp_path / "samples" / "step_0000001.png").exists()


def test_vae_training_increases_the_elbo():
  config = load(os.path.join(CONFIGS, "mnist5k_vae.py") + ":quick")
  config.optimizer.lr = 3e-3
  config.num_steps = 30  # the cosine schedule spans the 30 steps below
  task = VAETask(config)
  train = data.load("mnist5k", "train")
  images, labels = train["image"][:32], train["label"][:32]
  state = task.init_state(jax.random.PRNGKey(0), {"image": images[:2], "label": labels[:2]})
  dp = parallel.DataParallel(task.train_step, task.eval_step,
                             devices=jax.local_devices()[:8])
  mesh = Mesh(np.asarray(jax.local_devices()[:8]), (parallel.AXIS,))
  state = jax.device_put(state, NamedSharding(mesh, PartitionSpec()))  # one compile
  batch = dp.put_batch(parallel.shard({"image": images, "label": labels}, 8))
  elbos = []
  for s in range(30):
    state, m = dp.train_step(state, batch, jax.random.PRNGKey(1), np.int32(s))
    elbos.append(float(m["elbo"]))
  # Per-pixel Bernoulli with p=0.5 is 784 log 2 = 543 nats; training must beat
  # the initial value clearly.
  assert np.mean(elbos[-5:]) > np.mean(elbos[:5]) + 50
