r"""Our cGAN train step vs the same step in PyTorch, on the CPU.

  python benchmarks/bench_gan_torch.py [--steps 40] [--threads 1] \
      [--out runs/bench_gan_torch] [--docs]

The model and step are configs/mnist5k_cgan.py's `cpu` variant (the one the
README's cGAN results come from): conditional-BatchNorm generator (width 32,
latent 128), spectral-norm projection discriminator (width 16), hinge loss plus
the class term (class_weight 1), one discriminator update then one generator
update per step (n_critic 1), DiffAugment colour/translation/cutout on every
discriminator input, Adam(b1 0, b2 0.9) with the per-group learning-rate
multipliers, the EMA generator; batch 64 real mnist5k images.

The peer is tests/reference/torch_gan.py (`TorchGANStep`), the reference
tests/test_bench_gan_torch.py checks our networks and step against, started
from our initial parameters (copied in). Ours is GANTask.train_step through
research.parallel's pmap engine on one CPU device, as the trainer runs it.
Torch is eager float32 (no torch.compile), NCHW.

What is timed, per framework and step: drawing the uint8 batch from the host
iterator, handing it over (pmap transfer / torch.from_numpy + permute +
scaling), the noise, both updates and the EMA; ours is blocked on until the
new state exists. The two alternate step by step, the order rotating
(research.timing.interleaved), so load from other processes falls on both
alike; the first two calls of each (compilation, warm-up) are not timed. The
table gives median wall and process-CPU seconds per step and their ratios
torch / ours, with the CPU model and the load average.

Threads: torch.set_num_threads(--threads). XLA's CPU client sizes its pool to
the visible cores; run under `taskset -c 0-(threads-1)` to give both the
same cores when --threads is less than the machine's core count.

--docs also writes research/docs/bench_gan_torch_results.{json,md}.
Needs the `torch` extra (torch==2.13.0), imported lazily; `research/` never
imports torch.
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time

import numpy as np

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
CONFIG = os.path.join(REPO, "configs", "mnist5k_cgan.py")
DOCS = os.path.join(REPO, "research", "docs", "bench_gan_torch_results")


def reference():
  """tests/reference/torch_gan.py as a module."""
  from research import config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.load_module(os.path.join(REPO, "tests", "reference", "torch_gan.py"),
                                "_torch_gan_reference")


def make_config(seed: int = 0, **overrides):
  from research import config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.apply_overrides(config_lib.load(CONFIG + ":cpu"),
                                    {"seed": seed, "progress": False, **overrides})


def one_device():
  """benchmarks/one_device.py as a module."""
  from research import config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.load_module(os.path.join(REPO, "benchmarks", "one_device.py"),
                                "_one_device")


def FlaxGAN(config, seed: int = 0):  # pylint: disable=invalid-name
  """Ours: GANTask.train_step through research.parallel (one CPU device)."""
  from research import tasks  # pylint: disable=g-import-not-at-top
  task = tasks.get_task(config.task, config)
  n = config.batch_size
  example = {"image": np.zeros((n,) + task.image_shape, np.uint8),
             "label": np.zeros((n,), np.int32)}
  return one_device().OneDeviceRun(config, seed, example, task=task)


def make_peer(ref, config, flax_state, seed: int = 0):
  """The reference step with our (initial) networks copied in."""
  m = config.model
  g = ref.make_torch_generator(m.latent_dim, m.generator.width, m.num_classes, m.image_size,
                               m.channels)
  d = ref.make_torch_discriminator(m.discriminator.width, m.num_classes,
                                   m.discriminator.num_downsamples, m.channels)
  ref.load_state(g, ref.generator_state_dict(g, flax_state.g_params, flax_state.g_batch_stats))
  ref.load_state(d, ref.discriminator_state_dict(d, flax_state.d_params,
                                                 flax_state.d_batch_stats))
  go, do = config.g_optimizer, config.d_optimizer
  if config.n_critic != 1 or config.loss != "hinge":
    raise ValueError(f"bench_gan_torch: the reference step is hinge with n_critic 1, got "
                     f"loss={config.loss!r} n_critic={config.n_critic}")
  return ref.TorchGANStep(
      g, d, g_lr=go.lr, d_lr=do.lr, betas=(go.b1, go.b2),
      g_mults=tuple(go.lr_mults), d_mults=tuple(do.lr_mults),
      class_weight=config.class_weight, ema_decay=config.ema_decay,
      policy=config.diff_augment, seed=seed)


def torch_batch(images, labels):
  """uint8 NHWC + int labels -> (float NCHW in [-1, 1], int64 labels)."""
  import torch  # pylint: disable=g-import-not-at-top
  x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
  return x, torch.from_numpy(np.asarray(labels, np.int64))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--steps", type=int, default=40, help="timed steps of each framework")
  p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="runs/bench_gan_torch")
  p.add_argument("--docs", action="store_true",
                 help="also write research/docs/bench_gan_torch_results.{json,md}")
  args = p.parse_args(argv)
  if args.steps < 1:
    p.error(f"--steps must be >= 1, got {args.steps}")

  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from research import data, timing  # pylint: disable=g-import-not-at-top
  cores = one_device().match_torch_threads(torch, args.threads)
  config = make_config(args.seed)
  ours = FlaxGAN(config, args.seed)
  peer = make_peer(reference(), config, ours.init_state, args.seed)
  train = data.load_train(config.data)
  streams = {k: data.ArrayIterator(train, config.batch_size, args.seed) for k in ("ours", "torch")}

  def ours_step(_):
    b = next(streams["ours"])
    return ours.train_step(b["image"], b["label"])

  def torch_step(_):
    b = next(streams["torch"])
    return peer(*torch_batch(b["image"], b["label"]))

  meta = {"date": datetime.date.today().isoformat(), "cpu": timing.cpu_model(),
          "config": "configs/mnist5k_cgan.py:cpu", "batch_size": config.batch_size,
          "steps_timed": args.steps, "torch_version": torch.__version__,
          "torch_threads": torch.get_num_threads(), "jax_version": jax.__version__,
          "visible_cores": cores, "load_average_start": os.getloadavg()}
  t0 = time.perf_counter()
  timed = timing.interleaved({"ours": ours_step, "torch": torch_step}, args.steps, warmup=2,
                             keep_outputs=True)
  meta["wall_seconds"] = time.perf_counter() - t0
  meta["load_average_end"] = os.getloadavg()
  summary = {}
  for name, t in timed.items():
    losses = {k: float(np.mean([float(np.asarray(o[k])) for o in t.outputs]))
              for k in ("d_loss", "g_loss")}
    summary[name] = {"seconds_per_step_median": t.median,
                     "cpu_seconds_per_step_median": statistics.median(t.cpu),
                     "mean_losses_over_timed_steps": losses}
  summary["time_ratio_torch_over_ours"] = (summary["torch"]["seconds_per_step_median"]
                                           / summary["ours"]["seconds_per_step_median"])
  summary["cpu_time_ratio_torch_over_ours"] = (
      summary["torch"]["cpu_seconds_per_step_median"]
      / summary["ours"]["cpu_seconds_per_step_median"])
  o, t = summary["ours"], summary["torch"]
  table = "\n".join([
      f"cGAN train step (configs/mnist5k_cgan.py:cpu, batch {config.batch_size}), "
      f"{args.steps} interleaved steps each, torch {meta['torch_version']} "
      f"({meta['torch_threads']} threads), jax {meta['jax_version']} (XLA pool: {cores} "
      f"visible cores), CPU: {meta['cpu']}, {meta['date']}",
      "",
      "| framework | s/step (median) | ratio torch/ours | CPU s/step (median) | CPU ratio |",
      "| --- | --- | --- | --- | --- |",
      f"| ours (Flax, research.tasks.gan) | {o['seconds_per_step_median']:.4f} | 1.00 | "
      f"{o['cpu_seconds_per_step_median']:.4f} | 1.00 |",
      f"| PyTorch (tests/reference/torch_gan.py) | {t['seconds_per_step_median']:.4f} | "
      f"{summary['time_ratio_torch_over_ours']:.2f} | {t['cpu_seconds_per_step_median']:.4f} | "
      f"{summary['cpu_time_ratio_torch_over_ours']:.2f} |",
      "",
      f"Load average {meta['load_average_start'][0]:.1f} at the start, "
      f"{meta['load_average_end'][0]:.1f} at the end.",
  ]) + "\n"
  print("\n" + table, flush=True)
  result = {"meta": meta, "summary": summary,
            "step_seconds": {k: v.wall for k, v in timed.items()},
            "step_cpu_seconds": {k: v.cpu for k, v in timed.items()}}
  one_device().write_results(
      [os.path.join(args.out, "results")] + ([DOCS] if args.docs else []), table, result)
  return 0


if __name__ == "__main__":
  sys.exit(main())
