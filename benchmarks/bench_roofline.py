r"""Each model step against the machine's limit: achieved GFLOP/s / float32 matmul peak.

The peak is measured here, on the current load (`research.timing.matmul_peak_gflops`:
an [n, n] @ [n, n] float32 jnp.dot at a few sizes, best median). Each step's flops
come from XLA's cost analysis of the compiled step (`research.timing.compiled_flops`;
a train step counts forward, backward and optimizer); its time is the median of
interleaved calls (`research.timing.interleaved`). The PyTorch EfficientNet row is
the same architecture and step, so it is given XLA's flop count of ours.

Steps:
  * EfficientNet-Lite0 train step (benchmarks/bench_efficientnet.py's step, the
    default depthwise path for the backend), each BATCHxRES in --lite0;
  * the mnist5k VAE train step (research.models.vae, 128 x 28x28x1: Bernoulli
    log-likelihood of the dynamically binarised batch, analytic KL, Adam), the
    step benchmarks/bench_vae_torch.py times per epoch;
  * with --torch, the PyTorch EfficientNet-Lite0 reference step beside ours.

  python benchmarks/bench_roofline.py [--lite0 128x64] [--repeats 5] [--torch]
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research import config_lib, timing


def _bench_efficientnet():
  """benchmarks/bench_efficientnet.py, loaded by path (benchmarks/ is not a package)."""
  return config_lib.load_module(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_efficientnet.py"))


def lite0_step(batch: int, res: int):
  """(call(r), flops) of the Flax EfficientNet-Lite0 train step on [batch, res, res, 3]."""
  _, train_step, state, x, y = _bench_efficientnet().flax_train_step(
      batch, res, shifted_depthwise=None)
  flops = timing.compiled_flops(train_step, state, x, y)
  box = [state]

  def call(r):
    del r
    box[0], loss = train_step(box[0], x, y)
    return loss
  return call, flops


def vae_step(batch: int = 128):
  """(call(r), flops) of one VAE train step on a [batch, 28, 28, 1] uint8 batch."""
  from research.models import vae  # pylint: disable=g-import-not-at-top
  model = vae.VAE()
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (batch, 28, 28, 1), dtype=np.uint8))
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 28, 28, 1)),
                               key=jax.random.key(1))["params"]
  tx = optax.adam(1e-3)
  state = (params, tx.init(params), jax.random.key(2))

  @functools.partial(jax.jit, donate_argnums=0)
  def train_step(state, images):
    params, opt, key = state
    key, k_bin, k_z = jax.random.split(key, 3)
    x = jax.random.bernoulli(k_bin, images / 255.0).astype(jnp.float32)

    def loss_fn(p):
      (logits,), mean, log_var = model.apply({"params": p}, x, key=k_z)
      ll = -optax.sigmoid_binary_cross_entropy(logits, x).sum((1, 2, 3))
      kl = 0.5 * (jnp.exp(log_var) + mean ** 2 - 1.0 - log_var).sum(-1)
      return -(ll - kl).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx.update(grads, opt, params)
    return (optax.apply_updates(params, updates), opt, key), loss

  flops = timing.compiled_flops(train_step, state, images)
  box = [state]

  def call(r):
    del r
    box[0], loss = train_step(box[0], images)
    return loss
  return call, flops


def torch_lite0_step(batch: int, res: int):
  step, _ = _bench_efficientnet().torch_step_fn(batch, res)
  return lambda r: step()


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--lite0", default="128x64", help="comma-separated BATCHxRES")
  parser.add_argument("--vae_batch", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--torch", action="store_true",
                      help="also time the PyTorch EfficientNet-Lite0 reference step")
  parser.add_argument("--out", default="", help="also write the rows as JSON here")
  args = parser.parse_args()
  cpu = timing.cpu_model()
  steps, flops = {}, {}
  for config in args.lite0.split(","):
    b, r = (int(v) for v in config.split("x"))
    name = f"EfficientNet-Lite0 train step, {b} x {r}x{r}"
    steps[name], flops[name] = lite0_step(b, r)
    if args.torch:
      steps[f"{name} (PyTorch)"] = torch_lite0_step(b, r)
      flops[f"{name} (PyTorch)"] = flops[name]
  name = f"VAE train step, {args.vae_batch} x 28x28x1"
  steps[name], flops[name] = vae_step(args.vae_batch)
  times = timing.interleaved(steps, args.repeats, warmup=2)
  # The peak last, on the same load as the steps just timed.
  peak = timing.matmul_peak_gflops()
  rows = []
  for name, t in times.items():
    f = timing.achieved_fraction(flops[name], t.median, peak["gflops"])
    rows.append({"step": name, "gflop_per_step": flops[name] / 1e9,
                 "median_s": t.median, "gflops": f["gflops"], "fraction": f["fraction"]})
  print(f"CPU: {cpu}; jax {jax.__version__}; {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f}; {datetime.date.today()}")
  per = ", ".join(f"{n}: {g:.1f}" for n, g in peak["per_size"].items())
  print(f"float32 matmul peak: {peak['gflops']:.1f} GFLOP/s (n = {peak['size']}; "
        f"per n: {per})\n")
  print("| step | GFLOP / step (XLA) | median s | GFLOP/s | fraction of matmul peak |")
  print("| --- | ---: | ---: | ---: | ---: |")
  for row in rows:
    print(f"| {row['step']} | {row['gflop_per_step']:.2f} | {row['median_s']:.3f} | "
          f"{row['gflops']:.1f} | {row['fraction']:.1%} |")
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"cpu": cpu, "date": str(datetime.date.today()), "peak": peak,
                 "rows": rows}, f, indent=1)


if __name__ == "__main__":
  main()
