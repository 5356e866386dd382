"""Times one depthwise conv layer: XLA forward / input grad / kernel grad vs
the shifted-sum kernel gradient used by research.models.efficientnet_lite,
and PyTorch's depthwise conv. 32 x 56 x 56 x 144, 3x3, stride 1.

  python benchmarks/bench_depthwise_grad.py
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

N,H,C,k=32,56,144,3
x=jnp.asarray(np.random.default_rng(0).normal(size=(N,H,H,C)),jnp.float32)
w=jnp.asarray(np.random.default_rng(1).normal(size=(k,k,1,C)),jnp.float32)
conv=lambda x,w: lax.conv_general_dilated(x,w,(1,1),'SAME',dimension_numbers=('NHWC','HWIO','NHWC'),feature_group_count=C)
def shifted_dw(x,g):  # dW[i,j,c] = sum x_pad[n,h+i,w+j,c] g[n,h,w,c]
  xp=jnp.pad(x,((0,0),(1,1),(1,1),(0,0)))
  return jnp.stack([jnp.stack([jnp.sum(xp[:,i:i+H,j:j+H]*g,(0,1,2)) for j in range(k)]) for i in range(k)])[:,:,None]
g=jnp.ones((N,H,H,C))
fs={'fwd':jax.jit(conv),
    'grad_x':jax.jit(lambda x,w: jax.vjp(lambda x: conv(x,w),x)[1](g)[0]),
    'grad_w (XLA)':jax.jit(lambda x,w: jax.vjp(lambda w: conv(x,w),w)[1](g)[0]),
    'grad_w (shifted sums)':jax.jit(lambda x,w: shifted_dw(x,g))}
ref=fs['grad_w (XLA)'](x,w)
np.testing.assert_allclose(fs['grad_w (shifted sums)'](x,w),ref,rtol=1e-3,atol=1e-1)
for n,f in fs.items():
  f(x,w).block_until_ready(); ts=[]
  for _ in range(3):
    t=time.perf_counter(); f(x,w).block_until_ready(); ts.append(time.perf_counter()-t)
  print(f'jax {n}: {np.median(ts)*1e3:.1f} ms')
import torch
xt=torch.from_numpy(np.asarray(x).transpose(0,3,1,2).copy()).requires_grad_(True)
wt=torch.from_numpy(np.asarray(w).transpose(3,2,0,1).copy()).requires_grad_(True)
def tstep():
  y=torch.nn.functional.conv2d(xt,wt,padding=1,groups=C); return y
for n in ['fwd','fwd+bwd']:
  ts=[]
  for _ in range(4):
    t=time.perf_counter(); y=tstep()
    if n!='fwd': y.backward(torch.ones_like(y))
    ts.append(time.perf_counter()-t)
  print(f'torch {n}: {np.median(ts[1:])*1e3:.1f} ms')
