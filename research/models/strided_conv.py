"""Stride-2 convolutions and transposed convolutions as stride-1 convolutions.

XLA on the CPU runs a stride-2 convolution's kernel gradient (a convolution
with `rhs_dilation=2`) and a transposed convolution (`lhs_dilation=2`, forward
and kernel gradient) on a slow generic path: in the mnist VAE's train step the
kernel gradient of one 4x4 stride-2 conv took 430 ms of 633 ms. The same
functions written as stride-1 convolutions run on the fast path:

* `conv_s2d`: a stride-2 convolution with an even kernel `K = 2q` is a
  stride-1 `q x q` VALID convolution of the space-to-depth input (2x2 blocks
  of pixels stacked as channels), with the kernel rearranged to match.
* `conv_transpose_subpixel`: a stride-2 transposed convolution is a stride-1
  convolution producing the 4 output phases as channels, then depth-to-space
  (the sub-pixel convolution of Shi et al. 2016), with zeros in the kernel
  where a phase has no tap. (One conv per phase with only its taps does
  2.25x fewer multiply-adds for kernel 4 but ran slower: 4 small convs and
  the interleave cost more than the zeros, 212 vs 157 ms per VAE step.)

Both take the parameters of the lax/Flax op they replace (HWIO kernels, NHWC
inputs) and compute the same sums (in another order: values agree to float
rounding; tests/models/test_strided_conv.py checks outputs and gradients
against lax). Anything they do not cover falls back to lax.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax import lax

_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _is_nhwc(dimension_numbers) -> bool:
  if dimension_numbers is None:
    return False
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return tuple(dimension_numbers) == ((0, 3, 1, 2), (3, 2, 0, 1),
                                        (0, 3, 1, 2))
  return tuple(dimension_numbers) == _NHWC


def conv_s2d(lhs, rhs, window_strides, padding, lhs_dilation=None,
             rhs_dilation=None, dimension_numbers=None,
             feature_group_count=1, batch_group_count=1, precision=None,
             preferred_element_type=None):
  """`lax.conv_general_dilated` with stride-2 even-kernel 2-D convs computed
  on the space-to-depth input (drop-in for `nn.Conv(conv_general_dilated=)`).

  Other convolutions (stride 1, odd kernels, dilations, groups, layouts
  other than NHWC/HWIO) go to `lax.conv_general_dilated` unchanged.
  """
  kh, kw = rhs.shape[:2] if rhs.ndim == 4 else (1, 1)
  plain = (lhs.ndim != 4 or tuple(window_strides) != (2, 2) or kh % 2 or
           kw % 2 or any(d != 1 for d in (lhs_dilation or (1, 1))) or
           any(d != 1 for d in (rhs_dilation or (1, 1))) or
           feature_group_count != 1 or batch_group_count != 1 or
           not _is_nhwc(dimension_numbers))
  if plain:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
        dimension_numbers, feature_group_count, batch_group_count, precision,
        preferred_element_type)
  n, h, w, c = lhs.shape
  out_c = rhs.shape[-1]
  if isinstance(padding, str):
    padding = lax.padtype_to_pads((h, w), (kh, kw), (2, 2), padding)
  (pt, pb), (pl, pr) = padding
  oh = (h + pt + pb - kh) // 2 + 1
  ow = (w + pl + pr - kw) // 2 + 1
  qh, qw = kh // 2, kw // 2
  # The padded input the stride-2 window reads: exactly 2 * (o + q - 1)
  # rows (extra rows are never read; negative padding crops).
  need_h, need_w = 2 * (oh + qh - 1), 2 * (ow + qw - 1)
  x = lax.pad(lhs, jnp.zeros((), lhs.dtype),
              ((0, 0, 0), (pt, need_h - h - pt, 0),
               (pl, need_w - w - pl, 0), (0, 0, 0)))
  bh, bw = need_h // 2, need_w // 2
  x = x.reshape(n, bh, 2, bw, 2, c).transpose(0, 1, 3, 2, 4, 5)
  x = x.reshape(n, bh, bw, 4 * c)
  k = rhs.reshape(qh, 2, qw, 2, c, out_c).transpose(0, 2, 1, 3, 4, 5)
  k = k.reshape(qh, qw, 4 * c, out_c)
  return lax.conv_general_dilated(
      x, k, (1, 1), 'VALID', dimension_numbers=_NHWC, precision=precision,
      preferred_element_type=preferred_element_type)


def _transpose_padding(k: int, s: int, padding: str):
  """(pad_a, pad_b) of the dilated input, as lax.conv_transpose pads it."""
  if padding == 'SAME':
    pad_len = k + s - 2
    pad_a = k - 1 if s > k - 1 else int(np.ceil(pad_len / 2))
  else:  # VALID
    pad_len = k + s - 2 + max(k - s, 0)
    pad_a = k - 1
  return pad_a, pad_len - pad_a


def _phase_taps(k: int, pad_a: int):
  """For a stride-2 transposed conv along one axis (kernel k, left padding
  pad_a of the dilated input): (P, T, idx) with output phase r (0, 1) at
  tap t of the input padded by P reading kernel index idx[r][t] (k = none)."""
  taps = []
  for r in (0, 1):
    for kk in range(k):
      if (r + kk - pad_a) % 2 == 0:
        taps.append((r, kk, (r + kk - pad_a) // 2))
  lo = min(d for _, _, d in taps)
  hi = max(d for _, _, d in taps)
  p = -lo
  t = hi - lo + 1
  idx = np.full((2, t), k, np.int32)
  for r, kk, d in taps:
    idx[r, d + p] = kk
  return p, hi, idx


def conv_transpose_subpixel(x, kernel, strides: Sequence[int],
                            padding: Any = 'SAME', precision=None):
  """`lax.conv_transpose(x, kernel, strides, padding, dimension_numbers=
  NHWC/HWIO)` (Flax's ConvTranspose, transpose_kernel=False) for stride 2
  and padding 'SAME' or 'VALID', as one stride-1 conv + depth-to-space;
  anything else goes to lax.conv_transpose."""
  if (x.ndim != 4 or tuple(strides) != (2, 2) or
      padding not in ('SAME', 'VALID')):
    return lax.conv_transpose(x, kernel, strides, padding,
                              dimension_numbers=_NHWC, precision=precision)
  n, h, w, _ = x.shape
  kh, kw, c, out_c = kernel.shape
  pads = [_transpose_padding(k, 2, padding) for k in (kh, kw)]
  (py, hy, iy), (px, hx, ix) = (_phase_taps(k, p[0]) for k, p in
                                zip((kh, kw), pads))
  # Output length along an axis: 2 * n - 1 + pad_a + pad_b - k + 1.
  out_h = 2 * h - 1 + sum(pads[0]) - kh + 1
  out_w = 2 * w - 1 + sum(pads[1]) - kw + 1
  mh, mw = -(-out_h // 2), -(-out_w // 2)  # output rows per phase
  zero = jnp.zeros((1,) + kernel.shape[1:], kernel.dtype)
  kern = jnp.concatenate([kernel, zero], 0)
  kern = jnp.concatenate([kern, jnp.zeros_like(kern[:, :1])], 1)
  # [2 (ry), Ty, 2 (rx), Tx, C, O] -> [Ty, Tx, C, ry, rx, O]
  k = kern[iy[:, :, None, None], ix[None, None, :, :]]
  k = k.transpose(1, 3, 4, 0, 2, 5).reshape(iy.shape[1], ix.shape[1], c,
                                           4 * out_c)
  xp = lax.pad(x, jnp.zeros((), x.dtype),
               ((0, 0, 0), (py, mh - h + hy, 0), (px, mw - w + hx, 0),
                (0, 0, 0)))
  y = lax.conv_general_dilated(xp, k, (1, 1), 'VALID',
                               dimension_numbers=_NHWC, precision=precision)
  y = y.reshape(n, mh, mw, 2, 2, out_c).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(n, 2 * mh, 2 * mw, out_c)[:, :out_h, :out_w]


class SubpixelConvTranspose(nn.Module):
  """`nn.ConvTranspose` (same parameters: `kernel` [kh, kw, in, out] and
  `bias` [out], same initializers) computed by `conv_transpose_subpixel`.
  Name it as the ConvTranspose it replaces to keep checkpoints compatible.
  `dtype`: the computation dtype (None: the input's), as nn.ConvTranspose's;
  parameters are float32 either way."""
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (2, 2)
  padding: str = 'SAME'
  use_bias: bool = True
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()
  precision: Optional[Any] = None
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x):
    if self.dtype is not None:
      x = x.astype(self.dtype)
    kernel = self.param('kernel', self.kernel_init,
                        tuple(self.kernel_size) + (x.shape[-1], self.features))
    y = conv_transpose_subpixel(x, kernel.astype(x.dtype), self.strides,
                                self.padding, self.precision)
    if self.use_bias:
      bias = self.param('bias', self.bias_init, (self.features,))
      y = y + bias.astype(y.dtype)
    return y
