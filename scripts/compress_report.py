"""Prune and quantize a trained classifier; print and write a size/accuracy table.

  python scripts/compress_report.py --workdir runs/cnn [--finetune_steps 300]
  python scripts/compress_report.py --workdir runs/s0 runs/s1 runs/s2 --out runs/compress

Reads the run's config.json and newest checkpoint (written by scripts/train.py),
evaluates the float model, one-shot magnitude pruning at --sparsities and the
--n_m patterns (fine-tuned with masks fixed if --finetune_steps > 0), int8/int4
PTQ with min-max and percentile calibration run on integer weights, and QAT
(if --finetune_steps > 0). Writes <workdir>/compress/results.{md,csv,json} and
accuracy_vs_sparsity.png (or under --out). Evaluates the run's main eval split
and, when the run held out a validation split (data.few_shot_val), that too.
With several workdirs (e.g. one per training seed) each gets its own table
under --out/<run name>/ and --out/summary.{md,csv} holds mean ± std per row.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys


def _compress_run(workdir: str, args) -> list:
  """The report rows of one finished run (the float model and every compressed one)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from research import trainer  # pylint: disable=g-import-not-at-top
  from research.compress import report  # pylint: disable=g-import-not-at-top
  from research.tasks.base import DataContext  # pylint: disable=g-import-not-at-top

  task, state = trainer.load_state(workdir)
  if not hasattr(task, "model") or not hasattr(task, "inputs"):
    raise ValueError(f"--workdir {workdir!r}: task {task.config.task!r} is not a classifier")
  variables = {"params": state.params}
  if getattr(state, "batch_stats", None):
    variables["batch_stats"] = state.batch_stats

  def apply_fn(v, x):
    return task.model.apply(v, x, train=False)

  config = task.config
  ctx = DataContext(global_batch_size=config.batch_size, seed=config.seed)
  eval_sets = task.eval_data(ctx)
  if callable(eval_sets):
    eval_sets = {"": eval_sets}
  to_x = jax.jit(task.inputs)

  def batches_of(name):
    return lambda: [(to_x(b["image"]), b["label"], b["mask"]) for b in eval_sets[name]()]

  def train_batches():
    it = task.train_data(ctx)
    while True:
      b = next(it)
      yield to_x(b["image"]), b["label"], np.ones(len(b["label"]), np.float32)

  calib_it = train_batches()
  calib = [next(calib_it)[0] for _ in range(args.calibration_batches)]
  return report.compress_and_evaluate(
      apply_fn, variables, batches_of(""), calib, model=config.model.name,
      val_batches=batches_of("val") if "val" in eval_sets else None,
      sparsities=[float(s) for s in args.sparsities.split(",") if s],
      n_m=[p for p in args.n_m.split(",") if p],
      bits=[int(b) for b in args.bits.split(",") if b],
      train_batches=train_batches, finetune_steps=args.finetune_steps, lr=args.lr)


def _write_run(rows, out: str) -> None:
  from research.compress import report  # pylint: disable=g-import-not-at-top
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


def _write_summary(summary, out: str) -> None:
  from research.compress import report  # pylint: disable=g-import-not-at-top
  os.makedirs(out, exist_ok=True)
  md = report.summary_markdown(summary)
  print(md)
  with open(os.path.join(out, "summary.md"), "w") as f:
    f.write(md + "\n")
  with open(os.path.join(out, "summary.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(summary[0]))
    w.writeheader()
    w.writerows(summary)
  print(f"wrote {out}/summary.{{md,csv}}")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, nargs="+",
                      help="one or more finished scripts/train.py runs (e.g. one per seed)")
  parser.add_argument("--out", default="",
                      help="default: <workdir>/compress; required with several workdirs")
  parser.add_argument("--sparsities", default="0.5,0.75,0.9")
  parser.add_argument("--n_m", default="2:4")
  parser.add_argument("--bits", default="8,4")
  parser.add_argument("--calibration_batches", type=int, default=4)
  parser.add_argument("--finetune_steps", type=int, default=0)
  parser.add_argument("--lr", type=float, default=1e-4)
  args = parser.parse_args(argv)

  if len(args.workdir) > 1 and not args.out:
    print("error: --out is required with several --workdir runs", file=sys.stderr)
    return 2
  for w in args.workdir:
    if not os.path.isdir(os.path.join(w, "checkpoints")):
      print(f"error: --workdir {w!r} has no checkpoints/ "
            "(expected a finished scripts/train.py run)", file=sys.stderr)
      return 2
  if args.finetune_steps < 0 or args.calibration_batches < 1:
    print("error: --finetune_steps must be >= 0 and --calibration_batches >= 1, got "
          f"{args.finetune_steps} and {args.calibration_batches}", file=sys.stderr)
    return 2

  from research.compress import report  # pylint: disable=g-import-not-at-top
  runs = []
  for w in args.workdir:
    try:
      rows = _compress_run(w, args)
    except ValueError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    out = (os.path.join(args.out, os.path.basename(os.path.normpath(w)))
           if len(args.workdir) > 1 else args.out or os.path.join(w, "compress"))
    _write_run(rows, out)
    runs.append(rows)
  if len(runs) > 1:
    _write_summary(report.summarize(runs), args.out)
  return 0


if __name__ == "__main__":
  import _cli  # pylint: disable=g-import-not-at-top
  sys.exit(_cli.run(main))
