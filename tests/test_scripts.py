"""Every user-facing script in scripts/, run end to end on real finished runs.

Each script runs as a user runs it (a subprocess from the repository root, or
its `main(argv)`), on workdirs that scripts/train.py really trained (tiny
budgets, shared through session fixtures), and the test checks what the
script wrote, not only its exit code.
"""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")

# Tiny but real: the mnist5k data, the small CNN, a k-shot subset with a validation split.
_CLASSIFY = ["--config.model.width=4", "--config.batch_size=32", "--config.eval_batch_size=1000",
             "--config.num_steps=20", "--config.eval_every=20", "--config.checkpoint_every=10",
             "--config.log_every=10", "--config.optimizer.warmup_steps=0",
             "--config.data.few_shot_k=20", "--config.data.few_shot_val=2"]
_GENERATIVE = ["--config.num_steps=4", "--config.eval_every=4", "--config.checkpoint_every=4",
               "--config.log_every=2", "--config.batch_size=32", "--config.eval_batch_size=1000"]


def _env(devices=2):
  return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
              PYTHONPATH=REPO)


def _script(name, *args, check=True):
  """Runs scripts/<name> from the repository root; returns the CompletedProcess."""
  proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", name), *map(str, args)],
                        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
  if check and proc.returncode != 0:
    raise AssertionError(f"scripts/{name} exited {proc.returncode}\n{proc.stdout[-3000:]}\n"
                         f"{proc.stderr[-3000:]}")
  return proc


def _train(workdir, config, *overrides):
  return _script("train.py", "--config", os.path.join(CONFIGS, config), "--workdir", workdir,
                 "--config.progress=false", *overrides)


@pytest.fixture(scope="session")
def classify_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("scripts") / "classify"
  _train(workdir, "mnist5k_classify.py:quick", *_CLASSIFY)
  return workdir


@pytest.fixture(scope="session")
def vae_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("scripts") / "cvae"
  _train(workdir, "mnist5k_cvae.py:quick", *_GENERATIVE, "--config.iwae_samples=0")
  return workdir


@pytest.fixture(scope="session")
def gan_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("scripts") / "cgan"
  _train(workdir, "mnist5k_cgan.py:quick", *_GENERATIVE)
  return workdir


def test_train_script_writes_results_and_resumes_as_finished(classify_run):
  results = json.load(open(classify_run / "results.json"))
  assert 0.0 <= results["accuracy"] <= 1.0 and "val_accuracy" in results
  assert json.load(open(classify_run / "config.json"))["num_steps"] == 20
  assert any(json.loads(line)["step"] == 20 for line in open(classify_run / "metrics.jsonl"))
  # Rerunning the finished command trains nothing more and leaves the result as it was.
  again = _train(classify_run, "mnist5k_classify.py:quick", *_CLASSIFY)
  assert json.load(open(classify_run / "results.json"))["accuracy"] == results["accuracy"]
  assert again.returncode == 0


def test_compress_report_script_on_a_trained_run(classify_run, tmp_path):
  """The README's compression command: main eval split and validation split, every row."""
  out = tmp_path / "compress"
  _script("compress_report.py", "--workdir", classify_run, "--out", out,
          "--sparsities", "0.5", "--n_m", "2:4", "--bits", "8", "--finetune_steps", "2",
          "--lr", "3e-4", "--calibration_batches", "1")
  rows = json.load(open(out / "results.json"))
  methods = [r["method"] for r in rows]
  assert methods == ["float", "prune + 2 steps", "prune + 2 steps", "ptq (minmax)",
                     "ptq (percentile)", "qat + 2 steps"]
  results = json.load(open(classify_run / "results.json"))
  # The float row is the trained model, evaluated on the same two splits as the trainer did.
  assert rows[0]["accuracy"] == pytest.approx(results["accuracy"], abs=1e-6)
  assert rows[0]["val_accuracy"] == pytest.approx(results["val_accuracy"], abs=1e-6)
  assert all(r["val_accuracy"] is not None for r in rows)
  assert (out / "accuracy_vs_sparsity.png").stat().st_size > 0


def test_compress_report_script_summarizes_several_runs(classify_run, tmp_path):
  second = tmp_path / "classify_copy"
  shutil.copytree(classify_run, second)
  out = tmp_path / "summary"
  _script("compress_report.py", "--workdir", classify_run, second, "--out", out,
          "--sparsities", "0.5", "--n_m", "", "--bits", "8", "--calibration_batches", "1")
  with open(out / "summary.csv") as f:
    summary = list(csv.DictReader(f))
  per_run = [json.load(open(out / name / "results.json")) for name in ("classify", "classify_copy")]
  assert [s["method"] for s in summary] == [r["method"] for r in per_run[0]]
  for s, a, b in zip(summary, *per_run):
    assert float(s["accuracy_mean"]) == pytest.approx((a["accuracy"] + b["accuracy"]) / 2)
    assert int(s["n"]) == 2
  assert "±" in open(out / "summary.md").read()


def test_compress_report_script_refuses_a_workdir_without_checkpoints(tmp_path):
  proc = _script("compress_report.py", "--workdir", tmp_path, check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().startswith("error:") and str(tmp_path) in proc.stderr
  assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("kind", ["vae", pytest.param("gan", marks=pytest.mark.slow)])
def test_sample_script_writes_grids_and_a_balanced_npz(kind, request, tmp_path):
  workdir = request.getfixturevalue(f"{kind}_run")
  out = tmp_path / "samples"
  _script("sample.py", "--workdir", workdir, "--out", out, "--num_npz", "30")
  names = {"grid.png", "interpolation.png", "samples.npz"} | (
      {"reconstruction.png"} if kind == "vae" else set())
  assert names <= set(os.listdir(out))
  samples = np.load(out / "samples.npz")
  assert samples["image"].shape == (30, 28, 28, 1) and samples["image"].dtype == np.uint8
  np.testing.assert_array_equal(np.bincount(samples["label"], minlength=10), [3] * 10)


def test_sample_script_refuses_a_classifier_run(classify_run):
  proc = _script("sample.py", "--workdir", classify_run, check=False)
  assert proc.returncode == 2 and "expected a generative task ('gan' or 'vae')" in proc.stderr


@pytest.mark.slow  # minutes on 2 CPU cores: run with -m slow
def test_generative_eval_script_from_another_directory(vae_run, classify_run, tmp_path):
  """CAS, FD/KID, label agreement and IWAE NLL, with paths relative to the caller's cwd."""
  out = tmp_path / "eval"
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "generative_eval.py"),
       "--generator", os.path.relpath(vae_run, tmp_path),
       "--classifier", os.path.relpath(classify_run, tmp_path), "--out", "eval",
       "--num", "40", "--cas_steps", "2", "--iwae_k", "2", "--iwae_examples", "16"],
      cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.load(open(out / "results.json"))
  for key in ("cas", "fd", "kid", "label_agreement", "nll_nats"):
    assert np.isfinite(results[key]), key
  assert 0.0 <= results["cas"] <= 1.0 and results["nll_nats"] > 0
  assert np.load(out / "samples" / "samples.npz")["image"].shape[0] == 40


_TINY_COMPLETION = '''
"""configs/completion.py:quick cut to a pipeline check: k=10, seeds 0 and 1, arms base and
vae@0.5, 4 classifier steps, a 2-step generator writing 5 samples per class."""
from research import config_lib

completion = config_lib.load_module({path!r}, "_completion_under_test")


def get_config(arg=""):
  return config_lib.apply_overrides(completion.get_config("quick"), {{
      "num_steps": 4, "eval_every": 4, "checkpoint_every": 4, "log_every": 2,
      "model.width": 4, "batch_size": 32, "eval_batch_size": 1000,
      "optimizer.warmup_steps": 0}})


def get_sweep(arg=""):
  runs = []
  for run in completion.get_sweep("quick"):
    if run["data.few_shot_k"] == 10 and run["_arm"] in ("base", "vae@0.5"):
      for seed in (0, 1):
        r = dict(run, seed=seed, **{{"data.few_shot_seed": seed}})
        if r.get("data.synthetic"):
          r["data.synthetic"] = completion.synthetic_path("quick", "vae", 10, seed)
        runs.append(r)
  return runs


def get_prerequisites(overrides):
  prereqs = completion.get_prerequisites(overrides)
  for p in prereqs:
    cmd = [a for a in p["command"] if not a.startswith(("--config.num_steps=",
                                                        "--config.eval_every=",
                                                        "--config.checkpoint_every="))]
    cmd[cmd.index("--num_per_class") + 1] = "5"
    p["command"] = cmd + ["--config.num_steps=2", "--config.eval_every=2",
                          "--config.checkpoint_every=2", "--config.eval_batch_size=1000"]
  return prereqs


def sweep_options(arg=""):
  return completion.sweep_options(arg)
'''


@pytest.mark.slow  # minutes on 2 CPU cores: run with -m slow
def test_sweep_complete_and_completion_report_scripts_on_real_runs(tmp_path):
  """scripts/sweep.py trains the generators (scripts/complete.py) and classifiers of a cut-down
  completion sweep; scripts/completion_report.py then reads the real runs.csv."""
  config = tmp_path / "completion_tiny.py"
  config.write_text(_TINY_COMPLETION.format(path=os.path.join(CONFIGS, "completion.py")))
  root = tmp_path / "root"
  _script("sweep.py", "--config", config, "--root", root, "--parallel", "2")
  with open(root / "runs.csv") as f:
    rows = list(csv.DictReader(f))
  runs = [r for r in rows if r["_arm"] != "best (val)"]
  # Per seed, the validation-selected row is the arm with the best validation accuracy.
  for best in (r for r in rows if r["_arm"] == "best (val)"):
    arms = [r for r in runs if r["seed"] == best["seed"]]
    assert float(best["val_accuracy"]) == max(float(r["val_accuracy"]) for r in arms)
  assert sorted((r["_arm"], r["seed"]) for r in runs) == [
      ("base", "0"), ("base", "1"), ("vae@0.5", "0"), ("vae@0.5", "1")]
  assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in runs)
  for seed in (0, 1):
    gen = root / "generators" / "quick" / f"vae_k10_s{seed}"
    samples = np.load(gen / "samples.npz")
    np.testing.assert_array_equal(np.bincount(samples["label"], minlength=10), [5] * 10)
    assert json.load(open(gen / "training_data.json"))["val_per_class"] == 2
  _script("completion_report.py", "--root", root)
  paired = open(root / "paired.md").read()
  by_seed = {(r["_arm"], r["seed"]): float(r["accuracy"]) for r in runs}
  diff = np.array([by_seed[("vae@0.5", s)] - by_seed[("base", s)] for s in ("0", "1")])
  assert f"{diff.mean():.4f}" in paired.replace("−", "-")


@pytest.mark.slow  # minutes on 2 CPU cores: run with -m slow
def test_sweep_and_adaptation_table_scripts_on_real_adaptation_runs(tmp_path):
  """Three really trained (tiny) runs of the uci adaptation pair, tabulated: gap closed is 0 for
  source-only and 1 for the oracle by definition, and DANN's is computed from the table's means."""
  root = tmp_path / "adapt"
  _script("sweep.py", "--config", os.path.join(CONFIGS, "digits_adapt.py:uci,quick"),
          "--root", root, "--grid", "adapt.method=source_only,dann,oracle", "--grid", "seed=0",
          "--set", "num_steps=3", "--set", "eval_every=3", "--set", "checkpoint_every=3",
          "--metrics", "accuracy,source_accuracy")
  out = tmp_path / "table"
  _script("adaptation_table.py", "--out", out, "--sweep", f"mnist5k->uci_digits={root}")
  with open(out / "results.csv") as f:
    rows = {r["method"]: r for r in csv.DictReader(f)}
  assert set(rows) == {"source_only", "dann", "oracle"}
  acc = {m: float(r["target_accuracy_mean"]) for m, r in rows.items()}
  for m, r in rows.items():
    res = json.load(open(next(root.glob(f"*method={m.replace('_', '-')},*/results.json"))))
    assert float(r["target_accuracy_mean"]) == pytest.approx(res["accuracy"])
  if acc["oracle"] > acc["source_only"]:
    expected = (acc["dann"] - acc["source_only"]) / (acc["oracle"] - acc["source_only"])
    assert float(rows["dann"]["gap_closed"]) == pytest.approx(expected, abs=1e-6)
  else:  # 3 steps: the oracle may not beat source-only, and no gap is defined
    assert np.isnan(float(rows["dann"]["gap_closed"]))
  assert (out / "results.md").exists() and (out / "target_accuracy.png").exists()
