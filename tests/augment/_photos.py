"""Real photos for the augmentation tests (downsampled to keep tests fast)."""
import numpy as np
import skimage.data


def astronaut(step=4):
  """uint8 [512 / step, 512 / step, 3]."""
  return np.ascontiguousarray(skimage.data.astronaut()[::step, ::step])


def chelsea(step=4):
  """uint8 [300 / step, 451 / step, 3] (a non-square photo)."""
  return np.ascontiguousarray(skimage.data.chelsea()[::step, ::step])


def to_float(u8):
  return (u8.astype(np.float32) / 255.0)
