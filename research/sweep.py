"""Sweeps: a grid of config overrides, each a `scripts/train.py` run in its own workdir.

A sweep is a list of runs; a run is an ordered dict of overrides
{'data.few_shot_k': 10, 'seed': 0, ...}. Keys starting with '_' are labels
('_arm': 'vae'): they name and group runs but are not config fields. Values
may hold '{root}', replaced by the sweep's root directory.

  runs = sweep.grid({'data.few_shot_k': [10, 50], 'seed': [0, 1, 2]})
  sweep.validate(base_config, runs)           # ConfigError before anything runs
  status = sweep.run_sweep('configs/x.py', runs, root, parallel=2)
  table = sweep.aggregate(sweep.collect(runs, root), group_by=['data.few_shot_k'],
                          seed_axis='seed', metrics=['accuracy'])

Each run lives in `root/<name>`, the name derived from its overrides (stable
across invocations). A run whose `results.json` exists is skipped; any other
is (re)launched, and the trainer resumes it from its last checkpoint. Runs may
need prerequisites (e.g. a generator trained once per k-shot subset): a
config file's optional `get_prerequisites(overrides) -> [Prerequisite-like
dicts]` names them; each is run once, before the runs that need it, and is
skipped when its output file exists. Failed runs (their log tail and
workdir) are reported and do not stop the others.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from research import config_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_SCRIPT = os.path.join(REPO_ROOT, "scripts", "train.py")
STATUS_FILE = "sweep_status.json"
RUN_LOG = "sweep.log"

Overrides = Mapping[str, Any]


# ---------------------------------------------------------------- defining runs
def parse_grid_flag(text: str) -> tuple[str, list[Any]]:
  """'data.few_shot_k=10,50,100' -> ('data.few_shot_k', [10, 50, 100]).

  Values are split on commas outside brackets and quotes and parsed like
  command-line overrides ('1e-3' -> 0.001, 'true' -> True, other text -> str).
  """
  field, sep, values = text.partition("=")
  field = field.strip().removeprefix("config.")
  if not sep or not field or not values:
    raise ValueError(f"--grid {text!r}: expected field=value1,value2,...")
  items, depth, quote, current = [], 0, "", ""
  for ch in values:
    if quote:
      quote = "" if ch == quote else quote
    elif ch in "'\"":
      quote = ch
    elif ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif ch == "," and depth == 0:
      items.append(current)
      current = ""
      continue
    current += ch
  items.append(current)
  return field, [config_lib.parse_value(v.strip()) for v in items]


def grid(axes: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
  """The Cartesian product of `axes` ({field: values}) as a list of override dicts.

  The first axis varies slowest, as in nested for-loops in the given order.
  """
  for field, values in axes.items():
    if not values:
      raise ValueError(f"sweep axis {field!r} has no values")
  fields = list(axes)
  return [dict(zip(fields, combo)) for combo in itertools.product(*axes.values())]


def _short(value: Any) -> str:
  text = json.dumps(value) if not isinstance(value, str) else value
  safe = re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-")
  if len(safe) > 24 or (isinstance(value, str) and "/" in value):
    return "h" + hashlib.sha1(text.encode()).hexdigest()[:8]
  return safe or "empty"


def run_name(overrides: Overrides) -> str:
  """A stable, filesystem-safe workdir name, e.g. 'arm=vae,few_shot_k=10,seed=0'.

  Each key contributes its last dotted component (the full path when two keys
  share one); long values or paths are replaced by a short hash of the value.
  """
  lasts = [k.lstrip("_").split(".")[-1] for k in overrides]
  parts = []
  for key, last in zip(overrides, lasts):
    label = last if lasts.count(last) == 1 else key.lstrip("_")
    parts.append(f"{label}={_short(overrides[key])}")
  name = ",".join(parts) or "default"
  if len(name) > 150:
    digest = hashlib.sha1(json.dumps(list(overrides.items()), default=str).encode())
    name = name[:140] + "-" + digest.hexdigest()[:8]
  return name


def config_overrides(overrides: Overrides, root: str) -> dict[str, Any]:
  """The config-field overrides of a run ('_labels' dropped, '{root}' filled in)."""
  return {k: (v.replace("{root}", root) if isinstance(v, str) else v)
          for k, v in overrides.items() if not k.startswith("_")}


def validate(base_config, runs: Iterable[Overrides], root: str = "") -> None:
  """Raises config_lib.ConfigError if any run names a nonexistent field or bad value."""
  for overrides in runs:
    config_lib.apply_overrides(base_config, config_overrides(overrides, root))


def override_flags(overrides: Overrides) -> list[str]:
  """['--config.a.b=1', ...] that scripts/train.py parses back to the same values."""
  flags = []
  for field, value in overrides.items():
    if isinstance(value, bool):
      text = "true" if value else "false"
    elif value is None:
      text = "none"
    elif isinstance(value, str):
      text = value
    else:
      text = repr(value)
    flags.append(f"--config.{field}={text}")
  return flags


# ---------------------------------------------------------------- config files
def load_module(path: str):
  """The Python module of a config file (for get_sweep / get_prerequisites)."""
  path = path.partition(":")[0]
  return config_lib.load_module(
      path, f"_sweep_config_{os.path.basename(path)[:-3]}")


def sweep_from_config(spec: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """(runs, options) from the config file's get_sweep(arg) [and sweep_options(arg)]."""
  path, _, arg = spec.partition(":")
  module = load_module(path)
  if not hasattr(module, "get_sweep"):
    raise config_lib.ConfigError(
        f"config file {path!r} has no get_sweep(arg); pass --grid field=v1,v2 instead")
  runs = [dict(r) for r in module.get_sweep(arg)]
  options = dict(module.sweep_options(arg)) if hasattr(module, "sweep_options") else {}
  return runs, options


# ---------------------------------------------------------------- jobs
@dataclasses.dataclass
class Job:
  """One subprocess: a training run or a prerequisite."""
  name: str
  command: list[str]
  workdir: str
  done_file: str
  requires: list[str] = dataclasses.field(default_factory=list)
  is_run: bool = True
  state: str = "pending"  # pending | done | skipped | running | failed | blocked
  pid: int | None = None
  start: float | None = None
  end: float | None = None
  returncode: int | None = None
  process: Any = None
  log: Any = None

  @property
  def log_path(self) -> str:
    return os.path.join(self.workdir, RUN_LOG)

  def summary(self) -> dict[str, Any]:
    return {"state": self.state, "pid": self.pid, "start": self.start, "end": self.end,
            "returncode": self.returncode, "workdir": self.workdir, "is_run": self.is_run}


def prerequisite_jobs(config_path: str, runs: Sequence[Overrides], root: str,
                      python: str) -> tuple[list[Job], list[list[str]]]:
  """Prerequisite jobs (deduplicated by name) and, per run, the names it needs."""
  module = load_module(config_path)
  get = getattr(module, "get_prerequisites", None)
  jobs: dict[str, Job] = {}
  needs = []
  for overrides in runs:
    names = []
    for p in (get(dict(overrides)) if get else []):
      name = p["name"]
      workdir = os.path.join(root, name)
      fill = lambda s, w=workdir: str(s).replace("{root}", root).replace("{dir}", w)
      command = [python] + [fill(a) for a in p["command"]]
      if name in jobs and jobs[name].command != command:
        raise ValueError(f"prerequisite {name!r} is defined twice with different "
                         f"commands:\n  {jobs[name].command}\n  {command}")
      jobs.setdefault(name, Job(name, command, workdir, fill(p["output"]), is_run=False))
      names.append(name)
    needs.append(names)
  return list(jobs.values()), needs


def make_jobs(config_spec: str, runs: Sequence[Overrides], root: str,
              train_command: Sequence[str] | None = None,
              extra_flags: Sequence[str] = ()) -> list[Job]:
  """Prerequisite jobs, then one job per run (in the order of `runs`)."""
  root = os.path.abspath(root)
  names = [run_name(r) for r in runs]
  dupes = sorted({n for n in names if names.count(n) > 1})
  if dupes:
    raise ValueError(f"sweep: several runs share the name(s) {dupes}; every run "
                     f"needs distinct overrides")
  python = sys.executable
  train_command = list(train_command or [python, TRAIN_SCRIPT])
  prereqs, needs = prerequisite_jobs(config_spec, runs, root, python)
  jobs = list(prereqs)
  for overrides, name, req in zip(runs, names, needs):
    workdir = os.path.join(root, name)
    command = (train_command + ["--config", config_spec, "--workdir", workdir]
               + override_flags(config_overrides(overrides, root)) + list(extra_flags))
    jobs.append(Job(name, command, workdir, os.path.join(workdir, "results.json"),
                    requires=req))
  return jobs


# ---------------------------------------------------------------- running
def _fmt_time(seconds: float | None) -> str:
  if seconds is None or not math.isfinite(seconds):
    return "?"
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Display:
  """Progress lines: done / running / left / failed, elapsed and ETA."""

  def __init__(self, jobs: Sequence[Job], parallel: int, stream=None, interval: float = 10.0):
    self.jobs, self.parallel = jobs, parallel
    self.stream = stream or sys.stdout
    self.interval = interval
    self.t0 = time.time()
    self.last_line, self.last_time = "", 0.0

  def line(self) -> str:
    count = lambda *s: sum(j.state in s for j in self.jobs)
    done, running = count("done", "skipped"), count("running")
    failed, left = count("failed", "blocked"), count("pending")
    durations = [j.end - j.start for j in self.jobs
                 if j.state == "done" and j.start is not None and j.end is not None]
    eta = None
    if durations:
      mean = float(np.mean(durations))
      remaining = left * mean + sum(max(mean - (time.time() - j.start), 0.0)
                                    for j in self.jobs if j.state == "running")
      eta = remaining / max(1, min(self.parallel, left + running))
    elif not left and not running:
      eta = 0.0
    names = ", ".join(j.name for j in self.jobs if j.state == "running")
    return (f"[sweep] {done}/{len(self.jobs)} done · {running} running · {left} left"
            f" · {failed} failed · elapsed {_fmt_time(time.time() - self.t0)}"
            f" · ETA {_fmt_time(eta)}" + (f" · now: {names}" if names else ""))

  def update(self, force: bool = False) -> None:
    line = self.line()
    now = time.time()
    changed = line.split(" · elapsed")[0] != self.last_line.split(" · elapsed")[0]
    if force or changed or now - self.last_time >= self.interval:
      print(line, file=self.stream, flush=True)
      self.last_line, self.last_time = line, now


def _write_status(root: str, jobs: Sequence[Job]) -> None:
  path = os.path.join(root, STATUS_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump({j.name: j.summary() for j in jobs}, f, indent=1)
  os.replace(path + ".tmp", path)


def log_tail(path: str, lines: int = 20) -> str:
  try:
    with open(path, errors="replace") as f:
      return "".join(f.readlines()[-lines:])
  except OSError:
    return "(no log)"


def _launch(job: Job, env: Mapping[str, str] | None) -> None:
  os.makedirs(job.workdir, exist_ok=True)
  job.log = open(job.log_path, "a")
  job.log.write(f"\n=== sweep launch {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                f"{' '.join(job.command)}\n")
  job.log.flush()
  job.process = subprocess.Popen(job.command, stdout=job.log, stderr=subprocess.STDOUT,
                                 env=dict(env) if env is not None else None,
                                 start_new_session=True)
  job.pid, job.start, job.state = job.process.pid, time.time(), "running"


def _reap(job: Job) -> bool:
  rc = job.process.poll()
  if rc is None:
    return False
  job.returncode, job.end = rc, time.time()
  job.log.close()
  job.process = job.log = None
  job.state = "done" if rc == 0 and os.path.exists(job.done_file) else "failed"
  return True


def _stop_all(jobs: Sequence[Job], timeout: float = 60.0) -> None:
  """SIGTERM to every running job (the trainer checkpoints and exits), then wait."""
  running = [j for j in jobs if j.state == "running"]
  for j in running:
    with _suppress():
      os.killpg(j.pid, signal.SIGTERM)
  deadline = time.time() + timeout
  for j in running:
    try:
      j.process.wait(max(0.1, deadline - time.time()))
    except subprocess.TimeoutExpired:
      with _suppress():
        os.killpg(j.pid, signal.SIGKILL)
      j.process.wait()
    _reap(j)


class _suppress:
  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return exc[0] is not None and issubclass(exc[0], ProcessLookupError)


def run_jobs(jobs: Sequence[Job], root: str, parallel: int = 1,
             env: Mapping[str, str] | None = None, stream=None,
             poll: float = 0.2, display_interval: float = 10.0) -> list[Job]:
  """Runs the pending jobs, up to `parallel` at once, respecting `requires`.

  Jobs whose `done_file` exists are skipped. A failed job does not stop the
  others, but jobs requiring it are 'blocked'. Returns the jobs with final states.
  """
  if parallel < 1:
    raise ValueError(f"sweep: parallel must be >= 1, got {parallel}")
  stream = stream or sys.stdout
  os.makedirs(root, exist_ok=True)
  by_name = {j.name: j for j in jobs}
  for j in jobs:
    missing = [r for r in j.requires if r not in by_name]
    if missing:
      raise ValueError(f"sweep job {j.name!r} requires unknown job(s) {missing}")
    if os.path.exists(j.done_file):
      j.state = "skipped"
  display = Display(jobs, parallel, stream, display_interval)
  display.update(force=True)
  _write_status(root, jobs)
  try:
    while True:
      changed = False
      for j in jobs:
        if j.state == "running" and _reap(j):
          changed = True
          if j.state == "failed":
            print(f"[sweep] FAILED {j.name} (exit code {j.returncode}); workdir "
                  f"{j.workdir}; last lines of {j.log_path}:\n{log_tail(j.log_path)}",
                  file=stream, flush=True)
      for j in jobs:
        if j.state == "pending" and any(by_name[r].state in ("failed", "blocked")
                                        for r in j.requires):
          j.state, changed = "blocked", True
          print(f"[sweep] BLOCKED {j.name}: a prerequisite failed "
                f"({', '.join(j.requires)})", file=stream, flush=True)
      running = sum(j.state == "running" for j in jobs)
      for j in jobs:
        if running >= parallel:
          break
        if j.state == "pending" and all(by_name[r].state in ("done", "skipped")
                                        for r in j.requires):
          _launch(j, env)
          running += 1
          changed = True
      if changed:
        _write_status(root, jobs)
      display.update()
      if not any(j.state in ("pending", "running") for j in jobs):
        break
      time.sleep(poll)
  except BaseException:
    print("[sweep] interrupted: stopping running jobs (they checkpoint and can "
          "be resumed by rerunning the sweep)", file=stream, flush=True)
    _stop_all(jobs)
    _write_status(root, jobs)
    raise
  display.update(force=True)
  _write_status(root, jobs)
  return list(jobs)


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


# ---------------------------------------------------------------- one call
def run_sweep(config_spec: str, runs: Sequence[Overrides], root: str, parallel: int = 1,
              env: Mapping[str, str] | None = None, stream=None,
              train_command: Sequence[str] | None = None,
              extra_flags: Sequence[str] = (), display_interval: float = 10.0,
              ) -> list[Job]:
  """Validates every run's overrides (ConfigError before launching), then runs them."""
  root = os.path.abspath(root)
  validate(config_lib.load(config_spec), runs, root)
  jobs = make_jobs(config_spec, runs, root, train_command, extra_flags)
  return run_jobs(jobs, root, parallel, env, stream, display_interval=display_interval)


def progress_flags(config_spec: str) -> list[str]:
  """['--config.progress=false'] when the config has that field (quiet run logs)."""
  return ["--config.progress=false"] if "progress" in config_lib.load(config_spec) else []

