"""Generation as a task capability: what a generative task provides, and the one
place class-balanced samples are drawn.

A generative task (GAN, VAE) subclasses `Generative`: it has `latent_dim` and
`num_classes` and implements `images_from_latents(state, z, labels)`; it
then has `generate(state, key, labels)`. A task that can also encode images
sets `can_reconstruct` and implements `reconstruct(state, images, labels)`.
`scripts/sample.py`, `scripts/complete.py` and `scripts/generative_eval.py`
use only this interface (`require(task)` refuses anything else by name).
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from research import data
from research.tasks.sample_grid import save_image_grid


class Generative:
  """Mixin of a task that generates images float32 [N, H, W, C] in [0, 1]."""

  latent_dim: int
  num_classes: int
  conditional: bool = False
  can_reconstruct: bool = False

  def row_labels(self, rows) -> list[str] | None:
    """Names of the classes int [R] that the rows of a sample grid show (class
    folder names for a folder dataset, research.data.class_names), or None for
    an unconditional model, whose rows are not classes."""
    if not self.conditional:
      return None
    names = data.class_names(self.config.data, self.num_classes)
    return [names[int(r)] for r in rows]

  def images_from_latents(self, state, z, labels):
    """Images for latents z [N, latent_dim] and class labels int [N] (eval mode)."""
    raise NotImplementedError

  def generate(self, state, key, labels):
    """Images for labels int [N], latents z ~ N(0, I) drawn from `key`."""
    z = jax.random.normal(key, (labels.shape[0], self.latent_dim))
    return self.images_from_latents(state, z, labels)

  def reconstruct(self, state, images, labels):
    """uint8 images [N, H, W, C] -> reconstructions in [0, 1] (if can_reconstruct)."""
    raise NotImplementedError(f"{type(self).__name__} cannot reconstruct images")


def require(task, workdir: str = "") -> Generative:
  """`task` if it is generative; else a ValueError naming the run's task."""
  if not isinstance(task, Generative):
    where = f"{workdir} holds" if workdir else "this is"
    raise ValueError(f"{where} a {task.config.task!r} run; expected a generative task "
                     f"('gan' or 'vae')")
  return task


def to_uint8(images) -> np.ndarray:
  """float images in [0, 1] -> uint8, clipped then rounded."""
  return np.round(np.clip(np.asarray(images, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def balanced_labels(num_classes: int, num_per_class: int) -> np.ndarray:
  """int32 [num_classes * num_per_class]: class 0 first, then class 1, ..."""
  return np.repeat(np.arange(num_classes), num_per_class).astype(np.int32)


def generate_balanced(task: Generative, state, num_per_class: int, seed: int,
                      chunk: int = 500) -> tuple[np.ndarray, np.ndarray]:
  """Class-balanced samples: (uint8 [C * num_per_class, H, W, ch], int32 labels).

  Drawn in fixed-size chunks (one compilation) with latents from
  fold_in(PRNGKey(seed), chunk start), so the samples depend only on (state,
  num_per_class, seed, chunk).
  """
  fn = jax.jit(lambda z, y: task.images_from_latents(state, z, y))
  labels = balanced_labels(task.num_classes, num_per_class)
  key = jax.random.PRNGKey(seed)
  images = []
  for start in range(0, len(labels), chunk):
    m = min(chunk, len(labels) - start)
    z = jax.random.normal(jax.random.fold_in(key, start), (chunk, task.latent_dim))
    y = jnp.asarray(np.pad(labels[start:start + m], (0, chunk - m)))
    images.append(np.asarray(fn(z, y))[:m])
  return to_uint8(np.concatenate(images)), labels


def save_pictures(task: Generative, state, out: str, seed: int = 0) -> list[str]:
  """Writes the pictures a person looks at first; returns their paths.

  grid.png: 10 x 10 samples (a conditional model: class r % num_classes in
  row r, its name on the left); interpolation.png: 10 rows, each linear in z between two draws
  over 10 steps; reconstruction.png (if the task can reconstruct): the first
  50 images of the eval split and their reconstructions, alternating rows.
  """
  generate = jax.jit(lambda z, y: task.images_from_latents(state, z, y))
  k_grid, k_a, k_b, _ = jax.random.split(jax.random.PRNGKey(seed), 4)
  latent = task.latent_dim
  rows = jnp.repeat(jnp.arange(10) % task.num_classes, 10)
  names = task.row_labels(np.arange(10) % task.num_classes)
  paths = [save_image_grid(np.asarray(generate(jax.random.normal(k_grid, (100, latent)), rows)),
                           os.path.join(out, "grid.png"), 10, row_labels=names)]
  t = jnp.linspace(0.0, 1.0, 10)[None, :, None]
  za, zb = jax.random.normal(k_a, (10, 1, latent)), jax.random.normal(k_b, (10, 1, latent))
  interp = generate(((1 - t) * za + t * zb).reshape(100, latent), rows)
  paths.append(save_image_grid(np.asarray(interp), os.path.join(out, "interpolation.png"), 10,
                               row_labels=names))
  if task.can_reconstruct:
    cfg = task.config.data
    test = data.load(cfg.name, cfg.get("eval_split", "test"), cfg.get("data_dir") or None,
                     cfg.get("image_size", 0))
    images, labels = test["image"][:50], test["label"][:50]
    recon = np.asarray(jax.jit(lambda x, y: task.reconstruct(state, x, y))(images, labels))
    pairs = np.stack([images.astype(np.float32) / 255.0, recon], 0)  # [2, 50, ...]
    pairs = pairs.reshape(2, 5, 10, *recon.shape[1:]).transpose(1, 0, 2, 3, 4, 5)
    paths.append(save_image_grid(pairs.reshape(100, *recon.shape[1:]),
                                 os.path.join(out, "reconstruction.png"), 10))
  return paths
