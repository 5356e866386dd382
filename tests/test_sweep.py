"""Sweep runner: grid/naming, validation, scheduling (parallel, skip, resume,
failure, prerequisites) and aggregation against numpy.

The scheduling tests run a stand-in trainer (a 20-line script written below
that sleeps per step, checkpoints its step to a file and resumes from it,
like research.trainer) so they take seconds; one slow test runs the real
trainer on the tiny classify config and kills one run mid-way.
"""
import contextlib
import csv
import io
import json
import math
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest

from research import config_lib, sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAKE_CONFIG = '''
import ml_collections

def get_config(arg=""):
  return ml_collections.ConfigDict(dict(seed=0, lr=0.1, num_steps=5, step_time=0.05,
                                        fail=False, data=dict(k=1, prereq="")))

def get_sweep(arg=""):
  return [dict(_arm=arm, **{"data.k": k}, seed=s, **extra)
          for k in (1, 2) for s in (0, 1)
          for arm, extra in (("base", {}), ("gen", {"data.prereq": f"{{root}}/gen_k{k}/out.txt"}))]

def get_prerequisites(overrides):
  if not overrides.get("data.prereq"):
    return []
  k = overrides["data.k"]
  return [dict(name=f"gen_k{k}", command=["{FAKE_GEN}", "--out", "{dir}/out.txt", "--k", str(k)],
               output="{dir}/out.txt")]
'''

FAKE_GEN = '''
import os, sys, time
out = sys.argv[sys.argv.index("--out") + 1]
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(os.path.join(os.path.dirname(out), "launches.txt"), "a") as f:
  f.write(f"{time.time()}\\n")
time.sleep(0.2)
with open(out, "w") as f:
  f.write(sys.argv[sys.argv.index("--k") + 1])
'''

FAKE_TRAIN = '''
import json, os, sys, time
args = sys.argv[1:]
workdir = args[args.index("--workdir") + 1]
o = dict(a[len("--config."):].split("=", 1) for a in args if a.startswith("--config."))
os.makedirs(workdir, exist_ok=True)
with open(os.path.join(workdir, "launches.txt"), "a") as f:
  f.write(f"{time.time()}\\n")
ckpt, start = os.path.join(workdir, "ckpt"), 0
if os.path.exists(ckpt):
  start = int(open(ckpt).read())
  print(f"Resumed {workdir} from step {start}", flush=True)
if o.get("data.prereq"):
  assert os.path.exists(o["data.prereq"]), o["data.prereq"]
if o.get("fail") == "true":
  print("Traceback: boom, the stand-in trainer was told to fail", flush=True)
  sys.exit(3)
for step in range(start + 1, int(o.get("num_steps", 5)) + 1):
  time.sleep(float(o.get("step_time", 0.05)))
  with open(ckpt + ".tmp", "w") as f:
    f.write(str(step))
  os.replace(ckpt + ".tmp", ckpt)
with open(os.path.join(workdir, "results.json"), "w") as f:
  json.dump({"step": step, "accuracy": 0.5 + 0.01 * int(o.get("seed", 0))}, f)
'''


@pytest.fixture
def fake(tmp_path):
  """(config path, train command) of the stand-in trainer."""
  gen = tmp_path / "fake_gen.py"
  gen.write_text(FAKE_GEN)
  config = tmp_path / "fake_config.py"
  config.write_text(FAKE_CONFIG.replace("{FAKE_GEN}", str(gen)))
  train = tmp_path / "fake_train.py"
  train.write_text(FAKE_TRAIN)
  return str(config), [sys.executable, str(train)]


def _launch_times(workdir):
  with open(os.path.join(workdir, "launches.txt")) as f:
    return [float(x) for x in f.read().split()]


def _quiet():
  return io.StringIO()


# ---------------------------------------------------------------- defining runs
def test_grid_is_the_cartesian_product_in_order():
  field, values = sweep.parse_grid_flag("config.data.few_shot_k=10,50,100")
  assert field == "data.few_shot_k" and values == [10, 50, 100]
  assert sweep.parse_grid_flag("augment='a(1,2)|b',none,1e-3") == (
      "augment", ["a(1,2)|b", None, 0.001])
  runs = sweep.grid({"a": [1, 2], "b": ["x", "y", "z"]})
  assert runs == [{"a": a, "b": b} for a in (1, 2) for b in ("x", "y", "z")]
  with pytest.raises(ValueError, match="expected field=value1"):
    sweep.parse_grid_flag("k")


def test_run_names_are_stable_distinct_and_safe():
  a = sweep.run_name({"data.few_shot_k": 10, "seed": 0})
  assert a == "few_shot_k=10,seed=0"
  assert sweep.run_name({"data.few_shot_k": 10, "seed": 0}) == a
  path_a = sweep.run_name({"data.synthetic": "/x/gen_k10_s0/samples.npz"})
  path_b = sweep.run_name({"data.synthetic": "/x/gen_k10_s1/samples.npz"})
  assert path_a != path_b and "/" not in path_a + path_b
  clash = sweep.run_name({"data.seed": 1, "seed": 2})
  assert clash == "data.seed=1,seed=2"


def test_override_flags_round_trip_through_config_lib():
  base = config_lib.load(os.path.join(REPO, "configs", "mnist5k_classify.py"))
  overrides = {"augment": "trivial_augment_wide", "optimizer.lr": 1e-3, "progress": False,
               "data.few_shot_k": 10, "optimizer.frozen": ("a", "b")}
  flags = sweep.override_flags(overrides)
  parsed = config_lib.apply_overrides(base, [f[2:] for f in flags])
  for k, v in overrides.items():
    node = parsed
    for part in k.split("."):
      node = node[part]
    assert node == v, k


def _sweep_script():
  """scripts/sweep.py as a module (its main() is called in-process)."""
  return config_lib.load_module(os.path.join(REPO, "scripts", "sweep.py"), "_sweep_script")


def test_unknown_field_fails_before_launching(tmp_path, capsys):
  sweep_script = _sweep_script()
  root = tmp_path / "root"
  rc = sweep_script.main(["--config", os.path.join(REPO, "configs", "mnist5k_classify.py"),
                          "--root", str(root), "--grid", "data.few_shot_kk=10,50"])
  err = capsys.readouterr().err
  assert rc == 2
  assert "unknown config field 'data.few_shot_kk'" in err and "data.few_shot_k" in err
  assert not root.exists() or not os.listdir(root)  # nothing was launched


def test_set_adds_one_override_to_every_run_and_reaches_the_generators(tmp_path, capsys):
  """--set data.name=folder:DIR: every run (and, in the completion sweep, the generator each
  run needs) uses the user's dataset."""
  sweep_script = _sweep_script()
  root = tmp_path / "root"
  rc = sweep_script.main(["--config", os.path.join(REPO, "configs", "completion.py:quick"),
                          "--root", str(root), "--set", "data.name=folder:/data/mine",
                          "--set", "data.image_size=28", "--report_only"])
  assert rc == 0, capsys.readouterr().err
  with open(root / "runs.csv") as f:
    rows = [r for r in csv.DictReader(f) if r["_arm"] != "best (val)"]
  assert rows and all(r["data.name"] == "folder:/data/mine" for r in rows)
  completion = config_lib.load_module(os.path.join(REPO, "configs", "completion.py"))
  run = next(r for r in completion.get_sweep("quick") if r.get("data.synthetic"))
  (prereq,) = completion.get_prerequisites({**run, "data.name": "folder:/data/mine"})
  assert "--config.data.name=folder:/data/mine" in prereq["command"]
  assert not any(a.startswith("--config.data.few_shot_k") for a in prereq["command"])
  rc = sweep_script.main(["--config", os.path.join(REPO, "configs", "mnist5k_classify.py"),
                          "--root", str(root), "--grid", "seed=0", "--set", "seed=1,2"])
  assert rc == 2 and "one value expected" in capsys.readouterr().err


# ---------------------------------------------------------------- scheduling
def test_parallel_runs_prerequisites_once_then_skip_on_rerun(fake, tmp_path):
  config, train = fake
  runs, _ = sweep.sweep_from_config(config)
  root = str(tmp_path / "root")
  jobs = sweep.run_sweep(config, runs, root, parallel=2, train_command=train,
                         stream=_quiet())
  assert [j.state for j in jobs] == ["done"] * len(jobs)
  assert sum(not j.is_run for j in jobs) == 2  # gen_k1, gen_k2: once each, not per seed
  status = json.load(open(os.path.join(root, sweep.STATUS_FILE)))
  intervals = sorted((s["start"], s["end"]) for s in status.values())
  # Some two jobs overlapped in time, and never more than two at once.
  assert any(b[0] < a[1] for a, b in zip(intervals, intervals[1:]))
  for t, _ in intervals:
    assert sum(s <= t < e for s, e in intervals) <= 2
  # A run that needs a prerequisite started after it ended.
  for r in runs:
    if r.get("data.prereq"):
      gen = status[f"gen_k{r['data.k']}"]
      assert status[sweep.run_name(r)]["start"] >= gen["end"]
  for j in jobs:
    assert len(_launch_times(j.workdir)) == 1
  # Rerun: everything is skipped, nothing is launched again.
  jobs = sweep.run_sweep(config, runs, root, parallel=2, train_command=train,
                         stream=_quiet())
  assert [j.state for j in jobs] == ["skipped"] * len(jobs)
  for j in jobs:
    assert len(_launch_times(j.workdir)) == 1


def test_failed_run_is_reported_others_finish(fake, tmp_path):
  config, train = fake
  runs = [{"seed": 0}, {"seed": 1, "fail": True}, {"seed": 2}]
  out = io.StringIO()
  jobs = sweep.run_sweep(config, runs, str(tmp_path / "r"), parallel=2,
                         train_command=train, stream=out)
  assert [j.state for j in jobs] == ["done", "failed", "done"]
  assert jobs[1].returncode == 3
  text = out.getvalue()
  assert "FAILED seed=1,fail=true (exit code 3)" in text
  assert "boom, the stand-in trainer was told to fail" in text  # the log tail
  assert jobs[1].workdir in text


def test_killed_run_resumes_on_rerun(fake, tmp_path):
  config, train = fake
  runs = [{"seed": 0, "num_steps": 200, "step_time": 0.02}, {"seed": 1}]
  root = str(tmp_path / "r")
  target = os.path.join(root, sweep.run_name(runs[0]))
  result = {}
  thread = threading.Thread(target=lambda: result.update(jobs=sweep.run_sweep(
      config, runs, root, parallel=2, train_command=train, stream=_quiet())))
  thread.start()
  deadline = time.time() + 60
  while not os.path.exists(os.path.join(target, "ckpt")) and time.time() < deadline:
    time.sleep(0.02)
  pid = json.load(open(os.path.join(root, sweep.STATUS_FILE)))[sweep.run_name(runs[0])]["pid"]
  os.kill(pid, signal.SIGKILL)
  thread.join(60)
  jobs = result["jobs"]
  assert [j.state for j in jobs] == ["failed", "done"]
  assert jobs[0].returncode == -signal.SIGKILL
  killed_at = int(open(os.path.join(target, "ckpt")).read())
  assert 0 < killed_at < 200
  jobs = sweep.run_sweep(config, runs, root, parallel=2, train_command=train,
                         stream=_quiet())
  assert [j.state for j in jobs] == ["done", "skipped"]
  log = open(os.path.join(target, sweep.RUN_LOG)).read()
  assert f"Resumed {target} from step {killed_at}" in log
  assert len(_launch_times(target)) == 2


def test_display_counts_and_eta():
  jobs = [sweep.Job(f"j{i}", [], "/nonexistent", "/nonexistent/x") for i in range(5)]
  now = time.time()
  for j, state in zip(jobs, ["done", "done", "running", "pending", "failed"]):
    j.state = state
  jobs[0].start, jobs[0].end = now - 30, now - 20  # 10 s
  jobs[1].start, jobs[1].end = now - 20, now       # 20 s -> mean 15 s
  jobs[2].start = now - 5                          # 10 s to go
  line = sweep.Display(jobs, parallel=2).line()
  assert "2/5 done · 1 running · 1 left · 1 failed" in line
  assert "ETA 12s" in line or "ETA 13s" in line  # (15 + 10) / 2


# ---------------------------------------------------------------- aggregation
def test_aggregate_matches_numpy():
  rng = np.random.default_rng(0)
  rows, expected = [], {}
  for k in (10, 50):
    for arm in ("base", "aug"):
      values = rng.uniform(0, 1, size=3)
      expected[(k, arm)] = (values.mean(), np.std(values, ddof=1))
      for s, v in enumerate(values):
        rows.append({"k": k, "_arm": arm, "seed": s, "accuracy": float(v)})
  rows.append({"k": 100, "_arm": "base", "seed": 0, "accuracy": 0.7})
  rows.append({"k": 100, "_arm": "base", "seed": 1})  # unfinished: no metric
  table = sweep.aggregate(rows, ["k", "_arm"], "seed", ["accuracy"])
  assert len(table) == 5
  for e in table[:4]:
    mean, std = expected[(e["k"], e["_arm"])]
    assert e["n"] == 3 and e["seeds"] == [0, 1, 2]
    np.testing.assert_allclose([e["accuracy_mean"], e["accuracy_std"]], [mean, std],
                               rtol=1e-12)
  assert table[4]["n"] == 1 and table[4]["accuracy_mean"] == 0.7
  assert math.isnan(table[4]["accuracy_std"])


def test_report_from_fabricated_results(tmp_path):
  runs = sweep.grid({"data.few_shot_k": [10, 50], "lr": [0.1, 0.01], "seed": [0, 1, 2, 3]})
  rng = np.random.default_rng(1)
  acc = {}
  for r in runs[:-1]:  # the last run has not finished
    name = sweep.run_name(r)
    os.makedirs(tmp_path / name)
    acc[name] = (float(rng.uniform()), float(rng.uniform()))
    with open(tmp_path / name / "results.json", "w") as f:
      json.dump({"step": 10, "accuracy": acc[name][0], "f1": acc[name][1],
                 "confusion": [[1, 0], [0, 1]]}, f)
  out = sweep.report(runs, str(tmp_path), seed_axis="seed")
  assert out["metrics"] == ["accuracy", "f1"]
  with open(tmp_path / "results.csv") as f:
    table = list(csv.DictReader(f))
  assert len(table) == 4
  for row in table:
    members = [sweep.run_name(r) for r in runs
               if r["data.few_shot_k"] == int(row["data.few_shot_k"])
               and r["lr"] == float(row["lr"])]
    for i, m in enumerate(("accuracy", "f1")):
      values = np.array([acc[n][i] for n in members if n in acc])
      assert int(row["n"]) == len(values)
      np.testing.assert_allclose(float(row[f"{m}_mean"]), values.mean(), rtol=1e-9)
      np.testing.assert_allclose(float(row[f"{m}_std"]), values.std(ddof=1), rtol=1e-9)
  md = open(tmp_path / "results.md").read()
  first = [n for n in acc if n.startswith("few_shot_k=10,lr=0.1,")]
  values = np.array([acc[n][0] for n in first])
  assert f"| 10 | 0.1 | 4 | {values.mean():.4f} ± {values.std(ddof=1):.4f} |" in md
  png = tmp_path / "accuracy_vs_data.few_shot_k.png"
  assert png.exists() and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_selection_picks_the_best_validation_run_per_group_and_aggregates_its_test_metric(
    tmp_path):
  rng = np.random.default_rng(3)
  runs, results = [], {}
  for k in (10, 50):
    for seed in (0, 1, 2):
      for arm in ("base", "aug", "vae"):
        r = {"_arm": arm, "k": k, "seed": seed}
        runs.append(r)
        # Coarse validation accuracies so that ties happen; val_loss breaks them.
        results[sweep.run_name(r)] = {"accuracy": float(rng.uniform()),
                                      "val_accuracy": float(rng.integers(0, 3)) / 2,
                                      "val_loss": float(rng.uniform())}
  for name, res in results.items():
    os.makedirs(tmp_path / name)
    json.dump(res, open(tmp_path / name / "results.json", "w"))
  selection = dict(label="best", axis="_arm", within=["k", "seed"],
                   by=[["val_accuracy", "max"], ["val_loss", "min"]])
  out = sweep.report(runs, str(tmp_path), seed_axis="seed", group_by=["_arm", "k"],
                     metrics=["accuracy"], selection=selection)
  for k in (10, 50):
    picked = []
    for seed in (0, 1, 2):
      cands = [(results[sweep.run_name(r)], r["_arm"]) for r in runs
               if r["k"] == k and r["seed"] == seed]
      # By hand: highest val accuracy, then lowest val loss.
      res, arm = sorted(cands, key=lambda c: (-c[0]["val_accuracy"], c[0]["val_loss"]))[0]
      picked.append(res["accuracy"])
      assert f"k={k}, seed={seed}: {arm}" in out["markdown"]
    (row,) = [e for e in out["table"] if e["_arm"] == "best" and e["k"] == k]
    assert row["n"] == 3
    np.testing.assert_allclose([row["accuracy_mean"], row["accuracy_std"]],
                               [np.mean(picked), np.std(picked, ddof=1)], rtol=1e-12)
  with pytest.raises(ValueError, match="'max' or 'min'"):
    sweep.select([], "best", "_arm", ["k"], [["val_accuracy", "biggest"]])


# ---------------------------------------------------------------- the real trainer
@pytest.mark.slow
def test_real_trainer_parallel_kill_and_resume(tmp_path):
  """Two tiny classify runs at once; one is SIGKILLed after its first checkpoint."""
  config = os.path.join(REPO, "configs", "mnist5k_classify.py") + ":quick"
  base = {"model.width": 4, "batch_size": 32, "eval_batch_size": 1000,
          "optimizer.warmup_steps": 0, "log_every": 5, "checkpoint_every": 10,
          "data.few_shot_k": 10}
  runs = [{**base, "num_steps": 400, "seed": 0}, {**base, "num_steps": 20, "seed": 1}]
  root = str(tmp_path / "root")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device: faster
  target = os.path.join(root, sweep.run_name(runs[0]))
  result = {}
  kwargs = dict(parallel=2, env=env, stream=_quiet(),
                extra_flags=sweep.progress_flags(config))
  thread = threading.Thread(target=lambda: result.update(
      jobs=sweep.run_sweep(config, runs, root, **kwargs)))
  thread.start()
  deadline = time.time() + 300
  ckpt = os.path.join(target, "checkpoints", "10")
  while not os.path.exists(ckpt) and time.time() < deadline and thread.is_alive():
    time.sleep(0.05)
  assert os.path.exists(ckpt), "the run never wrote its first checkpoint"
  status = json.load(open(os.path.join(root, sweep.STATUS_FILE)))
  with contextlib.suppress(ProcessLookupError):
    os.killpg(status[sweep.run_name(runs[0])]["pid"], signal.SIGKILL)
  thread.join(600)
  jobs = result["jobs"]
  assert [j.state for j in jobs] == ["failed", "done"]
  assert not os.path.exists(os.path.join(target, "results.json"))
  status = json.load(open(os.path.join(root, sweep.STATUS_FILE)))
  a, b = (status[sweep.run_name(r)] for r in runs)
  assert a["start"] < b["end"] and b["start"] < a["end"]  # they ran at the same time
  results_b = os.path.join(root, sweep.run_name(runs[1]), "results.json")
  mtime = os.path.getmtime(results_b)

  jobs = sweep.run_sweep(config, runs, root, **kwargs)
  assert [j.state for j in jobs] == ["done", "skipped"]
  assert os.path.getmtime(results_b) == mtime
  log = open(os.path.join(target, sweep.RUN_LOG)).read()
  assert f"Resumed {target} from step" in log
  assert json.load(open(os.path.join(target, "results.json")))["step"] == 400
