r"""Flax VAE vs an independent PyTorch implementation of the same VAE, on CPU.

Issue 4's check of the VAE against a peer: test ELBO (nats, on the 1,000
mnist5k test images) of each and whether they agree within 1 nat, and
wall-clock seconds per epoch as a ratio torch / ours.

  python benchmarks/bench_vae_torch.py [--epochs 40] [--seeds 0,1,2] [--threads 2] \
      [--out runs/bench_vae_torch] [--copy_init] [--docs]

The peer is a plain PyTorch model (`make_torch_vae` in tests/reference/torch_vae.py,
the reference the tests check our VAE against), not pythae:
pythae 0.1.2 does install and import next to torch 2.13, but its trainer has
no dynamic binarisation and no KL warm-up, steps the LR scheduler once per
epoch, and its built-in networks are not ours, so it cannot run this schedule.

Same on both sides (configs/mnist5k_vae.py, the unconditional `vae` config):
  * architecture: Conv(32, 4x4, s2, pad 1) -> ReLU -> Conv(64, 4x4, s2, pad 1)
    -> ReLU -> flatten -> Dense(256) -> ReLU -> Dense(16) mean, Dense(16)
    log-variance; decoder Dense(256) -> ReLU -> Dense(7*7*64) -> ReLU ->
    ConvT(32, 4x4, s2) -> ReLU -> ConvT(1, 4x4, s2) Bernoulli logits
    (research/models/vae.py; tests/test_bench_vae_torch.py copies our initial
    parameters into the torch model and checks the outputs agree);
  * init: truncated-normal LeCun (Flax's default) for every kernel, zero biases,
    each side drawing its own from its own seed;
  * data: the same stream of uint8 batches (research.data.ArrayIterator with
    the run's seed: 128 images a step, reshuffled each pass over the 4,000
    training images); one epoch = ceil(4000 / 128) = 32 steps;
  * objective: one reparameterised sample, Bernoulli log-likelihood of images
    dynamically binarised every step (x ~ Bernoulli(pixel / 255)), analytic KL
    to N(0, I), loss = -mean(log p(x|z) - beta_t KL) with the KL warm-up
    beta_t = beta * min(1, (t + 1) / kl_warmup_steps);
  * optimizer: Adam(b1 0.9, b2 0.999, eps 1e-8), LR 1e-3 with a linear warm-up
    from 0 over `optimizer.warmup_steps`, then cosine decay to 0 at the last
    step (research/optim.py's schedule, re-implemented with torch's LambdaLR);
    the run's length is --epochs * 32 steps, so the cosine spans the run;
  * evaluation: the task's eval (VAETask.eval_step): the test images are
    binarised with the fixed key the task uses (from seed + 4; one key for
    every 200-image eval batch, as in eval_step), the same binary test set is
    scored by both, with one posterior sample per image;
    the reported ELBO is the mean over the 1,000 images of
    log p(x|z) - KL(q(z|x) || p(z)), in nats (beta = 1, whatever beta trained).

Ours runs the task's own jitted `train_step` through `research.parallel`'s
pmap engine on one CPU device, with the trainer's key protocol
(`init, train = split(PRNGKey(seed))`, per-step keys folded from the step),
so it trains exactly what `research.trainer.train_and_evaluate` would
(without its logging and checkpoints). Torch is eager float32 (no
torch.compile), NCHW.

What is timed, per epoch and per framework: for each of its 32 steps, drawing
the uint8 batch from the host iterator, handing it to the framework (pmap
transfer / torch.from_numpy + permute + /255), binarising, forward, backward
and the Adam update; the clock stops once the parameters are updated (ours:
`jax.block_until_ready` on the state). Evaluation is not timed. The two
frameworks alternate epoch by epoch (which one goes first alternates too), so
load from other processes falls on both alike. The first epoch of each run
(XLA compilation; torch's first-use warm-up) is dropped; the table gives the
median over all remaining epochs of all seeds, and the ratio of the medians,
beside the same for the process CPU time (all threads) of each epoch. Wall
times mean something only on an otherwise idle machine: under load, both
frameworks' worker threads wait on each other's preempted peers.

The schedule constants are the config's (LR warm-up 100 steps, KL warm-up
1,000 steps), whatever --epochs is: below 32 epochs (1,024 steps) the KL
warm-up does not finish and beta stays below 1 to the end, on both sides.

Threads: torch.set_num_threads(--threads). XLA's CPU client sizes its pool
to the visible cores, with no runtime knob; run under
`taskset -c 0-(threads-1)` to give both the same cores when --threads is
less than the machine's core count (the script warns then).

Needs the `torch` extra (torch==2.13.0), imported lazily; `research/` never
imports torch.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import statistics
import sys
import time

import numpy as np

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs",
                      "mnist5k_vae.py")
EVAL_BATCH = 200  # the config's eval_batch_size
DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "research", "docs",
                    "bench_vae_torch_results")


# ---------------------------------------------------------------- the PyTorch peer
# The reference model lives next to the tests that check it against ours.
def _reference():
  from research import config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.load_module(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference",
                   "torch_vae.py"), "_torch_vae_reference")


_ref = _reference()
make_torch_vae, torch_bound_terms = _ref.make_torch_vae, _ref.torch_bound_terms
lr_factor, kl_weight = _ref.lr_factor, _ref.kl_weight
load_flax_params = _ref.load_flax_params


class TorchRun:
  """The PyTorch side: model, Adam, LambdaLR, its own RNG; one epoch at a time."""

  def __init__(self, config, seed: int, num_steps: int, init_params=None):
    import torch  # pylint: disable=g-import-not-at-top
    self.torch = torch
    m = config.model
    torch.manual_seed(seed)
    self.model = make_torch_vae((m.image_size, m.image_size, m.channels),
                                m.latent_dim, m.width, m.hidden)
    if init_params is not None:
      load_flax_params(self.model, init_params)
    o = config.optimizer
    self.opt = torch.optim.Adam(self.model.parameters(), lr=o.lr,
                                betas=(o.get("b1", 0.9), o.get("b2", 0.999)), eps=1e-8)
    warmup = o.get("warmup_steps", 0)
    self.sched = torch.optim.lr_scheduler.LambdaLR(
        self.opt, lambda t: lr_factor(t, num_steps, warmup))
    self.gen = torch.Generator().manual_seed(seed + 1)
    self.beta, self.kl_warmup = config.beta, config.kl_warmup_steps
    self.step = 0

  def _x(self, images):
    return self.torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)

  def train_step(self, images):
    """One update on a uint8 NHWC batch; returns the loss (a 0-d tensor)."""
    torch = self.torch
    x = torch.bernoulli(self._x(images), generator=self.gen)
    eps = torch.randn((x.shape[0], self.model.latent_dim), generator=self.gen)
    return self.update(x, eps)

  def update(self, x, eps):
    """One update on binary images x [N, C, H, W] with posterior noise eps [N, latent]."""
    ll, kl = torch_bound_terms(self.model, x, eps)
    loss = -(ll - kl_weight(self.step, self.beta, self.kl_warmup) * kl).mean()
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()
    self.sched.step()
    self.step += 1
    return loss.detach()

  def test_elbo(self, binary_test: np.ndarray, seed: int) -> float:
    """Mean one-sample ELBO over the (already binarised) test images."""
    torch = self.torch
    gen = torch.Generator().manual_seed(seed + 4)
    total = 0.0
    with torch.no_grad():
      for i in range(0, len(binary_test), EVAL_BATCH):
        x = torch.from_numpy(binary_test[i:i + EVAL_BATCH]).permute(0, 3, 1, 2).contiguous()
        eps = torch.randn((x.shape[0], self.model.latent_dim), generator=gen)
        ll, kl = torch_bound_terms(self.model, x, eps)
        total += float((ll - kl).sum())
    return total / len(binary_test)


def _one_device():
  from research import config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                             "one_device.py"), "_one_device")


class FlaxRun:
  """Ours: VAETask.train_step / eval_step through research.parallel, as the trainer runs them
  (benchmarks/one_device.py), plus the test ELBO."""

  def __init__(self, config, seed: int):
    from research.tasks import base, get_task  # pylint: disable=g-import-not-at-top
    ctx = base.DataContext(global_batch_size=config.batch_size, seed=seed)
    task = get_task(config.task, config)
    self.eval_sets = task.eval_data(ctx)
    self.run = _one_device().OneDeviceRun(config, seed, next(task.train_data(ctx)),
                                          with_eval=True, task=task)
    self.init_params = self.run.init_state.params

  def __getattr__(self, name):  # task, dp, state, train_rng, ... of the one-device run
    if name == "run":
      raise AttributeError(name)
    return getattr(self.run, name)

  def train_step(self, images, labels):
    return self.run.train_step(images, labels)["loss"]

  def test_elbo(self) -> float:
    sums = None
    for batch in self.eval_sets[""]():
      out = self.dp.eval_step(self.state, self.dp.put_batch(self.parallel.shard(batch, 1)))
      sums = out if sums is None else self.jax.tree.map(lambda a, b: a + b, sums, out)
    return float(self.task.summarize_eval(self.dp.to_host(sums))["elbo"])

  def binary_test_set(self) -> np.ndarray:
    """The test images as the task's eval binarises them: float32 {0, 1} [N, C, H, W]."""
    jax = self.jax
    seed = self.task.seed
    # VAETask.eval_step: key folded from PRNGKey(seed + 4) and the device index
    # (0 here), split in three; the first binarises every eval batch.
    bin_key = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed + 4), 0), 3)[0]
    targets = jax.jit(self.task.targets)
    out = []
    for batch in self.eval_sets[""]():
      x = np.asarray(targets(bin_key, batch["image"]))
      out.append(x[batch["mask"] > 0])
    return np.concatenate(out).astype(np.float32)


def make_config(seed: int, num_steps: int):
  from research import config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.apply_overrides(config_lib.load(CONFIG), {
      "seed": seed, "num_steps": num_steps, "iwae_samples": 0, "progress": False,
      "eval_batch_size": EVAL_BATCH, "eval_every": num_steps})


def run_seed(seed: int, epochs: int, steps_per_epoch: int, copy_init: bool, log=print):
  """Trains both sides for `epochs` epochs, alternating; returns a result dict."""
  import jax  # pylint: disable=g-import-not-at-top
  from research import data, timing  # pylint: disable=g-import-not-at-top
  num_steps = epochs * steps_per_epoch
  config = make_config(seed, num_steps)
  ours = FlaxRun(config, seed)
  peer = TorchRun(config, seed, num_steps, ours.init_params if copy_init else None)
  train = data.load_train(config.data)
  streams = {name: data.ArrayIterator(train, config.batch_size, seed)
             for name in ("ours", "torch")}

  def ours_epoch():
    losses = [ours.train_step(*_next(streams["ours"])) for _ in range(steps_per_epoch)]
    jax.block_until_ready(ours.state)
    return losses

  def torch_epoch():
    return [peer.train_step(_next(streams["torch"])[0]) for _ in range(steps_per_epoch)]

  def log_epoch(epoch, t):
    o, p = t["ours"], t["torch"]
    loss = lambda out: float(np.mean([float(v) for v in out]))
    log(f"seed {seed} epoch {epoch + 1}/{epochs}: ours {o.wall[-1]:.2f} s "
        f"(cpu {o.cpu[-1]:.2f} s, train loss {loss(o.outputs[-1]):.2f}) | "
        f"torch {p.wall[-1]:.2f} s (cpu {p.cpu[-1]:.2f} s, train loss {loss(p.outputs[-1]):.2f})")

  # Every epoch is timed (the first includes compilation; summarize drops it), in
  # alternating order so load changes fall on both sides alike.
  timed = timing.interleaved({"ours": lambda r: ours_epoch(), "torch": lambda r: torch_epoch()},
                             epochs, warmup=0, keep_outputs=True, on_round=log_epoch)
  times = {k: t.wall for k, t in timed.items()}
  cpu_times = {k: t.cpu for k, t in timed.items()}
  losses = {k: [float(np.mean([float(v) for v in out])) for out in t.outputs]
            for k, t in timed.items()}
  binary_test = ours.binary_test_set()
  elbo = {"ours": ours.test_elbo(), "torch": peer.test_elbo(binary_test, seed)}
  # Cross-check of the two evaluations: our trained parameters, copied into the
  # torch model, scored by the torch code on the same binary test set (differs
  # from elbo['ours'] only by the posterior samples).
  load_flax_params(peer.model, jax.device_get(ours.state.params))
  cross = peer.test_elbo(binary_test, seed)
  log(f"seed {seed}: test ELBO ours {elbo['ours']:.2f}, torch {elbo['torch']:.2f} nats "
      f"({len(binary_test)} test images); ours' params scored by the torch eval "
      f"{cross:.2f}")
  return {"seed": seed, "num_steps": num_steps, "test_elbo": elbo,
          "ours_params_scored_by_torch_eval": cross,
          "epoch_seconds": times, "epoch_cpu_seconds": cpu_times, "train_loss": losses,
          "test_images": int(len(binary_test))}


def _next(it):
  b = next(it)
  return b["image"], b["label"]


def summarize(results: list[dict]) -> dict:
  out = {}
  for name in ("ours", "torch"):
    elbos = [r["test_elbo"][name] for r in results]
    after_first = [t for r in results for t in r["epoch_seconds"][name][1:]]
    cpu_after_first = [t for r in results for t in r["epoch_cpu_seconds"][name][1:]]
    out[name] = {
        "test_elbo_mean": float(np.mean(elbos)),
        "test_elbo_std": float(np.std(elbos, ddof=1)) if len(elbos) > 1 else float("nan"),
        "test_elbo_per_seed": elbos,
        "seconds_per_epoch_median": (statistics.median(after_first) if after_first
                                     else float("nan")),
        "cpu_seconds_per_epoch_median": (statistics.median(cpu_after_first)
                                         if cpu_after_first else float("nan")),
        "epochs_timed": len(after_first)}
  out["elbo_difference_torch_minus_ours"] = (out["torch"]["test_elbo_mean"]
                                             - out["ours"]["test_elbo_mean"])
  out["elbo_within_1_nat"] = bool(abs(out["elbo_difference_torch_minus_ours"]) <= 1.0)
  out["time_ratio_torch_over_ours"] = (out["torch"]["seconds_per_epoch_median"]
                                       / out["ours"]["seconds_per_epoch_median"])
  out["cpu_time_ratio_torch_over_ours"] = (out["torch"]["cpu_seconds_per_epoch_median"]
                                           / out["ours"]["cpu_seconds_per_epoch_median"])
  return out


def markdown(summary: dict, seeds, meta: dict) -> str:
  def elbo(s):
    std = "n/a" if math.isnan(s["test_elbo_std"]) else f"{s['test_elbo_std']:.2f}"
    return f"{s['test_elbo_mean']:.2f} ± {std}"
  seeds_txt = ",".join(str(s) for s in seeds)
  o, t = summary["ours"], summary["torch"]
  lines = [
      f"VAE on mnist5k, {meta['epochs']} epochs x {meta['steps_per_epoch']} steps "
      f"(batch 128), torch {meta['torch_version']} ({meta['torch_threads']} threads), "
      f"jax {meta['jax_version']} (XLA pool: {meta['visible_cores']} visible cores), "
      f"CPU: {meta.get('cpu', 'not recorded')}, {meta.get('date', '')}",
      "",
      "| framework | seeds | test ELBO (nats, mean ± std) | s/epoch (median) | ratio torch/ours "
      "| CPU s/epoch (median) | CPU ratio |",
      "| --- | --- | --- | --- | --- | --- | --- |",
      f"| ours (Flax, research.tasks.vae) | {seeds_txt} | {elbo(o)} | "
      f"{o['seconds_per_epoch_median']:.3f} | 1.00 | {o['cpu_seconds_per_epoch_median']:.3f} "
      f"| 1.00 |",
      f"| PyTorch (plain, same architecture) | {seeds_txt} | {elbo(t)} | "
      f"{t['seconds_per_epoch_median']:.3f} | {summary['time_ratio_torch_over_ours']:.2f} | "
      f"{t['cpu_seconds_per_epoch_median']:.3f} | "
      f"{summary['cpu_time_ratio_torch_over_ours']:.2f} |",
      "",
      f"s/epoch: wall clock, median over epochs 2..{meta['epochs']} of every seed; CPU: "
      f"process CPU time (all threads) over the same epochs. Load average "
      f"{meta['load_average_start'][0]:.1f} at the start, "
      f"{meta['load_average_end'][0]:.1f} at the end.",
      "",
      f"ELBO difference torch - ours: {summary['elbo_difference_torch_minus_ours']:+.2f} nats; "
      f"within 1 nat: {'yes' if summary['elbo_within_1_nat'] else 'NO'}",
  ]
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--epochs", type=int, default=40,
                 help="epochs of 32 steps; >= 32 lets the 1,000-step KL warm-up finish")
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
  p.add_argument("--out", default="runs/bench_vae_torch")
  p.add_argument("--docs", action="store_true",
                 help="also write research/docs/bench_vae_torch_results.{json,md}")
  p.add_argument("--copy_init", action="store_true",
                 help="start torch from our initial parameters instead of its own init")
  args = p.parse_args(argv)
  if args.epochs < 1:
    p.error("--epochs must be >= 1")
  seeds = [int(s) for s in args.seeds.split(",") if s.strip()]

  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from research import data, timing  # pylint: disable=g-import-not-at-top
  cores = _one_device().match_torch_threads(torch, args.threads)
  n_train = len(data.load_train(make_config(0, 1).data)["image"])
  steps_per_epoch = -(-n_train // 128)
  meta = {"epochs": args.epochs, "steps_per_epoch": steps_per_epoch, "batch_size": 128,
          "train_images": n_train, "torch_version": torch.__version__,
          "torch_threads": torch.get_num_threads(), "jax_version": jax.__version__,
          "jax_devices": str(jax.local_devices()[:1]), "visible_cores": cores,
          "copy_init": args.copy_init, "load_average_start": os.getloadavg(),
          "cpu": timing.cpu_model(), "date": datetime.date.today().isoformat()}

  results = []
  t0 = time.perf_counter()
  for seed in seeds:
    results.append(run_seed(seed, args.epochs, steps_per_epoch, args.copy_init,
                            log=lambda s: print(s, flush=True)))
  meta["wall_seconds"] = time.perf_counter() - t0
  meta["load_average_end"] = os.getloadavg()
  summary = summarize(results)
  table = markdown(summary, seeds, meta)
  print("\n" + table, flush=True)
  _one_device().write_results(
      [os.path.join(args.out, "results")] + ([DOCS] if args.docs else []), table,
      {"meta": meta, "summary": summary, "runs": results},
      f" ({meta['wall_seconds']:.0f} s wall)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
