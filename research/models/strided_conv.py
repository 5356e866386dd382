"""Stride-2 convolutions and transposed convolutions in the forms XLA's CPU
backend runs fastest, with the parameters of the lax/Flax ops they replace.

Measured on XLA's CPU backend with YNNPACK (jax 0.10.2; fwd + bwd CPU ms
in the mnist VAE's train step, batch 128, one core; tests/models/test_strided_conv.py
checks every formulation against lax):

* `conv_s2d`, a stride-2 convolution with an even kernel `K = 2q`:
  - few input channels (<= `PATCHES_MAX_CHANNELS`): space-to-depth (2x2
    blocks of pixels stacked as channels), the `q x q` patches stacked as
    channels, and one matrix product (2.5 ms vs 6.0 ms for the stride-1
    `q x q` conv on the space-to-depth input and 10.7 ms for lax's
    stride-2 conv, 28x28x1 -> 14x14x32);
  - more channels: lax's own stride-2 convolution, which YNNPACK now runs
    on its fast path, gradients included (27 ms vs 38 ms for the
    space-to-depth stride-1 conv, 14x14x32 -> 7x7x64).
* `conv_transpose_subpixel`, a stride-2 transposed convolution:
  - few output channels (<= `LAX_TRANSPOSE_MAX_FEATURES`):
    `lax.conv_transpose` (6.8 ms vs 15.6 ms for the sub-pixel conv,
    14x14x32 -> 28x28x1);
  - more: each of the 4 output phases is a stride-1 VALID convolution of
    the padded input with only that phase's taps, then the phases are
    interleaved (depth-to-space). 47 ms vs 63 ms for the single sub-pixel
    convolution with zero taps (Shi et al. 2016; 2.25x the multiply-adds
    for kernel 4) and 210 ms for lax, 7x7x64 -> 14x14x32.

All compute the same sums as the lax op in another order: values agree to
float rounding (~1e-6 relative). Anything not covered falls back to lax.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_NHWC = ('NHWC', 'HWIO', 'NHWC')
# Stride-2 convs with at most this many input channels run as a patches matmul.
PATCHES_MAX_CHANNELS = 4
# Stride-2 transposed convs with at most this many output channels run as lax's.
LAX_TRANSPOSE_MAX_FEATURES = 4


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
  """`lax.conv_general_dilated` (drop-in for `nn.Conv(conv_general_dilated=)`)
  with stride-2 even-kernel NHWC/HWIO convs of at most `PATCHES_MAX_CHANNELS`
  input channels computed as one matrix product: lhs [N, H, W, C] ->
  space-to-depth [N, H', W', 4C] -> the q x q patches [N * OH * OW, q * q * 4C]
  @ the rearranged kernel [q * q * 4C, O] -> [N, OH, OW, O].

  Every other convolution (more channels, stride 1, odd kernels, dilations,
  groups, other layouts) goes to `lax.conv_general_dilated` unchanged.
  """
  kh, kw = rhs.shape[:2] if rhs.ndim == 4 else (1, 1)
  plain = (lhs.ndim != 4 or tuple(window_strides) != (2, 2) or kh % 2 or
           kw % 2 or any(d != 1 for d in (lhs_dilation or (1, 1))) or
           any(d != 1 for d in (rhs_dilation or (1, 1))) or
           feature_group_count != 1 or batch_group_count != 1 or
           not _is_nhwc(dimension_numbers) or
           lhs.shape[-1] > PATCHES_MAX_CHANNELS)
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
  # Output (i, j) reads blocks (i + a, j + b), a < qh, b < qw.
  patches = jnp.concatenate([x[:, a:a + oh, b:b + ow] for a in range(qh)
                             for b in range(qw)], axis=-1)
  k = rhs.reshape(qh, 2, qw, 2, c, out_c).transpose(0, 2, 1, 3, 4, 5)
  k = k.reshape(qh * qw * 4 * c, out_c)
  y = lax.dot_general(patches.reshape(n * oh * ow, qh * qw * 4 * c), k,
                      (((1,), (0,)), ((), ())), precision=precision,
                      preferred_element_type=preferred_element_type)
  return y.reshape(n, oh, ow, out_c)


def _valid_conv(x, kernel, precision=None):
  """Stride-1 VALID NHWC/HWIO conv: x [N, H, W, C], kernel [kh, kw, C, O]."""
  return lax.conv_general_dilated(x, kernel, (1, 1), 'VALID',
                                  dimension_numbers=_NHWC, precision=precision)


@jax.custom_vjp
def _conv_valid_fast_grad(x, kernel):
  """`_valid_conv` whose input gradient is computed as a VALID conv of the
  explicitly padded output gradient with the flipped kernel (the same sums as
  XLA's transpose rule, a padded conv with an output larger than its input,
  which XLA's CPU backend runs off YNNPACK's fast path)."""
  return _valid_conv(x, kernel)


def _conv_valid_fwd(x, kernel):
  return _valid_conv(x, kernel), (x, kernel)


def _conv_valid_bwd(res, dy):
  x, kernel = res
  kh, kw = kernel.shape[:2]
  # The barrier keeps XLA from folding the pad back into the conv's window.
  dy_pad = lax.optimization_barrier(
      jnp.pad(dy, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0))))
  dx = _valid_conv(dy_pad, jnp.flip(kernel, (0, 1)).swapaxes(2, 3))
  _, kernel_vjp = jax.vjp(lambda k: _valid_conv(x, k), kernel)
  return dx, kernel_vjp(dy)[0]


_conv_valid_fast_grad.defvjp(_conv_valid_fwd, _conv_valid_bwd)


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
  NHWC/HWIO)` (Flax's ConvTranspose, transpose_kernel=False).

  For stride 2 and padding 'SAME' or 'VALID' with more than
  `LAX_TRANSPOSE_MAX_FEATURES` output channels: x [N, H, W, C] -> for each
  output phase (ry, rx) in {0, 1}^2 a stride-1 VALID conv of the padded
  input with that phase's taps of `kernel` [kh, kw, C, O] -> [N, MH, MW, O]
  -> phases interleaved (depth-to-space) -> [N, OH, OW, O]. Anything else
  goes to lax.conv_transpose.
  """
  if (x.ndim != 4 or tuple(strides) != (2, 2) or
      padding not in ('SAME', 'VALID') or
      kernel.shape[-1] <= LAX_TRANSPOSE_MAX_FEATURES):
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
  xp = lax.pad(x, jnp.zeros((), x.dtype),
               ((0, 0, 0), (py, mh - h + hy, 0), (px, mw - w + hx, 0),
                (0, 0, 0)))

  def taps(idx, k, r):
    """Phase r's taps: (first offset into the padded input, their count,
    the slice of kernel indices: every second one, increasing)."""
    t = np.flatnonzero(idx[r] != k)
    if not len(t):
      return 0, 0, slice(0, 0)
    return int(t[0]), len(t), slice(int(idx[r, t[0]]), int(idx[r, t[-1]]) + 1, 2)

  phases = []
  for ry in (0, 1):
    oy, ty, ky = taps(iy, kh, ry)
    for rx in (0, 1):
      ox, tx, kx = taps(ix, kw, rx)
      if not ty or not tx:  # a kernel smaller than the stride: no taps
        phases.append(jnp.zeros((n, mh, mw, out_c), x.dtype))
        continue
      window = xp[:, oy:oy + mh + ty - 1, ox:ox + mw + tx - 1]
      if precision is None:
        phases.append(_conv_valid_fast_grad(window, kernel[ky, kx]))
      else:
        phases.append(_valid_conv(window, kernel[ky, kx], precision))
  # [ry, rx, N, MH, MW, O] -> [N, MH, ry, MW, rx, O]
  y = jnp.stack(phases).reshape(2, 2, n, mh, mw, out_c)
  y = y.transpose(2, 3, 0, 4, 1, 5).reshape(n, 2 * mh, 2 * mw, out_c)
  return y[:, :out_h, :out_w]


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
