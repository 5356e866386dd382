"""Sweep results: collect results.json per run, aggregate over seeds (mean ± std),
select on validation, write CSV / markdown tables and plots."""
from __future__ import annotations

import csv
import json
import math
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from research.sweep.grid import Overrides, run_name


# ---------------------------------------------------------------- aggregation
def collect(runs: Sequence[Overrides], root: str) -> list[dict[str, Any]]:
  """One row per run: its overrides, 'name', and the scalar metrics of results.json.

  Runs without results.json get only their overrides and name (metrics absent).
  """
  rows = []
  for overrides in runs:
    name = run_name(overrides)
    row = {**overrides, "name": name}
    path = os.path.join(root, name, "results.json")
    if os.path.exists(path):
      with open(path) as f:
        results = json.load(f)
      for k, v in results.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
          row[k] = v
    rows.append(row)
  return rows


def _key(value: Any) -> Any:
  return json.dumps(value, sort_keys=True, default=str)


def aggregate(rows: Sequence[Mapping[str, Any]], group_by: Sequence[str],
              seed_axis: str, metrics: Sequence[str]) -> list[dict[str, Any]]:
  """Mean and sample standard deviation (ddof=1) of `metrics` over seeds, per group.

  Args:
    rows: one per run, {axis: value, ..., metric: float} (see `collect`);
      rows lacking a metric do not count towards that metric.
    group_by: axes whose values define a group (in order of first appearance).
    seed_axis: the axis averaged over (recorded as the group's seed list).
    metrics: names of numeric metrics.

  Returns:
    One dict per group: the group's axis values, 'n' (runs with all metrics),
    'seeds', and f'{m}_mean', f'{m}_std' (std is nan when fewer than 2 values).
  """
  groups: dict[tuple, list[Mapping[str, Any]]] = {}
  for row in rows:
    groups.setdefault(tuple(_key(row.get(a)) for a in group_by), []).append(row)
  out = []
  for members in groups.values():
    entry = {a: members[0].get(a) for a in group_by}
    complete = [r for r in members if all(m in r for m in metrics)]
    entry["n"] = len(complete)
    entry["seeds"] = [r.get(seed_axis) for r in members]
    for m in metrics:
      values = np.array([float(r[m]) for r in members if m in r], np.float64)
      entry[f"{m}_mean"] = float(values.mean()) if len(values) else math.nan
      entry[f"{m}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    out.append(entry)
  return out


def select(rows: Sequence[Mapping[str, Any]], label: str, axis: str,
           within: Sequence[str], by: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
  """Model selection as extra rows: per group of `within` values, the best run.

  For every combination of the `within` axes (e.g. k and seed), the run with
  the best `by` metrics (a list of [metric, 'max' | 'min'], later ones break
  ties) is copied into a new row whose `axis` is `label` and whose 'selected'
  is the chosen run's `axis` value; aggregating those rows gives the test
  metrics of "what a researcher picks on validation". Groups where no run has
  the first `by` metric yield nothing.
  """
  if not by:
    raise ValueError("sweep select: 'by' needs at least one [metric, 'max'|'min']")
  for metric, mode in by:
    if mode not in ("max", "min"):
      raise ValueError(f"sweep select: mode for {metric!r} must be 'max' or 'min', got {mode!r}")
  groups: dict[tuple, list[Mapping[str, Any]]] = {}
  for row in rows:
    if by[0][0] in row and row.get(axis) != label:
      groups.setdefault(tuple(_key(row.get(a)) for a in within), []).append(row)

  def score(row):  # smaller is better; a missing or nan metric ranks last
    out = []
    for metric, mode in by:
      value = float(row.get(metric, math.nan))
      out.append(math.inf if math.isnan(value) else -value if mode == "max" else value)
    return tuple(out)

  out = []
  for members in groups.values():
    best = min(members, key=score)  # min() keeps the first of equal scores
    out.append({**best, axis: label, "selected": best.get(axis),
                "name": f"{label}: {best.get('name', '')}"})
  return out


def write_csv(rows: Sequence[Mapping[str, Any]], path: str) -> str:
  columns: list[str] = []
  for row in rows:
    columns += [k for k in row if k not in columns]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    for row in rows:
      writer.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v)
                       for k, v in row.items()})
  return path


def _cell(value: Any) -> str:
  if isinstance(value, str):
    text = value if len(value) <= 40 else "…" + value[-39:]
    return text.replace("|", "\\|") or "''"
  return str(value)


def markdown_table(table: Sequence[Mapping[str, Any]], group_by: Sequence[str],
                   metrics: Sequence[str], digits: int = 4) -> str:
  """'| axis | ... | n | metric (mean ± std) |' rows; '± n/a' when n < 2."""
  header = [a.lstrip("_") for a in group_by] + ["n"] + [f"{m} (mean ± std)" for m in metrics]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for entry in table:
    cells = [_cell(entry[a]) for a in group_by] + [str(entry["n"])]
    for m in metrics:
      mean, std = entry[f"{m}_mean"], entry[f"{m}_std"]
      if math.isnan(mean):
        cells.append("—")
      else:
        cells.append(f"{mean:.{digits}f} ± " + ("n/a" if math.isnan(std)
                                                else f"{std:.{digits}f}"))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot(table: Sequence[Mapping[str, Any]], x_axis: str, metric: str,
         group_by: Sequence[str], path: str) -> str:
  """PNG of `metric` (mean, with ± std error bars) against `x_axis`, one line per group.

  Groups are the values of `group_by` other than `x_axis`.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  if x_axis not in group_by:
    raise ValueError(f"sweep plot: x axis {x_axis!r} must be one of the grouping axes "
                     f"{list(group_by)}")
  others = [a for a in group_by if a != x_axis]
  lines: dict[str, list[Mapping[str, Any]]] = {}
  for entry in table:
    label = ", ".join(f"{a.lstrip('_')}={_cell(entry[a])}" for a in others) or metric
    lines.setdefault(label, []).append(entry)
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  numeric = all(isinstance(e[x_axis], (int, float)) for e in table)
  categories = list(dict.fromkeys(_key(e[x_axis]) for e in table))
  for label, entries in lines.items():
    entries = sorted(entries, key=lambda e: e[x_axis] if numeric
                     else categories.index(_key(e[x_axis])))
    xs = [e[x_axis] if numeric else categories.index(_key(e[x_axis])) for e in entries]
    ys = [e[f"{metric}_mean"] for e in entries]
    errs = [0.0 if math.isnan(e[f"{metric}_std"]) else e[f"{metric}_std"] for e in entries]
    ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=label)
  if not numeric:
    ax.set_xticks(range(len(categories)))
    ax.set_xticklabels([json.loads(c) if c.startswith('"') else c for c in categories])
  elif all(e[x_axis] > 0 for e in table) and (
      max(e[x_axis] for e in table) / min(e[x_axis] for e in table) >= 8):
    ax.set_xscale("log")
    ax.set_xticks(sorted({e[x_axis] for e in table}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
  ax.set_xlabel(x_axis)
  ax.set_ylabel(f"{metric} (mean ± std over seeds)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def default_metrics(rows: Sequence[Mapping[str, Any]], axes: Iterable[str]) -> list[str]:
  """Numeric result keys present in any row, excluding axes, 'step' and 'name'."""
  skip = set(axes) | {"name", "step"}
  found: list[str] = []
  for row in rows:
    found += [k for k, v in row.items() if k not in skip and k not in found
              and isinstance(v, (int, float)) and not isinstance(v, bool)]
  return found


def report(runs: Sequence[Overrides], root: str, seed_axis: str,
           group_by: Sequence[str] | None = None, metrics: Sequence[str] | None = None,
           plot_metric: str | None = None, x_axis: str | None = None,
           selection: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Writes root/runs.csv (per run), results.csv and results.md (mean ± std), plot PNG.

  `selection`: keyword arguments of `select` (label, axis, within, by); its
  rows are aggregated like runs, and the markdown lists what it chose.
  Returns {'table': aggregated rows, 'markdown': str, 'paths': [...]}.
  """
  axes = list(dict.fromkeys(k for r in runs for k in r))
  if group_by is None:
    group_by = [a for a in axes if a != seed_axis]
  rows = collect(runs, root)
  metrics = list(metrics) if metrics else default_metrics(rows, axes)
  chosen = select(rows, **selection) if selection else []
  rows = rows + chosen
  table = aggregate(rows, group_by, seed_axis, metrics)
  paths = [write_csv(rows, os.path.join(root, "runs.csv")),
           write_csv([{k: v for k, v in e.items()} for e in table],
                     os.path.join(root, "results.csv"))]
  md = markdown_table(table, group_by, metrics)
  if chosen:
    within = selection["within"]
    picks = "; ".join(", ".join(f"{a.split('.')[-1]}={_cell(r.get(a))}" for a in within)
                      + f": {r['selected']}" for r in chosen)
    md += (f"\n'{selection['label']}' picks, per {', '.join(within)}, the "
           f"{selection['axis'].lstrip('_')} with the best "
           f"{' then '.join(f'{m} ({mode})' for m, mode in selection['by'])}: {picks}.\n")
  with open(os.path.join(root, "results.md"), "w") as f:
    f.write(f"Mean ± sample std (ddof=1) over `{seed_axis}`; n = runs per row.\n\n" + md)
  paths.append(os.path.join(root, "results.md"))
  plot_metric = plot_metric or (metrics[0] if metrics else None)
  if x_axis is None:
    numeric = [a for a in group_by
               if all(isinstance(r.get(a), (int, float)) for r in runs)]
    x_axis = numeric[0] if numeric else (group_by[0] if group_by else None)
  have = [e for e in table if not math.isnan(e.get(f"{plot_metric}_mean", math.nan))]
  if plot_metric and x_axis and have:
    paths.append(plot(have, x_axis, plot_metric, group_by,
                      os.path.join(root, f"{plot_metric}_vs_{x_axis.lstrip('_')}.png")))
  return {"table": table, "markdown": md, "paths": paths, "metrics": metrics}
