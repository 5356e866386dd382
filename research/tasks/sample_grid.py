"""Image grids as PNG: the one place sample pictures are laid out and saved."""
from __future__ import annotations

import os

import numpy as np


def image_grid(images: np.ndarray, ncol: int, pad: int = 2) -> np.ndarray:
  """Tiles images into a grid, row-major.

  Args:
    images: float [N, H, W, C] in [0, 1] (C = 1 or 3).
    ncol: images per row; N need not be a multiple (blank cells are black).
    pad: pixels of black between cells.

  Returns:
    uint8 [rows * (H + pad) + pad, ncol * (W + pad) + pad, C].
  """
  images = np.asarray(images, np.float32)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"image_grid: images must be [N, H, W, 1 or 3], got "
                     f"shape {images.shape}")
  n, h, w, c = images.shape
  rows = -(-n // ncol)
  grid = np.zeros((rows * (h + pad) + pad, ncol * (w + pad) + pad, c), np.uint8)
  pixels = np.round(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)
  for i in range(n):
    r, col = divmod(i, ncol)
    y, x = pad + r * (h + pad), pad + col * (w + pad)
    grid[y:y + h, x:x + w] = pixels[i]
  return grid


def save_image_grid(images: np.ndarray, path: str, ncol: int,
                    scale: int = 2) -> str:
  """Writes `image_grid(images, ncol)` to `path` as PNG (upscaled by `scale`)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  grid = image_grid(images, ncol)
  if scale > 1:
    grid = grid.repeat(scale, 0).repeat(scale, 1)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
  return path
