"""Paired comparison of the completion ablation's arms against the baseline.

  python scripts/completion_report.py --root runs/completion_full [--metric accuracy]
  python scripts/completion_report.py --root runs/completion_merged \
      --config configs/completion.py:full \
      --from_csv research/docs/completion/runs.csv --from_csv runs/completion_new/runs.csv

Reads ROOT/runs.csv (written by scripts/sweep.py, including the 'best (val)'
selection rows) and, for every arm and k, the per-seed difference to the
baseline run of the same (k, seed). The same seed means the same k-shot
subset and validation split, so the paired difference removes the
subset-to-subset variance that dominates the unpaired std. Prints and writes
ROOT/paired.md: mean ± sample std of the arm, of the difference, and how many
seeds improved. An arm 'helps' here when the mean difference exceeds the
std of the differences (and every seed improved).

With --from_csv (and --config), ROOT is first assembled from the runs.csv of
earlier sweeps (e.g. the published table plus a sweep of new arms run with
`scripts/sweep.py --only _arm=...`): every row naming a run of the config's
current sweep becomes ROOT/<run name>/results.json (its metric columns; the
later CSV wins), rows of runs the sweep no longer has are dropped, and
ROOT/runs.csv, results.csv, results.md and the plot are rewritten by the
sweep's own report (selection rows recomputed), as `scripts/sweep.py
--report_only` would on one root holding every run.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys

import numpy as np

from research import sweep


def paired_table(rows, metric: str, arm_key: str = "_arm", k_key: str = "data.few_shot_k",
                 seed_key: str = "seed", baseline: str = "base") -> list[dict]:
  """One entry per (arm, k): arm mean/std, paired difference mean/std, wins, n."""
  values: dict[tuple, dict] = {}
  for row in rows:
    if row.get(metric, "") in ("", None):
      continue
    key = (row[arm_key], int(float(row[k_key])))
    values.setdefault(key, {})[int(float(row[seed_key]))] = float(row[metric])
  out = []
  for (arm, k), by_seed in values.items():
    base = values.get((baseline, k), {})
    seeds = sorted(set(by_seed) & set(base))
    arm_v = np.array([by_seed[s] for s in sorted(by_seed)])
    diff = np.array([by_seed[s] - base[s] for s in seeds])
    std = lambda a: float(a.std(ddof=1)) if len(a) > 1 else math.nan
    out.append(dict(arm=arm, k=k, n=len(arm_v), mean=float(arm_v.mean()), std=std(arm_v),
                    diff_mean=float(diff.mean()) if len(diff) else math.nan,
                    diff_std=std(diff), wins=int(np.sum(diff > 0)), paired=len(diff)))
  order = list(dict.fromkeys(r[arm_key] for r in rows))
  return sorted(out, key=lambda e: (e["k"], order.index(e["arm"])))


def verdict(e: dict, baseline: str = "base") -> str:
  if e["arm"] == baseline or not e["paired"]:
    return ""
  d, s = e["diff_mean"], e["diff_std"]
  if math.isnan(s):
    return "one seed"
  if abs(d) > s and e["wins"] in (0, e["paired"]):
    return "helps" if d > 0 else "hurts"
  return "within spread"


def markdown(table, metric: str) -> str:
  fmt = lambda m, s: f"{m:.4f} ± " + ("n/a" if math.isnan(s) else f"{s:.4f}")
  lines = [f"| k | arm | {metric} (mean ± std) | minus base, paired (mean ± std) | seeds better "
           f"| verdict |", "|---|---|---|---|---|---|"]
  for e in table:
    diff = "—" if e["arm"] == "base" else fmt(e["diff_mean"], e["diff_std"])
    wins = "—" if e["arm"] == "base" else f"{e['wins']}/{e['paired']}"
    lines.append(f"| {e['k']} | {e['arm']} | {fmt(e['mean'], e['std'])} | {diff} | {wins} "
                 f"| {verdict(e)} |")
  return "\n".join(lines) + "\n"


def _number(text: str):
  try:
    return int(text)
  except ValueError:
    return float(text)


def restore_root(root: str, config_spec: str, csv_paths) -> dict:
  """Writes ROOT/<name>/results.json for the config's runs found in the CSVs;
  reruns the sweep report over ROOT. Returns {'restored', 'dropped', 'missing'}."""
  runs, options = sweep.sweep_from_config(config_spec)
  axes = {k for r in runs for k in r} | {"name", "selected"}
  names = {sweep.run_name(r) for r in runs}
  found, dropped = {}, set()
  for path in csv_paths:
    with open(path) as f:
      for row in csv.DictReader(f):
        if row.get("selected"):  # a selection row: recomputed below
          continue
        if row["name"] not in names:
          dropped.add(row.get("_arm", row["name"]))
          continue
        metrics = {}
        for k, v in row.items():
          if k in axes or v in ("", None):
            continue
          try:
            metrics[k] = _number(v)
          except ValueError:
            continue
        found[row["name"]] = metrics  # a later CSV replaces an earlier one
  for name, metrics in found.items():
    os.makedirs(os.path.join(root, name), exist_ok=True)
    with open(os.path.join(root, name, "results.json"), "w") as f:
      json.dump(metrics, f, indent=1)
  split = lambda v: v.split(",") if isinstance(v, str) else v
  sweep.report(runs, root, seed_axis=options.get("seed_axis", "seed"),
               group_by=split(options.get("group_by")), metrics=split(options.get("metrics")),
               plot_metric=options.get("plot_metric"), x_axis=options.get("x_axis"),
               selection=options.get("select"))
  return {"restored": len(found), "dropped": sorted(dropped),
          "missing": sorted(names - set(found))}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--root", required=True)
  parser.add_argument("--metric", default="accuracy")
  parser.add_argument("--config", default="", help="configs/NAME.py:arg (with --from_csv)")
  parser.add_argument("--from_csv", action="append", default=[],
                      help="runs.csv of an earlier sweep to assemble ROOT from (repeatable)")
  args = parser.parse_args(argv)
  if args.from_csv:
    if not args.config:
      parser.error("--from_csv needs --config (whose sweep names the runs)")
    os.makedirs(args.root, exist_ok=True)
    got = restore_root(args.root, args.config, args.from_csv)
    print(f"restored {got['restored']} runs into {args.root}; dropped arms no longer in "
          f"the sweep: {got['dropped'] or 'none'}; runs without results: "
          f"{len(got['missing'])}", file=sys.stderr)
  path = os.path.join(args.root, "runs.csv")
  if not os.path.exists(path):
    print(f"error: no {path}; run scripts/sweep.py first", file=sys.stderr)
    return 2
  with open(path) as f:
    rows = list(csv.DictReader(f))
  if rows and args.metric not in rows[0]:
    print(f"error: metric {args.metric!r} not in {path}; columns: {sorted(rows[0])}",
          file=sys.stderr)
    return 2
  md = markdown(paired_table(rows, args.metric), args.metric)
  with open(os.path.join(args.root, "paired.md"), "w") as f:
    f.write(md)
  print(md)
  return 0


if __name__ == "__main__":
  import _cli  # pylint: disable=g-import-not-at-top
  sys.exit(_cli.run(main))
