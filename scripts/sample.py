"""Pictures (and a labelled sample set) from a trained GAN or VAE checkpoint.

  python scripts/sample.py --workdir runs/cgan [--out DIR] [--step N]
      [--num_npz 10000]   # also write DIR/samples.npz {'image' uint8, 'label'} for CAS

Writes into DIR (default WORKDIR/samples):
  grid.png           10 x 10 samples; for a conditional model one class per row
  interpolation.png  10 rows of latent interpolations (linear in z, 10 steps)
  reconstruction.png (VAE) test images and their reconstructions, alternating rows
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np


def _generate(task, state, z, labels):
  """Images float32 [N, H, W, C] in [0, 1] for the task kind."""
  if hasattr(task, "decode_mean"):  # VAE
    return task.decode_mean(state.params, z, labels)
  return task.sample(state, z, labels)


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
  from research import data, trainer  # pylint: disable=g-import-not-at-top
  from research.tasks.sample_grid import save_image_grid  # pylint: disable=g-import-not-at-top

  task, state = trainer.load_state(args.workdir, step=args.step)
  if not (hasattr(task, "decode_mean") or hasattr(task, "sample")):
    print(f"error: {args.workdir} holds a {task.config.task!r} run; "
          f"expected 'gan' or 'vae'", file=sys.stderr)
    return 2
  out = args.out or os.path.join(args.workdir, "samples")
  latent = task.model.latent_dim if hasattr(task, "decode_mean") else task.latent_dim
  num_classes = task.num_classes
  generate = jax.jit(lambda z, y: _generate(task, state, z, y))
  key = jax.random.PRNGKey(args.seed)
  k_grid, k_a, k_b, k_npz = jax.random.split(key, 4)

  rows = jnp.arange(10) % num_classes
  z = jax.random.normal(k_grid, (100, latent))
  grid = generate(z, jnp.repeat(rows, 10))
  print(save_image_grid(np.asarray(grid), os.path.join(out, "grid.png"), 10))

  t = jnp.linspace(0.0, 1.0, 10)[None, :, None]
  za, zb = jax.random.normal(k_a, (10, 1, latent)), jax.random.normal(k_b, (10, 1, latent))
  zi = ((1 - t) * za + t * zb).reshape(100, latent)
  interp = generate(zi, jnp.repeat(rows, 10))
  print(save_image_grid(np.asarray(interp), os.path.join(out, "interpolation.png"), 10))

  if hasattr(task, "reconstruct"):
    test = data.load(task.config.data.name, task.config.data.get("eval_split", "test"),
                     task.config.data.get("data_dir") or None,
                     task.config.data.get("image_size", 0))
    images, labels = test["image"][:50], test["label"][:50]
    recon = np.asarray(jax.jit(task.reconstruct)(state.params, images, labels))
    pairs = np.stack([images.astype(np.float32) / 255.0, recon], 0)  # [2, 50, ...]
    pairs = pairs.reshape(2, 5, 10, *recon.shape[1:]).transpose(1, 0, 2, 3, 4, 5)
    print(save_image_grid(pairs.reshape(100, *recon.shape[1:]),
                          os.path.join(out, "reconstruction.png"), 10))

  if args.num_npz:
    n = args.num_npz
    labels = jnp.arange(n) % num_classes  # balanced classes
    images = []
    for start in range(0, n, 500):
      k = jax.random.fold_in(k_npz, start)
      m = min(500, n - start)
      zz = jax.random.normal(k, (500, latent))
      yy = jnp.pad(labels[start:start + m], (0, 500 - m))
      images.append(np.asarray(generate(zz, yy))[:m])
    images = np.round(np.concatenate(images) * 255).astype(np.uint8)
    path = os.path.join(out, "samples.npz")
    np.savez(path, image=images, label=np.asarray(labels, np.int32))
    print(path)
  return 0


if __name__ == "__main__":
  import _cli  # pylint: disable=g-import-not-at-top
  sys.exit(_cli.run(main))
