"""Run a grid of config overrides as separate training runs, then tabulate and plot.

  python scripts/sweep.py --config configs/mnist5k_classify.py:quick --root runs/sw \
      --grid data.few_shot_k=10,50,100 --grid seed=0,1,2 --parallel 2
  python scripts/sweep.py --config configs/completion.py:quick --root runs/completion
  python scripts/sweep.py --config configs/completion.py:quick --root runs/mine \
      --set data.name=folder:my_images --set data.image_size=28

Without --grid the runs come from the config file's get_sweep(arg). Each run
lives in ROOT/<name>; rerunning skips finished runs and resumes the others.
Writes ROOT/runs.csv, results.csv, results.md (mean ± std over --seed_axis,
grouped by the other axes) and ROOT/<metric>_vs_<axis>.png. Exits 1 if any
run failed, 2 on a bad override.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time


def _interrupt(signum, frame):
  """SIGTERM -> KeyboardInterrupt, so the runner stops (and checkpoints) its runs."""
  del frame
  raise KeyboardInterrupt(f"received signal {signum}")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", required=True, help="configs/NAME.py[:arg]")
  parser.add_argument("--root", required=True, help="directory holding one workdir per run")
  parser.add_argument("--grid", action="append", default=[],
                      help="field=v1,v2,... (repeatable; the product is swept)")
  parser.add_argument("--only", action="append", default=[],
                      help="field=v1,v2,... (repeatable): keep only the runs whose field "
                           "has one of these values, e.g. --only _arm=probe,finetune")
  parser.add_argument("--set", action="append", default=[], dest="sets",
                      help="field=value (repeatable): one override added to every run, e.g. "
                           "--set data.name=folder:my_images (prerequisites that train on the "
                           "run's data get the data.* ones too)")
  parser.add_argument("--parallel", type=int, default=None, help="runs at once (default 1)")
  parser.add_argument("--seed_axis", default=None, help="axis averaged over (default 'seed')")
  parser.add_argument("--group_by", default=None,
                      help="comma-separated grouping axes (default: all but the seed axis)")
  parser.add_argument("--metrics", default=None,
                      help="comma-separated metrics to tabulate (default: all numeric)")
  parser.add_argument("--plot_metric", default=None, help="metric to plot (default: first)")
  parser.add_argument("--x_axis", default=None, help="axis on the plot's x (default: "
                      "first numeric grouping axis)")
  parser.add_argument("--report_only", action="store_true",
                      help="only aggregate what has finished; launch nothing")
  args = parser.parse_args(argv)

  from research import config_lib, sweep  # pylint: disable=g-import-not-at-top
  try:
    options = {}
    if args.grid:
      runs = sweep.grid(dict(sweep.parse_grid_flag(g) for g in args.grid))
    else:
      runs, options = sweep.sweep_from_config(args.config)
    for text in args.sets:
      field, values = sweep.parse_grid_flag(text)
      if len(values) != 1:
        raise ValueError(f"--set {text!r}: one value expected (use --grid to sweep values)")
      runs = [{**r, field: values[0]} for r in runs]
    for field, values in (sweep.parse_grid_flag(o) for o in args.only):
      runs = [r for r in runs if r.get(field) in values]
      if not runs:
        raise ValueError(f"--only {field}={values}: no run of the sweep has these values")
    sweep.validate(config_lib.load(args.config), runs, args.root)
  except (config_lib.ConfigError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  pick = lambda name, default: (getattr(args, name) if getattr(args, name) is not None
                                else options.get(name, default))
  split = lambda v: v.split(",") if isinstance(v, str) else v
  parallel = pick("parallel", 1)
  print(f"[sweep] {len(runs)} runs of {args.config} under {args.root}, "
        f"{parallel} at once", flush=True)
  t0 = time.time()
  failed = []
  if not args.report_only:
    signal.signal(signal.SIGTERM, _interrupt)
    try:
      jobs = sweep.run_sweep(args.config, runs, args.root, parallel=parallel,
                             extra_flags=sweep.progress_flags(args.config))
    except KeyboardInterrupt as e:  # SIGINT, or SIGTERM via _interrupt
      print(f"[sweep] stopped ({e or 'interrupted'}) after {time.time() - t0:.0f} s; "
            f"rerun the same command to resume", file=sys.stderr, flush=True)
      return 75  # EX_TEMPFAIL, as scripts/train.py
    failed = [j for j in jobs if j.state in ("failed", "blocked")]
  out = sweep.report(runs, args.root, seed_axis=pick("seed_axis", "seed"),
                     group_by=split(pick("group_by", None)),
                     metrics=split(pick("metrics", None)),
                     plot_metric=pick("plot_metric", None), x_axis=pick("x_axis", None),
                     selection=options.get("select"))
  print(out["markdown"])
  print("\n".join(out["paths"]))
  print(f"[sweep] wall time {time.time() - t0:.0f} s", flush=True)
  if failed:
    print(f"[sweep] {len(failed)} run(s) failed or were blocked:", file=sys.stderr)
    for j in failed:
      print(f"  {j.name}: {j.state} (exit {j.returncode}); workdir {j.workdir}; "
            f"log {j.log_path}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  import _cli  # pylint: disable=g-import-not-at-top
  sys.exit(_cli.run(main))
