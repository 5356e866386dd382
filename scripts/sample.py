"""Pictures (and a labelled sample set) from a trained GAN or VAE checkpoint.

  python scripts/sample.py --workdir runs/cgan [--out DIR] [--step N]
      [--num_npz 10000]   # also write DIR/samples.npz {'image' uint8, 'label'} for CAS:
                          # class-balanced, rounded up to a multiple of the class count

Writes into DIR (default WORKDIR/samples):
  grid.png           10 x 10 samples; for a conditional model one class per row
  interpolation.png  10 rows of latent interpolations (linear in z, 10 steps)
  reconstruction.png (VAE) test images and their reconstructions, alternating rows
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--out", default="")
  parser.add_argument("--step", type=int, default=None)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--num_npz", type=int, default=0,
                      help="also write this many labelled samples to samples.npz")
  args = parser.parse_args(argv)
  from research import trainer  # pylint: disable=g-import-not-at-top
  from research.tasks import generation  # pylint: disable=g-import-not-at-top

  task, state = trainer.load_state(args.workdir, step=args.step)
  task = generation.require(task, args.workdir)
  out = args.out or os.path.join(args.workdir, "samples")
  for path in generation.save_pictures(task, state, out, args.seed):
    print(path)
  if args.num_npz:  # the class-balanced samples scripts/complete.py draws, same seed rule
    per_class = -(-args.num_npz // task.num_classes)
    images, labels = generation.generate_balanced(task, state, per_class, args.seed + 7)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "samples.npz")
    np.savez(path, image=images, label=labels)
    print(path)
  return 0


if __name__ == "__main__":
  import _cli  # pylint: disable=g-import-not-at-top
  sys.exit(_cli.run(main))
