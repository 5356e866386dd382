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
* `conv_transpose_subpixel`, a stride-2 transposed convolution ('SAME' or
  'VALID'): lax's forward pass and input gradient, with the kernel gradient
  computed as that of a stride-2 convolution of the padded output gradient
  (`_conv_transpose_s2`). XLA's own rule for it convolves the 2x dilated
  input, which YNNPACK does not take: the whole layer fwd + bwd took 210 ms
  for lax, 7x7x64 -> 14x14x32. Measured in isolation, one core, same run
  (fwd + bwd of a sum of sines, so elementwise work included): 50.7 ms vs
  59.6 ms for the previous form, four stride-1 convolutions (one per output
  phase, only that phase's taps) interleaved by depth-to-space, 7x7x64 ->
  14x14x32; 8.2 ms vs 10.1 ms for lax's op, 14x14x32 -> 28x28x1. In the VAE
  benchmark (benchmarks/bench_vae_torch.py) it took torch / ours from 0.86
  to 0.95.

All compute the same sums as the lax op in another order: values agree to
float rounding (~1e-6 relative). Anything not covered falls back to lax.
"""
from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_NHWC = ('NHWC', 'HWIO', 'NHWC')
# Stride-2 convs with at most this many input channels run as a patches matmul.
PATCHES_MAX_CHANNELS = 4


def is_nhwc(dimension_numbers) -> bool:
  """Whether conv `dimension_numbers` are NHWC / HWIO / NHWC (Flax's layout)."""
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
           not is_nhwc(dimension_numbers) or
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


def _transpose_padding(k: int, s: int, padding: str):
  """(pad_a, pad_b) of the dilated input, as lax.conv_transpose pads it."""
  if padding == 'SAME':
    pad_len = k + s - 2
    pad_a = k - 1 if s > k - 1 else int(np.ceil(pad_len / 2))
  else:  # VALID
    pad_len = k + s - 2 + max(k - s, 0)
    pad_a = k - 1
  return pad_a, pad_len - pad_a


def _conv_transpose(x, kernel, padding, precision=None):
  return lax.conv_transpose(x, kernel, (2, 2), padding, dimension_numbers=_NHWC,
                            precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_transpose_s2(x, kernel, padding, precision):
  """`lax.conv_transpose` (stride 2, NHWC/HWIO) whose kernel gradient is computed
  as the kernel gradient of a stride-2 convolution of the padded output gradient.

  Forward and input gradient are XLA's own (a convolution of the 2x dilated
  input; a stride-2 convolution of the output gradient). XLA's rule for the
  kernel gradient, a convolution over the dilated input, runs off YNNPACK's
  fast path on the CPU; the same sums as a strided convolution's kernel
  gradient run on it.
  """
  return _conv_transpose(x, kernel, padding, precision)


def _conv_transpose_s2_fwd(x, kernel, padding, precision):
  return _conv_transpose(x, kernel, padding, precision), (x, kernel)


def _conv_transpose_s2_bwd(padding, precision, res, dy):
  """dK[ky, kx, c, o] = sum_{n,i,j} x[n, i, j, c] dy[n, 2i + pa - ky, 2j + pa - kx, o]
  (pa: the dilated input's leading padding). With dy padded by k - 1 - pa in
  front, that is dW[k - 1 - ky, k - 1 - kx, o, c] for the kernel gradient dW
  of the VALID stride-2 convolution `conv(dy_padded, W) -> [N, H, W, C]`
  at cotangent x."""
  x, kernel = res
  _, h, w, c = x.shape
  kh, kw, _, o = kernel.shape
  pads = []
  for k, n, out in ((kh, h, dy.shape[1]), (kw, w, dy.shape[2])):
    front = k - 1 - _transpose_padding(k, 2, padding)[0]
    pads.append((front, 2 * (n - 1) + k - front - out, 0))
  dy_padded = lax.pad(dy, jnp.zeros((), dy.dtype), ((0, 0, 0), *pads, (0, 0, 0)))
  strided = lambda w_: lax.conv_general_dilated(
      dy_padded, w_, (2, 2), 'VALID', dimension_numbers=_NHWC, precision=precision)
  # Both maps are linear: transposed without evaluating them.
  strided_t = jax.linear_transpose(strided, jax.ShapeDtypeStruct((kh, kw, o, c), dy.dtype))
  dkernel = jnp.flip(strided_t(x.astype(dy.dtype))[0], (0, 1)).swapaxes(2, 3)
  forward_t = jax.linear_transpose(lambda x_: _conv_transpose(x_, kernel, padding, precision),
                                   jax.ShapeDtypeStruct(x.shape, x.dtype))
  return forward_t(dy.astype(x.dtype))[0], dkernel.astype(kernel.dtype)


_conv_transpose_s2.defvjp(_conv_transpose_s2_fwd, _conv_transpose_s2_bwd)


def conv_transpose_subpixel(x, kernel, strides: Sequence[int],
                            padding: Any = 'SAME', precision=None):
  """`lax.conv_transpose(x, kernel, strides, padding, dimension_numbers=
  NHWC/HWIO)` (Flax's ConvTranspose, transpose_kernel=False).

  For stride 2 and padding 'SAME' or 'VALID' the kernel gradient is computed
  as a strided convolution's (`_conv_transpose_s2`); the forward pass and the
  input gradient are lax's. Anything else is `lax.conv_transpose` itself.
  """
  if x.ndim != 4 or tuple(strides) != (2, 2) or padding not in ('SAME', 'VALID'):
    return lax.conv_transpose(x, kernel, strides, padding,
                              dimension_numbers=_NHWC, precision=precision)
  return _conv_transpose_s2(x, kernel, padding, precision)


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
