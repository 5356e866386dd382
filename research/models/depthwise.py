"""Depthwise convolutions with TF-style 'SAME' padding, two formulations of one function.

`depthwise_conv2d`: XLA's grouped convolution (feature_group_count = C), the
fast path on GPU/TPU. `depthwise_conv2d_shifted`: the same convolution as k*k
shifted multiply-adds (forward and input gradient), which XLA's CPU backend
runs several times faster than its grouped convolution. Both take x [N, H, W, C]
and kernel [k, k, 1, C] (nn.Conv's layout) and accumulate bf16 operands in
float32. `DepthwiseConv` is the Flax layer over either.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _same_padding(size: int, k: int, s: int) -> tuple[int, int]:
  """TF 'SAME' padding (lo, hi) of one spatial dim: extra pixel at the end."""
  total = max((-(-size // s) - 1) * s + k - size, 0)
  return total // 2, total - total // 2


def _depthwise_fwd_conv(x, kernel, stride):
  return jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=x.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_conv2d(x, kernel, stride: int):
  """Depthwise conv with TF 'SAME' padding and a fast kernel gradient.

  Args:
    x: [N, H, W, C] float.
    kernel: [kh, kw, 1, C] float (Flax HWIO layout, feature_group_count=C).
    stride: spatial stride.

  Returns:
    [N, ceil(H / stride), ceil(W / stride), C].

  The forward pass and the input gradient are XLA's grouped convolution;
  the kernel gradient is kh * kw shifted multiply-and-sum reductions. XLA on
  CPU lowers the grouped filter-gradient convolution to a slow dense one
  (measured ~14x slower than these reductions at 32 x 56 x 56 x 144).
  """
  return _depthwise_fwd_conv(x, kernel, stride)


def _depthwise_vjp_fwd(x, kernel, stride):
  return _depthwise_fwd_conv(x, kernel, stride), (x, kernel)


def _depthwise_vjp_bwd(stride, res, g):
  x, kernel = res
  _, vjp_x = jax.vjp(lambda x: _depthwise_fwd_conv(x, kernel, stride), x)
  (dx,) = vjp_x(g)
  return dx, _depthwise_kernel_grad(stride, x, kernel, g)


def _accumulation_dtype(dtype):
  """float32 for bfloat16/float16 operands (products and sums as a convolution
  accumulates them), else `dtype` itself (then the casts below are no-ops)."""
  return jnp.promote_types(dtype, jnp.float32)


def _depthwise_kernel_grad(stride, x, kernel, g):
  kh, kw = kernel.shape[:2]
  acc = _accumulation_dtype(x.dtype)
  ho, wo = g.shape[1:3]
  xp = jnp.pad(x, ((0, 0), _same_padding(x.shape[1], kh, stride),
                   _same_padding(x.shape[2], kw, stride), (0, 0)))
  rows = []
  for i in range(kh):
    cols = []
    for j in range(kw):
      patch = jax.lax.slice(
          xp, (0, i, j, 0),
          (xp.shape[0], i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1,
           xp.shape[3]), (1, stride, stride, 1))
      cols.append(jnp.sum(patch.astype(acc) * g.astype(acc), axis=(0, 1, 2)))
    rows.append(jnp.stack(cols))
  return jnp.stack(rows)[:, :, None, :].astype(kernel.dtype)


depthwise_conv2d.defvjp(_depthwise_vjp_fwd, _depthwise_vjp_bwd)


def _shifted_sum(xp, kernel, stride, out_hw):
  """sum_ij xp[:, i + s*h, j + s*w, :] * kernel[i, j, 0] (one loop fusion).

  bfloat16 operands are multiplied and summed in float32 (as XLA's
  convolution accumulates them) and the sum is rounded to bfloat16 once.
  """
  kh, kw = kernel.shape[:2]
  ho, wo = out_hw
  acc = _accumulation_dtype(xp.dtype)
  out = None
  for i in range(kh):
    for j in range(kw):
      patch = jax.lax.slice(
          xp, (0, i, j, 0),
          (xp.shape[0], i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1,
           xp.shape[3]), (1, stride, stride, 1))
      term = patch.astype(acc) * kernel[i, j, 0].astype(acc)
      out = term if out is None else out + term
  return out.astype(xp.dtype)


def _shifted_fwd(x, kernel, stride):
  kh, kw = kernel.shape[:2]
  h, w = x.shape[1:3]
  xp = jnp.pad(x, ((0, 0), _same_padding(h, kh, stride),
                   _same_padding(w, kw, stride), (0, 0)))
  return _shifted_sum(xp, kernel, stride, (-(-h // stride), -(-w // stride)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_conv2d_shifted(x, kernel, stride: int):
  """`depthwise_conv2d` with forward and input gradient as shifted sums too.

  Same arguments and result as `depthwise_conv2d` (up to float rounding: the
  k*k products are summed in a different order). XLA:CPU runs a grouped
  convolution with one channel per group at a small fraction of a GFLOP/s
  (Eigen and YNNPACK alike), for the forward pass and the input gradient;
  k*k multiply-adds of shifted slices fuse into loops over the output instead
  (10-25x faster per layer at 128 x 64x64 inputs; see
  benchmarks/profile_efficientnet.py and research/transfer/README.md). The
  input gradient is the same sum over the gradient, dilated by the stride and
  padded, with the kernel flipped; the kernel gradient is
  `depthwise_conv2d`'s.
  """
  return _shifted_fwd(x, kernel, stride)


def _shifted_vjp_fwd(x, kernel, stride):
  return _shifted_fwd(x, kernel, stride), (x, kernel)


def _shifted_vjp_bwd(stride, res, g):
  x, kernel = res
  kh, kw = kernel.shape[:2]
  (plh, phh), (plw, phw) = (_same_padding(x.shape[1], kh, stride),
                            _same_padding(x.shape[2], kw, stride))
  gp = jax.lax.pad(g, jnp.zeros((), g.dtype),
                   ((0, 0, 0), (kh - 1 - plh, kh - 1 - phh, stride - 1),
                    (kw - 1 - plw, kw - 1 - phw, stride - 1), (0, 0, 0)))
  dx = _shifted_sum(gp, kernel[::-1, ::-1], 1, x.shape[1:3]).astype(x.dtype)
  return dx, _depthwise_kernel_grad(stride, x, kernel, g)


depthwise_conv2d_shifted.defvjp(_shifted_vjp_fwd, _shifted_vjp_bwd)


class DepthwiseConv(nn.Module):
  """Depthwise conv layer; parameter `kernel` [k, k, 1, C] like nn.Conv's."""
  kernel_size: int
  stride: int = 1
  dtype: Any = jnp.float32
  shifted: bool = False  # depthwise_conv2d_shifted instead of depthwise_conv2d

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    kernel = self.param("kernel", conv_init,
                        (self.kernel_size, self.kernel_size, 1, c))
    fn = depthwise_conv2d_shifted if self.shifted else depthwise_conv2d
    return fn(x.astype(self.dtype), kernel.astype(self.dtype), self.stride)
