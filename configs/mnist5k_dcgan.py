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
  adam = dict(name="adam", lr=2e-4, b1=0.5, b2=0.999, schedule="constant",
              warmup_steps=0, weight_decay=0.0, grad_clip_norm=0.0, frozen=(),
              lr_mults=())
  c.g_optimizer = ml_collections.ConfigDict(adam)
  c.d_optimizer = ml_collections.ConfigDict(adam)
  c.batch_size = 64
  c.eval_batch_size = 500
  c.num_steps = 10000
  c.log_every = 100
  c.eval_every = 1000
  c.checkpoint_every = 1000
  c.keep_checkpoints = 2
  c.best_metric = ""
  c.parallel = "pmap"
  c.progress = True
  c.distributed = False
  return c


def make_quick(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  c.model.latent_dim = 16
  c.model.generator.width = 8
  c.model.discriminator.width = 8
  c.batch_size = 16
  c.eval_batch_size = 200
  c.num_steps = 4
  c.log_every = 2
  c.eval_every = 4
  c.checkpoint_every = 4
  c.progress = False
  return c


def get_config(arg: str = ""):
  args = set(filter(None, arg.split(",")))
  if args - {"quick"}:
    raise ValueError(f"configs/mnist5k_dcgan.py: unknown variant(s) "
                     f"{sorted(args - {'quick'})}; valid: quick")
  c = gan_base()
  if "quick" in args:
    c = make_quick(c)
  return c
