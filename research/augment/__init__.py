"""Pure-functional, jitted, batched image augmentation (imports jax only).

Entry points for tasks:

  `build(spec) -> fn(key, images) -> images`
      spec: a string such as
      "flip_lr|affine(rotate=15)|color_jitter(0.4, 0.4, 0.4, 0.1)", a list
      of such strings / (name, kwargs) pairs / callables, or None / ''
      (identity). images: float32 [N, H, W, C] in [0, 1] (uint8 [0, 255]
      also accepted and converted inside) -> float32 [N, H', W', C] in
      [0, 1]. One key per call, per-image parameters drawn inside; static
      shapes, so it compiles once under jit / pmap. Valid op names: `OPS`.

  `mix(key, images, labels_onehot, mode, alpha) -> (images, labels)`
      mode 'mixup' | 'cutmix' | 'none'; images float32 [N, H, W, C],
      labels float [N, K]; labels are mixed with the same weights as images.

  `diff_augment(key, images, policy='color,translation,cutout')`
      DiffAugment for GANs: batched and differentiable w.r.t. the images.

Per-image ops follow dm_pix's form: deterministic `op(image, ...)` and
random `op(key, image, ...)` on ONE float32 image [H, W, C] in [0, 1];
batch them with `jax.vmap` and one key per image. Policies (`compose`,
`random_apply`, `one_of`, `rand_augment`, `trivial_augment_wide`) combine
random ops `op(key, image)` built by the `*_op` factories; consecutive
geometric ops fuse into one affine warp.
"""
from research.augment.color import adjust_brightness
from research.augment.color import adjust_color_batch
from research.augment.color import adjust_contrast
from research.augment.color import adjust_gamma
from research.augment.color import adjust_hue
from research.augment.color import adjust_saturation
from research.augment.color import adjust_sharpness
from research.augment.color import autocontrast
from research.augment.color import equalize
from research.augment.color import gaussian_blur
from research.augment.color import hsv_to_rgb
from research.augment.color import invert
from research.augment.color import posterize
from research.augment.color import rgb_to_hsv
from research.augment.color import solarize
from research.augment.color import to_grayscale
from research.augment.diff import diff_augment
from research.augment.erasing import cutmix
from research.augment.erasing import erase
from research.augment.erasing import mix
from research.augment.erasing import mixup
from research.augment.erasing import random_cutout
from research.augment.erasing import random_erasing
from research.augment.geometric import affine_matrix
from research.augment.geometric import flip_left_right
from research.augment.geometric import flip_up_down
from research.augment.geometric import random_affine
from research.augment.geometric import random_flip_left_right
from research.augment.geometric import random_flip_up_down
from research.augment.geometric import random_pad_crop
from research.augment.geometric import random_resized_crop
from research.augment.geometric import random_resized_crop_params
from research.augment.geometric import random_rotate
from research.augment.geometric import resize
from research.augment.geometric import rotate
from research.augment.geometric import warp_affine
from research.augment.geometric import warp_affine_batch
from research.augment.policies import batch_slice_ops
from research.augment.policies import batch_slices
from research.augment.policies import compose
from research.augment.policies import one_of
from research.augment.policies import rand_augment
from research.augment.policies import random_apply
from research.augment.policies import trivial_augment_wide
from research.augment.spec import build
from research.augment.spec import make_op
from research.augment.spec import OPS
from research.augment.spec import parse
from research.augment.spec import to_float
