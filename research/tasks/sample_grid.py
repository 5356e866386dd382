"""Image grids as PNG: the one place sample pictures are laid out and saved."""
from __future__ import annotations

import os
from typing import Sequence

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


def label_rows(grid: np.ndarray, labels: Sequence[str], row_height: int,
               top: int = 0) -> np.ndarray:
  """A grid with a black margin on its left holding one text label per row.

  Args:
    grid: uint8 [H, W, C] (C = 1 or 3), e.g. from `image_grid` (upscaled).
    labels: one string per row of cells, drawn in white, vertically centred.
    row_height: pixels from one row of cells to the next.
    top: pixels above the first row.

  Returns:
    uint8 [H, M + W, C], M = the widest label plus padding.
  """
  from PIL import Image, ImageDraw, ImageFont  # pylint: disable=g-import-not-at-top
  font = ImageFont.load_default()
  measure = ImageDraw.Draw(Image.new("L", (1, 1)))
  boxes = [measure.textbbox((0, 0), str(t), font=font) for t in labels]
  margin = max((b[2] - b[0] for b in boxes), default=0) + 8
  canvas = Image.new("L", (margin, grid.shape[0]), 0)
  draw = ImageDraw.Draw(canvas)
  for r, (text, box) in enumerate(zip(labels, boxes)):
    y = top + r * row_height + (row_height - (box[3] - box[1])) // 2 - box[1]
    draw.text((4, y), str(text), fill=255, font=font)
  text = np.asarray(canvas, np.uint8)[..., None].repeat(grid.shape[-1], -1)
  return np.concatenate([text, grid], axis=1)


def save_image_grid(images: np.ndarray, path: str, ncol: int, scale: int = 2,
                    row_labels: Sequence[str] | None = None) -> str:
  """Writes `image_grid(images, ncol)` to `path` as PNG (upscaled by `scale`).

  `row_labels` (one string per row, e.g. the class names of a conditional
  model's rows) are written in a margin on the left.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  grid = image_grid(images, ncol)
  if scale > 1:
    grid = grid.repeat(scale, 0).repeat(scale, 1)
  if row_labels is not None:
    rows = -(-len(images) // ncol)
    if len(row_labels) != rows:
      raise ValueError(f"save_image_grid: {len(row_labels)} row labels for {rows} rows")
    h = np.asarray(images).shape[1]
    grid = label_rows(grid, row_labels, (h + 2) * scale, top=2 * scale)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
  return path
