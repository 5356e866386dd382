"""Sweep runner: each run a `python -m research.main` subprocess in its own workdir,
prerequisites first, a live display, a status file; failures reported, not fatal."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from typing import Any, Mapping, Sequence

import numpy as np

from research import config_lib
from research.sweep.grid import (RUN_LOG, STATUS_FILE, TRAIN_MODULE, Overrides, config_overrides,
                                  load_module, override_flags, run_name, validate)


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
  train_command = list(train_command or [python, *TRAIN_MODULE])
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
