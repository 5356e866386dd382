"""Class-conditional VAE (encoder and decoder see the label) on mnist5k.

  python scripts/train.py --config configs/mnist5k_cvae.py --workdir runs/cvae
  python scripts/train.py --config configs/mnist5k_cvae.py:quick --workdir runs/q
  python scripts/train.py --config configs/mnist5k_cvae.py:cpu --workdir runs/cvae

Variants: as configs/mnist5k_vae.py (quick, logistic, gaussian, iwae1000),
plus cpu: the same model and schedule shape in 2,500 steps (~80 epochs of the
4,000 training images), about 15-20 minutes on two shared CPU cores; the run
behind research/GENERATIVE.md.
"""
from research import config_lib

_vae = config_lib.sibling(__file__, "mnist5k_vae")
VARIANTS = _vae.VARIANTS + ("cpu",)


def get_config(arg: str = ""):
  args = config_lib.variants(arg, VARIANTS, __file__)
  c = _vae.vae_base(args - {"cpu"})
  c.model.conditional = True
  if "cpu" in args:
    c.update(dict(num_steps=2500, kl_warmup_steps=500, eval_every=2500, checkpoint_every=500))
  return c
