"""Prune and quantize a trained classifier; print and write a size/accuracy table.

  python scripts/compress_report.py --workdir runs/cnn [--finetune_steps 300]

Reads the run's config.json and newest checkpoint (written by scripts/train.py),
evaluates the float model, one-shot magnitude pruning at --sparsities and the
--n_m patterns (fine-tuned with masks fixed if --finetune_steps > 0), int8/int4
PTQ with min-max and percentile calibration run on integer weights, and QAT
(if --finetune_steps > 0). Writes <workdir>/compress/results.{md,csv,json} and
accuracy_vs_sparsity.png (or under --out).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="a finished scripts/train.py run")
  parser.add_argument("--out", default="", help="default: <workdir>/compress")
  parser.add_argument("--sparsities", default="0.5,0.75,0.9")
  parser.add_argument("--n_m", default="2:4")
  parser.add_argument("--bits", default="8,4")
  parser.add_argument("--calibration_batches", type=int, default=4)
  parser.add_argument("--finetune_steps", type=int, default=0)
  parser.add_argument("--lr", type=float, default=1e-4)
  args = parser.parse_args(argv)

  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from research import trainer  # pylint: disable=g-import-not-at-top
  from research.compress import report  # pylint: disable=g-import-not-at-top
  from research.tasks.base import DataContext  # pylint: disable=g-import-not-at-top

  if not os.path.isdir(os.path.join(args.workdir, "checkpoints")):
    print(f"error: --workdir {args.workdir!r} has no checkpoints/ "
          "(expected a finished scripts/train.py run)", file=sys.stderr)
    return 2
  task, state = trainer.load_state(args.workdir)
  if not hasattr(task, "model") or not hasattr(task, "inputs"):
    print(f"error: task {task.config.task!r} is not a classifier", file=sys.stderr)
    return 2
  variables = {"params": state.params}
  if getattr(state, "batch_stats", None):
    variables["batch_stats"] = state.batch_stats

  def apply_fn(v, x):
    return task.model.apply(v, x, train=False)

  config = task.config
  ctx = DataContext(global_batch_size=config.batch_size, seed=config.seed)
  eval_iter = task.eval_data(ctx)
  to_x = jax.jit(task.inputs)

  def eval_batches():
    return [(to_x(b["image"]), b["label"], b["mask"]) for b in eval_iter()]

  def train_batches():
    it = task.train_data(ctx)
    while True:
      b = next(it)
      yield to_x(b["image"]), b["label"], np.ones(len(b["label"]), np.float32)

  calib_it = train_batches()
  calib = [next(calib_it)[0] for _ in range(args.calibration_batches)]
  rows = report.compress_and_evaluate(
      apply_fn, variables, eval_batches, calib, model=config.model.name,
      sparsities=[float(s) for s in args.sparsities.split(",") if s],
      n_m=[p for p in args.n_m.split(",") if p],
      bits=[int(b) for b in args.bits.split(",") if b],
      train_batches=train_batches, finetune_steps=args.finetune_steps, lr=args.lr)

  out = args.out or os.path.join(args.workdir, "compress")
  os.makedirs(out, exist_ok=True)
  md = report.to_markdown(rows)
  print(md)
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(md + "\n")
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump([dataclasses.asdict(r) for r in rows], f, indent=1)
  with open(os.path.join(out, "results.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=[fl.name for fl in dataclasses.fields(report.Row)])
    w.writeheader()
    for r in rows:
      w.writerow(dataclasses.asdict(r))
  report.plot_accuracy_vs_sparsity(rows, os.path.join(out, "accuracy_vs_sparsity.png"))
  print(f"wrote {out}/results.{{md,csv,json}} and accuracy_vs_sparsity.png")
  return 0


if __name__ == "__main__":
  sys.exit(main())
