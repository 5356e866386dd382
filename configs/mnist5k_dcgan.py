"""Unconditional DCGAN on the 4,000-image mnist5k training split.

  python scripts/train.py --config configs/mnist5k_dcgan.py --workdir runs/dcgan
  python scripts/train.py --config configs/mnist5k_dcgan.py:quick --workdir runs/q

Variants: quick (a few steps, tiny widths: a smoke test).
"""
import ml_collections

from research import config_lib


def gan_base() -> ml_collections.ConfigDict:
  """Fields shared by the mnist5k GAN configs."""
  c = ml_collections.ConfigDict()
  c.task = "gan"
  c.seed = 0
  c.data = config_lib.data_config("mnist5k")
  c.model = ml_collections.ConfigDict(dict(
      image_size=28, channels=1, latent_dim=64, num_classes=10, conditional=False,
      generator=dict(width=64, conditioning="cbn"),
      discriminator=dict(width=64, spectral_norm=False, num_downsamples=2)))
  c.loss = "non_saturating"
  c.n_critic = 1
  c.gp_weight = 0.0
  c.r1_weight = 0.0
  c.class_weight = 0.0
  c.ema_decay = 0.999
  c.diff_augment = ""
  c.g_optimizer = config_lib.optimizer_config("adam", 2e-4, b1=0.5, b2=0.999, schedule="constant")
  c.d_optimizer = config_lib.optimizer_config("adam", 2e-4, b1=0.5, b2=0.999, schedule="constant")
  return config_lib.set_trainer_fields(c, batch_size=64, eval_batch_size=500, num_steps=10000,
                                       log_every=100, eval_every=1000, checkpoint_every=1000)


def make_quick(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  c.model.latent_dim = 16
  c.model.generator.width = 8
  c.model.discriminator.width = 8
  c.update(dict(batch_size=16, eval_batch_size=200, num_steps=4, log_every=2, eval_every=4,
                checkpoint_every=4, progress=False))
  return c


VARIANTS = ("quick",)


def get_config(arg: str = ""):
  args = config_lib.variants(arg, VARIANTS, __file__)
  c = gan_base()
  if "quick" in args:
    c = make_quick(c)
  return c
