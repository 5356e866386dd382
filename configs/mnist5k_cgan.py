"""Class-conditional SNGAN on mnist5k: conditional BatchNorm generator, spectral
norm + projection discriminator, hinge loss, EMA generator, DiffAugment.

  python scripts/train.py --config configs/mnist5k_cgan.py --workdir runs/cgan
  python scripts/train.py --config configs/mnist5k_cgan.py:quick --workdir runs/q

  python scripts/train.py --config configs/mnist5k_cgan.py:cpu --workdir runs/cgan

Variants: quick (a few steps, tiny widths), cpu (generator width 32,
discriminator width 16, one critic step, 9,000 steps, plus the class term
`class_weight` = 1 and faster class parameters, see below: the default widths
cost ~12 s per step on two shared CPU cores, this ~0.35 s on one idle core,
~50 min in all, less with the faster strided convs), embed (label-embedding generator
instead of conditional BatchNorm), wgan_gp (Wasserstein loss + gradient
penalty, no spectral norm), r1 (non-saturating loss + R1 penalty).
"""
from research import config_lib

VARIANTS = ("quick", "cpu", "embed", "wgan_gp", "r1")


def get_config(arg: str = ""):
  args = config_lib.variants(arg, VARIANTS, __file__)
  dcgan = config_lib.sibling(__file__, "mnist5k_dcgan")
  c = dcgan.gan_base()
  c.model.conditional = True
  c.model.latent_dim = 128
  c.model.generator.conditioning = "cbn"
  c.model.discriminator.spectral_norm = True
  c.loss = "hinge"
  c.n_critic = 2
  c.ema_decay = 0.999
  c.diff_augment = "color,translation,cutout"
  # SNGAN's Adam (b1 = 0, b2 = 0.9) with a faster discriminator (TTUR).
  c.g_optimizer.update(dict(lr=1e-4, b1=0.0, b2=0.9))
  c.d_optimizer.update(dict(lr=4e-4, b1=0.0, b2=0.9))
  if "embed" in args:
    c.model.generator.conditioning = "embed"
  if "wgan_gp" in args:
    c.loss = "wasserstein"
    c.gp_weight = 10.0
    c.model.discriminator.spectral_norm = False
    c.n_critic = 5
  if "r1" in args:
    c.loss = "non_saturating"
    c.r1_weight = 1.0
  if "cpu" in args:
    c.model.generator.width = 32
    c.model.discriminator.width = 16
    c.n_critic = 1
    # CAS (3 CAS-classifier seeds): 65.6% at 3,000 steps (one seed),
    # 89.4 +- 0.7% at 6,000, 91.7 +- 0.5% at 9,000 (README, GENERATIVE.md).
    c.num_steps = 9000
    # A few thousand steps need a strong class signal: at lr 1e-4 Adam moves
    # each per-class BatchNorm scale by ~1e-4 a step (~0.3 in 3,000), and
    # without a class term D's projection stayed near chance on real digits
    # (the previous cpu run: samples not class-consistent, CAS 19.4%). So:
    # D's projection is also trained as a classifier on real images and G is
    # pushed to be classified as its label (class_weight), G's lr is doubled,
    # and the per-class scales/shifts and D's class embedding learn faster.
    c.class_weight = 1.0
    c.g_optimizer.lr = 2e-4
    c.g_optimizer.lr_mults = ((".*(gamma|beta).*", 10.0),)
    c.d_optimizer.lr_mults = (("projection.*", 5.0),)
    c.eval_every = 1000
    c.checkpoint_every = 500
  if "quick" in args:
    c = dcgan.make_quick(c)
  return c
