r"""Train-step throughput: Flax EfficientNet-Lite0 vs the PyTorch reference, on CPU.

Both sides run the same step on the same batch: forward in training mode
(batch statistics, dropout 0.2, drop-connect 0.2), softmax cross-entropy,
backward, SGD with momentum 0.9. Steps alternate between the two frameworks
so that load from other processes hits both alike; after warm-up the median
of the timed steps is reported.

  python benchmarks/bench_efficientnet.py --configs=32x224,128x64 --repeats=5

`--xla_depthwise` adds a Flax column with XLA's own grouped-conv kernel
gradient (the model's `fast_depthwise_grad=False`), the slow path on CPU.
`--shifted_depthwise` adds one with the depthwise forward and input gradient
as shifted multiply-adds too (`shifted_depthwise=True`).

Needs the `torch` extra (torch==2.13.0, efficientnet-lite-pytorch==0.1.0).
`--forward_only` also times the inference forward pass, to see how the step
time splits between forward and backward.
"""
from __future__ import annotations

import argparse
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research import timing
from research.models import efficientnet_lite


def flax_train_step(batch, res, lr=0.01, fast_depthwise_grad=True,
                    shifted_depthwise=False):
  """Returns (model, jitted train_step(state, x, y), state, x, y)."""
  model = efficientnet_lite.EfficientNetLite0(
      num_classes=1000, fast_depthwise_grad=fast_depthwise_grad,
      shifted_depthwise=shifted_depthwise)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(batch, res, res, 3)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 1000, size=batch))
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  tx = optax.sgd(lr, momentum=0.9)
  state = {"params": variables["params"],
           "batch_stats": variables["batch_stats"],
           "opt": tx.init(variables["params"]),
           "rng": jax.random.PRNGKey(1)}

  @functools.partial(jax.jit, donate_argnums=0)
  def train_step(state, x, y):
    rng, dropout_rng = jax.random.split(state["rng"])

    def loss_fn(params):
      logits, new = model.apply(
          {"params": params, "batch_stats": state["batch_stats"]}, x,
          train=True, mutable=["batch_stats"], rngs={"dropout": dropout_rng})
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      return loss, new["batch_stats"]

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"])
    updates, opt = tx.update(grads, state["opt"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates),
            "batch_stats": stats, "opt": opt, "rng": rng}, loss

  return model, train_step, state, x, y


def flax_step_fn(batch, res, lr=0.01, fast_depthwise_grad=True,
                 shifted_depthwise=False):
  """Returns (step(), forward()) closures over a jitted Flax train step."""
  model, train_step, state, x, y = flax_train_step(
      batch, res, lr, fast_depthwise_grad, shifted_depthwise)
  forward = jax.jit(model.apply)
  box = [state]

  def step():
    box[0], loss = train_step(box[0], x, y)
    loss.block_until_ready()

  def fwd():
    forward({"params": box[0]["params"],
             "batch_stats": box[0]["batch_stats"]}, x).block_until_ready()
  return step, fwd


def torch_step_fn(batch, res, lr=0.01):
  """The same step for efficientnet_lite_pytorch's EfficientNet."""
  import torch  # pylint: disable=g-import-not-at-top
  from efficientnet_lite_pytorch import EfficientNet  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = EfficientNet.from_name("efficientnet-lite0", image_size=res)
  rng = np.random.default_rng(0)
  x = torch.from_numpy(rng.normal(size=(batch, 3, res, res)).astype(np.float32))
  y = torch.from_numpy(rng.integers(0, 1000, size=batch))
  opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
  loss_fn = torch.nn.CrossEntropyLoss()

  scope = torch.autograd.profiler.record_function  # labels for torch.profiler

  def step():
    model.train()
    opt.zero_grad(set_to_none=True)
    with scope("forward"):
      loss = loss_fn(model(x), y)
    with scope("backward"):
      loss.backward()
    with scope("optimizer"):
      opt.step()
    float(loss.detach())

  def fwd():
    model.eval()
    with torch.no_grad():
      model(x)
  return step, fwd


def bench(batch, res, warmup, repeats, forward_only, xla_depthwise,
          shifted_depthwise=False):
  import torch  # pylint: disable=g-import-not-at-top
  fx_step, fx_fwd = flax_step_fn(batch, res)
  steps = {"flax": fx_step, "torch": torch_step_fn(batch, res)[0]}
  pt_fwd = torch_step_fn(batch, res)[1] if forward_only else None
  if xla_depthwise:
    steps["flax_xla_dw"] = flax_step_fn(batch, res,
                                        fast_depthwise_grad=False)[0]
  if shifted_depthwise:
    steps["flax_shifted"] = flax_step_fn(batch, res,
                                         shifted_depthwise=True)[0]
  t0 = time.perf_counter()
  fx_step()
  compile_s = time.perf_counter() - t0
  times = timing.interleaved({k: (lambda r, f=f: f()) for k, f in steps.items()}, repeats,
                             warmup=warmup)
  row = {k: t.median for k, t in times.items()}
  row["compile_s"] = compile_s
  if forward_only:
    fwd = timing.interleaved({"flax_fwd": lambda r: fx_fwd(), "torch_fwd": lambda r: pt_fwd()},
                             repeats)
    row.update({k: t.median for k, t in fwd.items()})
  row["torch_threads"] = torch.get_num_threads()
  return row


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default="32x224,128x64",
                      help="comma-separated BATCHxRESOLUTION")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--forward_only", action="store_true",
                      help="also time the inference forward pass")
  parser.add_argument("--xla_depthwise", action="store_true",
                      help="also time Flax with XLA's own depthwise kernel "
                      "gradient (fast_depthwise_grad=False)")
  parser.add_argument("--shifted_depthwise", action="store_true",
                      help="also time Flax with the depthwise forward and "
                      "input gradient as shifted sums (shifted_depthwise=True)")
  args = parser.parse_args()
  print(f"CPU: {timing.cpu_model()}; jax {jax.__version__} on {jax.devices()[0].platform}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
  header = ("| batch x res | Flax img/s | PyTorch img/s | Flax / PyTorch |"
            " Flax compile s |")
  if args.forward_only:
    header += " Flax fwd img/s | PyTorch fwd img/s |"
  if args.xla_depthwise:
    header += " Flax, XLA depthwise grad img/s |"
  if args.shifted_depthwise:
    header += " Flax, shifted depthwise img/s | shifted / PyTorch |"
  print(header)
  print("|" + "---|" * (header.count("|") - 1))
  for config in args.configs.split(","):
    batch, res = (int(v) for v in config.split("x"))
    r = bench(batch, res, args.warmup, args.repeats, args.forward_only,
              args.xla_depthwise, args.shifted_depthwise)
    line = (f"| {batch} x {res}x{res} | {batch / r['flax']:.1f} | "
            f"{batch / r['torch']:.1f} | {r['torch'] / r['flax']:.2f} | "
            f"{r['compile_s']:.1f} |")
    if args.forward_only:
      line += f" {batch / r['flax_fwd']:.1f} | {batch / r['torch_fwd']:.1f} |"
    if args.xla_depthwise:
      line += f" {batch / r['flax_xla_dw']:.2f} |"
    if args.shifted_depthwise:
      line += (f" {batch / r['flax_shifted']:.1f} |"
               f" {r['torch'] / r['flax_shifted']:.2f} |")
    print(line, flush=True)
  print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  main()
