"""Train a class-conditional generator on one k-shot subset and write labelled samples
(a thin layer over `research.complete`; see its docstring for the files written).

  python scripts/complete.py --config configs/mnist5k_cvae.py --k 10 --seed 0 \
      --out runs/gen/cvae_k10_s0 --num_per_class 500 [--config.num_steps=2000 ...]
"""
from __future__ import annotations

import sys

from research import cli
from research.complete import main  # noqa: F401

if __name__ == "__main__":
  sys.exit(cli.run(main))
