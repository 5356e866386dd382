"""Reliability of the trainer: checkpoints verified on restore, data states validated,
config errors caught before config.json is written, clean command-line errors."""
import glob
import json
import os
import shutil

import ml_collections
import numpy as np
import pytest

from research import checkpoint, trainer
from research import params as params_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


_SHORT = {"num_steps": 4, "eval_every": 4, "checkpoint_every": 2, "log_every": 2}


@pytest.fixture(scope="module")
def finished_run(tiny_config, tmp_path_factory):
  """A finished 4-step tiny run with checkpoints at steps 2 and 4 (copy before altering)."""
  workdir = tmp_path_factory.mktemp("finished") / "run"
  trainer.train_and_evaluate(tiny_config(**_SHORT), str(workdir))
  return workdir


def _copy(run, tmp_path):
  dst = tmp_path / "run"
  shutil.copytree(run, dst)
  return dst


def _flip_bytes_in_an_array_chunk(step_dir):
  """Inverts 16 bytes in the middle of the largest array data file of a checkpoint."""
  files = glob.glob(os.path.join(step_dir, "state", "ocdbt.process_0", "d", "*"))
  path = max(files, key=os.path.getsize)
  data = bytearray(open(path, "rb").read())
  mid = len(data) // 2
  data[mid:mid + 16] = bytes(b ^ 0xFF for b in data[mid:mid + 16])
  open(path, "wb").write(bytes(data))


def test_flipped_bytes_in_the_newest_checkpoint_resume_from_the_previous_one(
    finished_run, tiny_config, tmp_path, capsys):
  run = _copy(finished_run, tmp_path)
  _flip_bytes_in_an_array_chunk(run / "checkpoints" / "4")
  out = trainer.train_and_evaluate(tiny_config(**_SHORT), str(run))
  printed = capsys.readouterr().out
  # Where the flipped bytes land decides how they are caught: inside array data that still
  # decodes, by the checksum (the silent case this guards); inside a chunk's framing, by the
  # reader. Either way the checkpoint is treated as unreadable and the previous one is used.
  assert "checkpoint at step 4" in printed, printed
  assert "sha256 mismatch" in printed or "is unreadable" in printed, printed
  assert "Resumed" in printed and "from step 2" in printed
  assert out["step"] == 4
  assert [p.split("_")[0] for p in os.listdir(run / "checkpoints_unreadable")] == ["4"]
  # The steps were trained again from step 2 and saved afresh, verified.
  _, state = trainer.load_state(str(run))
  assert all(np.isfinite(np.asarray(x)).all() for x in params_lib.flatten(state).values())


def test_restored_state_with_non_finite_values_is_refused():
  state = {"w": np.ones((2, 2), np.float32), "step": np.int32(3)}
  sums = checkpoint.state_checksums(state)
  checkpoint.verify_state(state, sums)
  with pytest.raises(checkpoint.CheckpointError, match="sha256 mismatch in 1 array"):
    checkpoint.verify_state({**state, "w": np.full((2, 2), 2.0, np.float32)}, sums)
  with pytest.raises(checkpoint.CheckpointError, match="non-finite values in 1 array"):
    checkpoint.verify_state({**state, "w": np.full((2, 2), np.nan, np.float32)}, None)


def test_non_finite_loss_before_any_checkpoint_says_there_is_none(tiny_config, tmp_path):
  config = tiny_config(**{"optimizer.lr": 1e30, "optimizer.name": "sgd",
                          "label_smoothing": 0.0})
  with pytest.raises(trainer.NonFiniteLossError,
                     match=r"non-finite loss at step \d+.*No checkpoint has been saved"):
    trainer.train_and_evaluate(config, str(tmp_path))


def test_data_state_without_position_makes_the_checkpoint_unreadable(finished_run, tiny_config,
                                                                   tmp_path, capsys):
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from research import data  # pylint: disable=g-import-not-at-top
  run = _copy(finished_run, tmp_path)
  _, state = trainer.load_state(str(run), step=2)
  # Step 4 saved again, checksums and all, with a data state that is valid JSON but no
  # iterator state (as another iterator type or an older version would write it).
  shutil.rmtree(run / "checkpoints" / "4")
  mngr = checkpoint.make_checkpoint_manager(str(run), tiny_config(**_SHORT))
  checkpoint.save_checkpoint(mngr, 4, state, {"pos": 128})
  mngr.wait_until_finished()
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  it = data.ArrayIterator({"x": np.arange(10)}, 2, seed=0)
  step, _, data_state = checkpoint.restore_checkpoint(mngr, abstract, it.set_state)
  mngr.close()
  printed = capsys.readouterr().out
  assert step == 2 and it.position == data_state["position"] == 64
  assert "checkpoint at step 4" in printed and "'position'" in printed, printed
  assert [p.split("_")[0] for p in os.listdir(run / "checkpoints_unreadable")] == ["4"]


@pytest.mark.parametrize("override, error", [
    ({"model.name": "resnet9000"}, r"model.name: Unknown model 'resnet9000'"),
    ({"task": "clasify"}, r"task: Unknown task 'clasify'"),
    ({"data.name": "mnist6k"}, r"data.name: Unknown dataset 'mnist6k'"),
    ({"data.few_shot_k": -3}, r"data.few_shot_k=-3: must be an integer >= 0"),
    ({"data.few_shot_k": 5000}, r"data.few_shot_k=5000: class \d of the training split has only"),
    ({"augment": "flipx"}, r"^augment.*unknown op 'flipx'"),
    ({"optimizer.name": "adamx"}, r"optimizer.name must be one of .*got 'adamx'"),
    ({"batch_size": 0}, r"batch_size=0: must be a positive integer"),
    ({"batch_size": 36}, r"batch_size 36 is not divisible by the device count 8"),
])
def test_a_bad_config_is_refused_before_config_json_is_written(override, error, tiny_config,
                                                               tmp_path):
  with pytest.raises(ValueError, match=error):
    trainer.train_and_evaluate(tiny_config(**override), str(tmp_path))
  assert not (tmp_path / "config.json").exists()


def test_a_corrected_typo_runs_in_the_same_workdir(tiny_config, tmp_path):
  with pytest.raises(ValueError, match="resnet9000"):
    trainer.train_and_evaluate(tiny_config(**{"model.name": "resnet9000"}), str(tmp_path))
  out = trainer.train_and_evaluate(tiny_config(num_steps=2, eval_every=2), str(tmp_path))
  assert out["step"] == 2 and (tmp_path / "config.json").exists()


def _train_script(workdir, config_arg, *overrides, devices=8, width=4):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             PYTHONPATH=REPO)
  cmd = [sys.executable, os.path.join(REPO, "scripts", "train.py"), "--config",
         os.path.join(REPO, "configs", "mnist5k_classify.py") + config_arg,
         "--workdir", str(workdir), "--config.progress=false",
         *([f"--config.model.width={width}"] if width else []), *overrides]
  return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _only_error_line(proc) -> str:
  """The single `error: ...` line of a failed script; no traceback anywhere."""
  assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
  assert len(lines) == 1, proc.stderr[-3000:]
  return lines[0]


@pytest.mark.parametrize("config_arg, overrides, expected", [
    (":quick,turbo", [], r"unknown variant\(s\) \['turbo'\]"),
    (":quick", ["--config.model.name=resnet9000"], r"model.name: Unknown model 'resnet9000'"),
    (":quick", ["--config.task=clasify"], r"task: Unknown task 'clasify'"),
    (":quick", ["--config.data.name=mnist6k"], r"data.name: Unknown dataset 'mnist6k'"),
    (":quick", ["--config.augment=flipx"], r"augment.*unknown op 'flipx'"),
    (":quick", ["--config.batch_size=0"], r"batch_size=0: must be a positive integer"),
    (":quick", ["--config.batch_size=36"], r"batch_size 36 is not divisible by the device count 8"),
    (":quick", ["--config.data.few_shot_k=-3"], r"data.few_shot_k=-3: must be an integer >= 0"),
    (":quick", ["--config.data.few_shot_k=9999"], r"data.few_shot_k=9999: class \d+ .* only"),
    (":quick", ["--config.optimizer.lrr=1"], r"unknown config field 'optimizer.lrr'"),
    (":quick", ["--batch_size=8"], r"unrecognised argument '--batch_size=8'"),
])
def test_train_script_user_errors_are_one_line_and_exit_2(config_arg, overrides, expected,
                                                          tmp_path):
  import re  # pylint: disable=g-import-not-at-top
  proc = _train_script(tmp_path / "run", config_arg, *overrides)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert re.search(expected, _only_error_line(proc))
  assert not (tmp_path / "run" / "config.json").exists()


def test_train_script_config_mismatch_on_resume_is_one_line_and_exit_2(tiny_config, tmp_path):
  trainer.write_config(tiny_config(**{"model.width": 4}), str(tmp_path))
  proc = _train_script(tmp_path, ":quick", "--config.optimizer.lr=0.5")
  assert proc.returncode == 2
  line = _only_error_line(proc)
  assert "different config" in line and "optimizer.lr: saved 0.002 != now 0.5" in line


@pytest.mark.slow
def test_train_script_non_finite_loss_exits_3_naming_no_checkpoint(tmp_path):
  proc = _train_script(tmp_path, ":quick", "--config.optimizer.lr=1e30",
                       "--config.optimizer.name=sgd", "--config.label_smoothing=0.0",
                       "--config.batch_size=32", "--config.log_every=2", devices=2)
  assert proc.returncode == 3, proc.stderr[-3000:]
  line = _only_error_line(proc)
  assert "non-finite loss at step" in line and "No checkpoint has been saved" in line


@pytest.mark.slow  # ~70 s of CPU (the GAN's compile and sample grid)
def test_dump_params_writes_a_gan_runs_ema_generator(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from research import params as P  # pylint: disable=g-import-not-at-top
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", PYTHONPATH=REPO)
  cmd = [sys.executable, os.path.join(REPO, "scripts", "train.py"), "--config",
         os.path.join(REPO, "configs", "mnist5k_cgan.py") + ":quick", "--workdir",
         str(tmp_path / "gan"), "--config.progress=false", "--config.num_steps=2",
         "--config.eval_every=2", "--config.batch_size=16", "--config.eval_batch_size=1000",
         f"--dump_params={tmp_path}/gan.npz"]
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  dumped = np.load(tmp_path / "gan.npz")
  _, state = trainer.load_state(str(tmp_path / "gan"))
  expected = P.flatten({"params": state.ema_params, "batch_stats": state.g_batch_stats})
  assert sorted(dumped.files) == sorted(expected) and dumped.files
  for k, v in expected.items():
    np.testing.assert_array_equal(dumped[k], np.asarray(jax.device_get(v)))


@pytest.mark.slow  # five runs of scripts/train.py (~4 min on the shared 2-core CPU)
def test_a_run_resumes_on_a_different_device_count(tmp_path):
  # Without dropout, augmentation or mixing the update does not depend on the device
  # count (see parallel.py), so 1 -> 8 and 8 -> 1 device resumes equal a 1-device run.
  # A constant schedule: the first half runs with num_steps=2 and must not decay.
  common = ("--config.model.dropout=0.0", "--config.batch_size=32", "--config.eval_every=4",
            "--config.checkpoint_every=2", "--config.log_every=2",
            "--config.optimizer.warmup_steps=0", "--config.optimizer.schedule=constant")
  def train(name, steps, devices):
    proc = _train_script(tmp_path / name, ":quick", *common, f"--config.num_steps={steps}",
                         f"--dump_params={tmp_path / name}.npz", devices=devices)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout
  train("one", 4, devices=1)
  for name, first, then in (("up", 1, 8), ("down", 8, 1)):
    train(name, 2, devices=first)
    out = train(name, 4, devices=then)
    assert "from step 2" in out and f'"device_count": {then}' in out
  ref = np.load(tmp_path / "one.npz")
  for name in ("up", "down"):
    got = np.load(tmp_path / f"{name}.npz")
    assert sorted(got.files) == sorted(ref.files)
    for k in ref.files:
      np.testing.assert_allclose(got[k], ref[k], atol=1e-5, rtol=0, err_msg=f"{name}: {k}")


@pytest.mark.slow  # two runs of scripts/train.py (~2 min on the shared 2-core CPU)
def test_default_quick_config_evaluates_on_8_devices_like_on_1(tmp_path):
  # eval_batch_size 500 does not split over 8 devices: the last local batch is padded
  # and masked. Re-evaluating the same final checkpoint on 1 device gives the same metrics.
  import json  # pylint: disable=g-import-not-at-top
  proc = _train_script(tmp_path, ":quick", "--config.num_steps=4", "--config.eval_every=4",
                       devices=8, width=None)
  assert proc.returncode == 0, proc.stderr[-3000:]
  eight = json.load(open(tmp_path / "results.json"))
  proc = _train_script(tmp_path, ":quick", "--config.num_steps=4", "--config.eval_every=4",
                       devices=1, width=None)
  assert proc.returncode == 0, proc.stderr[-3000:]
  one = json.load(open(tmp_path / "results.json"))
  assert np.asarray(eight["confusion"]).sum() == 1000
  assert eight["confusion"] == one["confusion"]
  for k in ("accuracy", "loss", "f1"):
    assert abs(eight[k] - one[k]) <= 1e-5, (k, eight[k], one[k])


def test_non_finite_loss_names_the_newest_verified_checkpoint(finished_run, tiny_config,
                                                              tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  run = _copy(finished_run, tmp_path)
  # Replace step 4 by a finite, correctly checksummed state that diverges at once.
  task, state = trainer.load_state(str(run), step=4)
  state = state.replace(params=jax.tree.map(lambda x: x * 1e30, state.params))
  shutil.rmtree(run / "checkpoints" / "4")
  mngr = checkpoint.make_checkpoint_manager(str(run), tiny_config(**_SHORT))
  checkpoint.save_checkpoint(mngr, 4, state, {"position": 128})
  mngr.wait_until_finished()
  mngr.close()
  del task
  with pytest.raises(trainer.NonFiniteLossError,
                     match=r"non-finite loss at step [56].*last good checkpoint \(step 4\)"):
    trainer.train_and_evaluate(tiny_config(**{**_SHORT, "num_steps": 6}), str(run))
  assert sorted(os.listdir(run / "checkpoints")) == ["2", "4"]


def test_an_edited_data_iterator_state_fails_its_checksum(finished_run, tmp_path, capsys):
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from research import data  # pylint: disable=g-import-not-at-top
  run = _copy(finished_run, tmp_path)
  with open(run / "checkpoints" / "4" / "data" / "metadata", "w") as f:
    f.write('{"position": 96}')  # a valid state, not the saved one (128)
  _, state = trainer.load_state(str(run), step=2)
  it = data.ArrayIterator({"x": np.arange(10)}, 2, seed=0)
  mngr = checkpoint.make_checkpoint_manager(str(run), ml_collections.ConfigDict())
  step, _, _ = checkpoint.restore_checkpoint(
      mngr, jax.tree.map(ocp.utils.to_shape_dtype_struct, state), it.set_state)
  mngr.close()
  printed = capsys.readouterr().out
  assert step == 2 and it.position == 64
  assert "checkpoint at step 4" in printed and "data-iterator state" in printed, printed


def test_a_non_finite_state_is_never_saved(tmp_path):
  mngr = checkpoint.make_checkpoint_manager(str(tmp_path), ml_collections.ConfigDict())
  state = {"w": np.array([1.0, np.inf], np.float32)}
  with pytest.raises(trainer.NonFiniteLossError,
                     match=r"non-finite values in the state at step 7 \(1 array\(s\), first "
                           r"'w'\); not saved. No checkpoint has been saved"):
    checkpoint.save_checkpoint(mngr, 7, state, {"position": 0})
  mngr.close()
  assert mngr.all_steps() == []


def test_an_array_that_decodes_but_differs_from_its_checksum_is_refused(
    finished_run, tiny_config, tmp_path, capsys):
  """The silent case, deterministically: a stored array whose bytes no longer match the sha256
  saved with it (here the recorded hash of one array is altered instead of the array)."""
  run = _copy(finished_run, tmp_path)
  path = run / "checkpoints" / "4" / "checksums" / "metadata"
  sums = json.loads(path.read_text())
  key = sorted(k for k in sums if "kernel" in k)[0]
  sums[key] = "0" * 64
  path.write_text(json.dumps(sums))
  out = trainer.train_and_evaluate(tiny_config(**_SHORT), str(run))
  printed = capsys.readouterr().out
  assert "checkpoint at step 4" in printed and "sha256 mismatch" in printed, printed
  assert "from step 2" in printed and out["step"] == 4
