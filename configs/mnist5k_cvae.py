"""Class-conditional VAE (encoder and decoder see the label) on mnist5k.

  python scripts/train.py --config configs/mnist5k_cvae.py --workdir runs/cvae
  python scripts/train.py --config configs/mnist5k_cvae.py:quick --workdir runs/q

Variants: as configs/mnist5k_vae.py (quick, logistic, gaussian, iwae1000).
"""
import importlib.util
import os


def get_config(arg: str = ""):
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist5k_vae.py")
  spec = importlib.util.spec_from_file_location("_mnist5k_vae", path)
  vae = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(vae)
  args = set(filter(None, arg.split(",")))
  vae.check_variants(args, "mnist5k_cvae.py")
  c = vae.vae_base(args)
  c.model.conditional = True
  return c
