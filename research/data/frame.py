"""Digit framing: put digit-like images of two domains in the same frame.

An MNIST digit sits in a 20x20 box centred in a 28x28 frame (its documented
layout); a UCI digit fills its 8x8 frame and has 17 grey levels (0..16). A
classifier trained on one layout and tested on the other loses most of its
accuracy to the layout alone, before any domain-adaptation method is tried.
Framing both domains the same way (crop the digit, average it down to the same
small grid, optionally quantise it to the same grey levels) is the cheapest
alignment there is, and it lives here, in the input pipeline.

Modes (`data.frame`):
  ''          no framing.
  'bbox'      the tight bounding box of the pixels above `threshold` (any
              channel), padded with zeros (the background) to a square so the
              aspect ratio is kept, then area-averaged to [size, size]. An
              image with no pixel above `threshold` keeps its whole frame.
  'center20'  the centred 20x20 box (MNIST's documented digit box: [4:24] of a
              28x28 image), area-averaged to [size, size].

Framing runs on the host, once, when a split is loaded (research.data.load_split
for a `data` block, research.tasks.adapt for the adaptation `target` block), on
the images as stored, before the resize to `image_size`:
  data.frame            '' | 'bbox' | 'center20'
  data.frame_size       side of the framed image (8: UCI digits' grid)
  data.frame_threshold  'bbox' ink threshold, uint8 units
  data.frame_levels     0 (off) or the number of grey levels (17: UCI's 0..16)

All functions take and return host numpy arrays; `frame_images` is uint8 in,
uint8 out.
"""
from __future__ import annotations

import numpy as np

FRAMES = ("", "bbox", "center20")
CENTER_BOX = 20


def area_weights(n_in: int, n_out: int) -> np.ndarray:
  """float64 [n_out, n_in]: output pixel i averages input pixels by their overlap with
  [i * n_in / n_out, (i + 1) * n_in / n_out) (area / box resampling; each row sums to 1)."""
  if n_in < 1 or n_out < 1:
    raise ValueError(f"frame.area_weights: sizes must be >= 1, got {n_in} -> {n_out}")
  scale = n_in / n_out
  lo = np.arange(n_out)[:, None] * scale
  j = np.arange(n_in)[None, :]
  overlap = np.clip(np.minimum(j + 1, lo + scale) - np.maximum(j, lo), 0.0, None)
  return overlap / scale


def area_resize(image: np.ndarray, size: int) -> np.ndarray:
  """Area-averaged resize of one image.

  Args:
    image: float or uint8 [H, W, C], any range.
    size: the output side.
  Returns:
    float64 [size, size, C]: each output pixel the mean of the input over its
    footprint (fractional pixels weighted by overlap). For H, W multiples of
    `size` this is the plain block mean.
  """
  wy = area_weights(image.shape[0], size)
  wx = area_weights(image.shape[1], size)
  return np.einsum("ih,hwc,jw->ijc", wy, image.astype(np.float64), wx)


def bounding_box(image: np.ndarray, threshold: float = 0) -> tuple[int, int, int, int] | None:
  """(top, bottom, left, right), half-open, of the pixels of image [H, W, C] whose
  largest channel is > threshold; None when there is none."""
  ink = np.max(image, axis=-1) > threshold
  rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
  if rows.size == 0:
    return None
  return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def pad_to_square(image: np.ndarray) -> np.ndarray:
  """[H, W, C] -> [S, S, C], S = max(H, W): zeros (background) added on both sides of
  the short axis, the extra pixel of an odd difference after the image."""
  h, w = image.shape[:2]
  s = max(h, w)
  top, left = (s - h) // 2, (s - w) // 2
  return np.pad(image, ((top, s - h - top), (left, s - w - left), (0, 0)))


def bbox_crop(image: np.ndarray, threshold: float = 0) -> np.ndarray:
  """The square crop 'bbox' framing resizes: tight box of ink > threshold, padded to a
  square; the whole image (padded to a square) when no pixel is above threshold."""
  box = bounding_box(image, threshold)
  if box is not None:
    top, bottom, left, right = box
    image = image[top:bottom, left:right]
  return pad_to_square(image)


def center_crop(image: np.ndarray, box: int = CENTER_BOX) -> np.ndarray:
  """The centred [box, box] region of image [H, W, C] ([4:24] for 28 and 20)."""
  h, w = image.shape[:2]
  if h < box or w < box:
    raise ValueError(f"data.frame='center{box}' needs images of at least {box}x{box}, "
                     f"got {h}x{w} (use data.frame='bbox' for small images)")
  top, left = (h - box) // 2, (w - box) // 2
  return image[top:top + box, left:left + box]


def quantize(images: np.ndarray, levels: int) -> np.ndarray:
  """Rounds values in [0, 255] to `levels` evenly spaced grey levels.

  Args:
    images: float or uint8, values in [0, 255].
    levels: >= 2; 17 gives UCI digits' 0..16 (stored as round(k * 255 / 16)).
  Returns:
    uint8, same shape: round(round(x * (levels - 1) / 255) * 255 / (levels - 1)).
  """
  if levels < 2:
    raise ValueError(f"data.frame_levels must be 0 (off) or >= 2, got {levels}")
  k = np.round(np.asarray(images, np.float64) * ((levels - 1) / 255.0))
  return np.round(k * (255.0 / (levels - 1))).astype(np.uint8)


def frame_images(images: np.ndarray, mode: str, size: int = 8, threshold: float = 0,
                 levels: int = 0) -> np.ndarray:
  """Frames every image: crop ('bbox' or 'center20'), area-average to `size`, quantise.

  Args:
    images: uint8 [N, H, W, C] in [0, 255], background 0.
    mode: one of FRAMES ('' returns `images` unchanged).
    size: output side, >= 1 (8 = UCI digits' grid).
    threshold: 'bbox' ink threshold, in [0, 255): pixels with a channel > it are ink.
    levels: 0 = round to the nearest uint8; >= 2 = quantise to that many grey levels.
  Returns:
    uint8 [N, size, size, C] in [0, 255].
  """
  if mode not in FRAMES:
    raise ValueError(f"data.frame must be one of {FRAMES}, got {mode!r}")
  if not mode:
    return images
  if size < 1:
    raise ValueError(f"data.frame_size must be >= 1 when data.frame={mode!r}, got {size}")
  if not 0 <= threshold < 255:
    raise ValueError(f"data.frame_threshold must be in [0, 255), got {threshold}")
  if levels and levels < 2:
    raise ValueError(f"data.frame_levels must be 0 (off) or >= 2, got {levels}")
  if images.ndim != 4:
    raise ValueError(f"frame_images: images must be [N, H, W, C], got shape {images.shape}")
  crop = (lambda im: bbox_crop(im, threshold)) if mode == "bbox" else center_crop
  out = np.stack([area_resize(crop(im), size) for im in images]) if len(images) else (
      np.zeros((0, size, size, images.shape[-1])))
  return quantize(out, levels) if levels else np.round(out).astype(np.uint8)


def frame_config(cfg) -> dict:
  """frame_images' keyword arguments from a `data` (or adaptation `target`) block."""
  return dict(mode=cfg.get("frame", ""), size=cfg.get("frame_size", 8),
              threshold=cfg.get("frame_threshold", 0), levels=cfg.get("frame_levels", 0))


def frame_and_resize(images: np.ndarray, cfg) -> np.ndarray:
  """The images of a split as a data block asks: framed (cfg.frame...), then resized.

  Args:
    images: uint8 [N, H, W, C] in [0, 255], as stored.
    cfg: a `data` / `target` block (frame fields optional; image_size 0 = keep).
  Returns:
    uint8 [N, S, S, C]: S = cfg.image_size, else frame_size when framed, else H.
  """
  from research.data import sources  # pylint: disable=g-import-not-at-top
  images = frame_images(images, **frame_config(cfg))
  size = cfg.get("image_size", 0)
  if size and images.shape[1:3] != (size, size):
    images = sources.resize_uint8(images, size)
  return images
