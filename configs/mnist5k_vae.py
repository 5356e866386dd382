"""Convolutional VAE on the 4,000-image mnist5k training split; test NLL by IWAE.

  python scripts/train.py --config configs/mnist5k_vae.py --workdir runs/vae
  python scripts/train.py --config configs/mnist5k_vae.py:quick --workdir runs/q
  python scripts/train.py --config configs/mnist5k_vae.py:logistic --workdir runs/vl

Variants (combinable): quick (a few steps, tiny widths), logistic (discretized
logistic likelihood on 8-bit pixels instead of Bernoulli on binarised pixels),
gaussian (fixed-variance Gaussian), iwae1000 (eval bound with k = 1000).
"""
import ml_collections

from research import config_lib

VARIANTS = ("quick", "logistic", "gaussian", "iwae1000")


def vae_base(args) -> ml_collections.ConfigDict:
  """Fields shared by the mnist5k VAE configs."""
  c = ml_collections.ConfigDict()
  c.task = "vae"
  c.seed = 0
  c.data = config_lib.data_config("mnist5k")
  c.model = ml_collections.ConfigDict(dict(
      image_size=28, channels=1, latent_dim=16, width=32, hidden=256,
      num_classes=10, conditional=False, likelihood="bernoulli"))
  c.binarize = True
  c.gaussian_log_scale = -2.3  # log(0.1)
  c.beta = 1.0
  c.kl_warmup_steps = 1000
  c.iwae_samples = 100
  c.iwae_chunk = 50
  c.optimizer = config_lib.optimizer_config("adam", 1e-3, warmup_steps=100)
  config_lib.set_trainer_fields(c, batch_size=128, eval_batch_size=200, num_steps=6000,
                                log_every=100, eval_every=2000, checkpoint_every=2000)
  if "logistic" in args:
    c.model.likelihood = "logistic"
  if "gaussian" in args:
    c.model.likelihood = "gaussian"
  if "iwae1000" in args:
    c.iwae_samples = 1000
    c.iwae_chunk = 50
  if "quick" in args:
    c.model.update(dict(latent_dim=4, width=8, hidden=32))
    c.optimizer.warmup_steps = 1
    c.update(dict(batch_size=32, num_steps=4, kl_warmup_steps=2, iwae_samples=10, iwae_chunk=5,
                  log_every=2, eval_every=4, checkpoint_every=4, progress=False))
  return c


def get_config(arg: str = ""):
  return vae_base(config_lib.variants(arg, VARIANTS, __file__))
