"""The trainer: a whole run, resume, checkpoints, errors, preemption, multi-host."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from research import config_lib, trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _params(workdir):
  _, state = trainer.load_state(workdir)
  return jax.tree.leaves(jax.device_get(state.params))


def test_a_run_writes_config_metrics_checkpoints_and_results(tiny_config, tmp_path):
  out = trainer.train_and_evaluate(tiny_config(), str(tmp_path))
  assert out["step"] == 20 and 0.0 <= out["accuracy"] <= 1.0
  assert {"precision", "recall", "f1", "confusion"} <= set(out)
  assert np.asarray(out["confusion"]).sum() == 1000  # every test image counted once
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert {r["split"] for r in rows} == {"train", "eval"}
  assert all("images_per_sec" in r for r in rows if r["split"] == "train")
  assert json.load(open(tmp_path / "config.json"))["model"]["width"] == 4
  assert json.load(open(tmp_path / "results.json"))["step"] == 20
  assert os.listdir(tmp_path / "tensorboard")
  steps = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
  assert steps == [10, 20]


def test_validation_split_is_evaluated_beside_the_test_split_and_can_select(tiny_config,
                                                                           tmp_path):
  config = tiny_config(**{"data.few_shot_k": 20, "data.few_shot_val": 5,
                          "best_metric": "val_accuracy"})
  out = trainer.train_and_evaluate(config, str(tmp_path))
  assert np.asarray(out["confusion"]).sum() == 1000  # the test split
  assert np.asarray(out["val_confusion"]).sum() == 50  # 5 held out per class
  assert 0.0 <= out["val_accuracy"] <= 1.0 and "val_loss" in out
  evals = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert all("val_accuracy" in r for r in evals if r["split"] == "eval")


def test_restart_with_a_different_config_is_refused_naming_the_fields(tiny_config, tmp_path):
  trainer.check_and_write_config(tiny_config(), str(tmp_path))
  with pytest.raises(trainer.ConfigMismatchError,
                     match=r"(?s)optimizer.lr: saved 0.002 != now 0.1.*seed: saved 0 != now 3"):
    trainer.check_and_write_config(tiny_config(**{"optimizer.lr": 0.1, "seed": 3}), str(tmp_path))
  trainer.check_and_write_config(tiny_config(num_steps=40), str(tmp_path))  # allowed


def test_unknown_config_field_names_the_closest_valid_ones(tiny_config):
  with pytest.raises(config_lib.ConfigError,
                     match=r"unknown config field 'optimizer.lrr'; did you mean optimizer.lr"):
    config_lib.apply_overrides(tiny_config(), ["optimizer.lrr=0.1"])
  c = config_lib.apply_overrides(tiny_config(), ["optimizer.lr=1e-2", "model.name=resnet18"])
  assert c.optimizer.lr == 0.01 and c.model.name == "resnet18"


def test_unknown_model_and_task_list_the_valid_ones(tiny_config, tmp_path):
  with pytest.raises(ValueError, match=r"Unknown model 'resnet19'; valid models: .*'resnet18'"):
    trainer.train_and_evaluate(tiny_config(**{"model.name": "resnet19"}), str(tmp_path / "a"))
  with pytest.raises(ValueError, match=r"Unknown task 'clasify'; valid tasks: .*'classify'"):
    trainer.train_and_evaluate(tiny_config(task="clasify"), str(tmp_path / "b"))


def test_batch_not_divisible_by_device_count(tiny_config, tmp_path):
  with pytest.raises(ValueError, match="batch_size 36 is not divisible by the device count 8"):
    trainer.train_and_evaluate(tiny_config(batch_size=36), str(tmp_path))


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tiny_config, tmp_path, capsys):
  trainer.train_and_evaluate(tiny_config(), str(tmp_path))
  # Corrupt every file of the newest checkpoint's state.
  for root, _, files in os.walk(tmp_path / "checkpoints" / "20" / "state"):
    for f in files:
      with open(os.path.join(root, f), "wb") as fh:
        fh.write(b"garbage")
  out = trainer.train_and_evaluate(tiny_config(num_steps=30), str(tmp_path))
  assert "checkpoint at step 20" in capsys.readouterr().out
  assert out["step"] == 30


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    tiny_config, tmp_path):
  config = tiny_config(**{"optimizer.lr": 1e30, "optimizer.name": "sgd",
                          "label_smoothing": 0.0})
  with pytest.raises(trainer.NonFiniteLossError, match=r"non-finite loss at step \d+"):
    trainer.train_and_evaluate(config, str(tmp_path))
  for step in os.listdir(tmp_path / "checkpoints"):
    if step.isdigit():
      _, state = trainer.load_state(str(tmp_path), step=int(step))
      assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))


def _train_cmd(workdir, *overrides):
  return [sys.executable, os.path.join(REPO, "scripts", "train.py"),
          "--config", os.path.join(REPO, "configs", "mnist5k_classify.py") + ":quick,resnet18",
          "--workdir", str(workdir), "--config.progress=false", "--config.batch_size=32",
          "--config.eval_every=1000", "--config.num_steps=1000", *overrides]


def _env(devices=2):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             PYTHONPATH=REPO)
  return env


@pytest.mark.slow  # three 2-device runs of scripts/train.py (minutes on 2 cores): -m slow
def test_killed_run_resumes_bitwise_equal_to_an_uninterrupted_run(tmp_path):
  overrides = ("--config.num_steps=30", "--config.checkpoint_every=5", "--config.eval_every=30")
  subprocess.run(_train_cmd(tmp_path / "full", *overrides), env=_env(), check=True,
                 capture_output=True)
  proc = subprocess.Popen(_train_cmd(tmp_path / "killed", *overrides), env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpt = tmp_path / "killed" / "checkpoints" / "10"
  deadline = time.time() + 300
  while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (tmp_path / "killed" / "results.json").exists(), "the run ended before the kill"
  done = subprocess.run(_train_cmd(tmp_path / "killed", *overrides), env=_env(), check=True,
                        capture_output=True, text=True)
  assert "Resumed" in done.stdout
  for a, b in zip(_params(tmp_path / "full"), _params(tmp_path / "killed")):
    np.testing.assert_array_equal(a, b)


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tmp_path):
  proc = subprocess.Popen(_train_cmd(tmp_path, "--config.checkpoint_every=100000"),
                          env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 300
  metrics = tmp_path / "metrics.jsonl"
  while not (metrics.exists() and metrics.stat().st_size) and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 75, out  # EX_TEMPFAIL: checkpoint saved, rerun to resume
  assert "Received SIGTERM: saved a checkpoint at step" in out
  listing = os.listdir(tmp_path / "checkpoints")
  steps = [int(s) for s in listing if s.isdigit()]
  assert len(steps) == 1 and 0 < steps[0] < 1000, (listing, out)
  assert f"saved a checkpoint at step {steps[0]} " in out


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_with_jax_distributed_train_together_and_agree(tmp_path):
  port = _free_port()
  procs = []
  for pid in range(2):
    cmd = [sys.executable, os.path.join(REPO, "scripts", "train.py"),
           "--config", os.path.join(REPO, "configs", "mnist5k_classify.py") + ":quick",
           "--workdir", str(tmp_path / "run"), "--config.progress=false",
           "--config.batch_size=32", "--config.num_steps=6", "--config.eval_every=6",
           "--config.model.width=4",
           f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
           f"--process_id={pid}", f"--dump_params={tmp_path}/params{pid}.npz"]
    procs.append(subprocess.Popen(cmd, env=_env(devices=2), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True))
  outs = [p.communicate(timeout=400)[0] for p in procs]
  for p, o in zip(procs, outs):
    assert p.returncode == 0, o[-3000:]
  a, b = np.load(tmp_path / "params0.npz"), np.load(tmp_path / "params1.npz")
  assert sorted(a.files) == sorted(b.files) and a.files
  for k in a.files:
    np.testing.assert_array_equal(a[k], b[k])
  assert '"process_count": 2' in outs[0] and '"device_count": 4' in outs[0]
