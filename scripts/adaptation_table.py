"""Tabulates domain-adaptation sweeps into one results.csv, a markdown table and a bar plot.

  python scripts/adaptation_table.py --out research/docs/adaptation \
      --sweep "mnist5k->mnistm5k=runs/adapt_mnistm" \
      --sweep "mnist5k->uci_digits=runs/adapt_uci" \
      --sweep "mnist5k->uci_digits=runs/adapt_uci_frame:+ framing"

Each --sweep is PAIR=ROOT[:SUFFIX]: every finished run under ROOT (or the run
directories ROOT matches when it is a glob pattern) is one row of its method
(adapt.method and seed from the run's config.json; SUFFIX appended to the
method name). Final-step
numbers only. Writes OUT/results.csv with pair, method, n,
target_accuracy_mean/std, source_accuracy_mean/std, target_val_accuracy_mean,
gain_over_source_only, gap_closed (= (method - source_only) / (oracle -
source_only), target means, same pair), per-seed target accuracies (seeds in
order); OUT/results.md; OUT/target_accuracy.png.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import os

import numpy as np


def _runs(root: str) -> list[dict]:
  """Finished runs under ROOT (its run directories), or the run directories a glob
  pattern ROOT names (e.g. 'runs/budget/num_steps=1200,*'). Method and seed come
  from each run's config.json (adapt.method, seed), else from its directory name."""
  pattern = root if glob.has_magic(root) else os.path.join(root, "*")
  rows = []
  for path in sorted(glob.glob(os.path.join(pattern, "results.json"))):
    name = os.path.basename(os.path.dirname(path))
    fields = dict(p.split("=", 1) for p in name.split(",") if "=" in p)
    config_path = os.path.join(os.path.dirname(path), "config.json")
    if os.path.exists(config_path):
      with open(config_path) as f:
        config = json.load(f)
      fields = {"method": config.get("adapt", {}).get("method", fields.get("method", "?")),
                "seed": config.get("seed", fields.get("seed", 0))}
    with open(path) as f:
      res = json.load(f)
    rows.append({"method": str(fields.get("method", "?")).replace("-", "_"),
                 "seed": int(fields.get("seed", 0)), "accuracy": res["accuracy"],
                 "source_accuracy": res.get("source_accuracy", np.nan),
                 "target_val_accuracy": res.get("target_val_accuracy", np.nan)})
  return rows


# Row order within a pair: the references first, then the methods (any other name last).
_ORDER = ("source_only", "oracle", "dann", "cdan", "cdan_e", "coral", "mmd", "importance")


def _std(x):
  return float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")


def table(sweeps: list[tuple[str, str, str]]) -> list[dict]:
  """One row per (pair, method) over the given (pair, root, suffix) sweeps."""
  out = []
  for pair, root, suffix in sweeps:
    groups: dict[str, list[dict]] = {}
    for r in _runs(root):
      groups.setdefault(r["method"] + suffix, []).append(r)
    rank = lambda m: (_ORDER.index(m[:len(m) - len(suffix)])
                      if m[:len(m) - len(suffix)] in _ORDER else len(_ORDER), m)
    for method, rs in sorted(groups.items(), key=lambda kv: rank(kv[0])):
      rs = sorted(rs, key=lambda r: r["seed"])
      acc = [r["accuracy"] for r in rs]
      out.append({"pair": pair, "method": method, "n": len(rs),
                  "target_accuracy_mean": float(np.mean(acc)), "target_accuracy_std": _std(acc),
                  "source_accuracy_mean": float(np.mean([r["source_accuracy"] for r in rs])),
                  "source_accuracy_std": _std([r["source_accuracy"] for r in rs]),
                  "target_val_accuracy_mean": float(np.mean(
                      [r["target_val_accuracy"] for r in rs])),
                  "seeds": " ".join(str(r["seed"]) for r in rs),
                  "target_accuracy_per_seed": " ".join(f"{a:.4f}" for a in acc)})
  for row in out:
    same = {r["method"]: r["target_accuracy_mean"] for r in out if r["pair"] == row["pair"]}
    base, oracle = same.get("source_only", np.nan), same.get("oracle", np.nan)
    row["gain_over_source_only"] = row["target_accuracy_mean"] - base
    row["gap_closed"] = ((row["target_accuracy_mean"] - base) / (oracle - base)
                         if oracle - base > 0 else float("nan"))
  return out


def _fmt(x: float) -> str:
  return "—" if np.isnan(x) else f"{x:.2f}"


def markdown(rows: list[dict]) -> str:
  lines = ["| pair | method | n | target acc. (mean ± std) | source acc. | target_val acc. "
           "| gain over source-only | gap closed | target acc. per seed |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    std = r["target_accuracy_std"]
    lines.append(f"| {r['pair']} | {r['method']} | {r['n']} | {r['target_accuracy_mean']:.3f}"
                 f"{'' if np.isnan(std) else f' ± {std:.3f}'} | {r['source_accuracy_mean']:.3f} | "
                 f"{r['target_val_accuracy_mean']:.3f} | {r['gain_over_source_only']:+.3f} | "
                 f"{_fmt(r['gap_closed'])} | {r['target_accuracy_per_seed']} |")
  return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  pairs = list(dict.fromkeys(r["pair"] for r in rows))
  fig, axes = plt.subplots(1, len(pairs), figsize=(6 * len(pairs), 4), squeeze=False)
  for ax, pair in zip(axes[0], pairs):
    rs = [r for r in rows if r["pair"] == pair]
    x = np.arange(len(rs))
    ax.bar(x, [r["target_accuracy_mean"] for r in rs],
           yerr=[np.nan_to_num(r["target_accuracy_std"]) for r in rs], capsize=3,
           color=["gray" if r["method"] in ("source_only", "oracle") else "C0" for r in rs])
    ax.set_xticks(x, [r["method"] for r in rs], rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("target test accuracy (final step)")
    ax.set_title(f"{pair} (mean ± std over seeds)")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sweep", action="append", required=True,
                      help="PAIR=ROOT[:SUFFIX]; ROOT a sweep root or a glob of run directories")
  parser.add_argument("--out", required=True)
  args = parser.parse_args(argv)
  sweeps = []
  for s in args.sweep:
    pair, _, rest = s.partition("=")
    root, _, suffix = rest.partition(":")
    exists = glob.glob(root) if glob.has_magic(root) else os.path.isdir(root)
    if not pair or not exists:
      raise SystemExit(f"--sweep {s!r}: expected PAIR=ROOT[:SUFFIX] with an existing ROOT "
                       f"(or a glob pattern matching run directories)")
    sweeps.append((pair, root, suffix))
  rows = table(sweeps)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "results.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
  md = markdown(rows)
  with open(os.path.join(args.out, "results.md"), "w") as f:
    f.write(md)
  plot(rows, os.path.join(args.out, "target_accuracy.png"))
  print(md)
  return 0


if __name__ == "__main__":
  import _cli  # pylint: disable=g-import-not-at-top
  raise SystemExit(_cli.run(main))
