"""DistillTask on the shared trainer: a teacher run, then a student against it."""
import json
import os

import jax
import numpy as np
import pytest

from research import params as P
from research import config_lib, trainer
from research.tasks.distill import DistillTask
from tests.steps import one_device_step

_CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "mnist5k_distill.py")


def _distill_config(teacher_workdir, **overrides):
  tiny = {"model.width": 4, "batch_size": 32, "eval_batch_size": 1000, "num_steps": 10,
          "eval_every": 10, "checkpoint_every": 10, "log_every": 5,
          "optimizer.warmup_steps": 0, "progress": False,
          "distill.teacher_workdir": str(teacher_workdir)}
  return config_lib.apply_overrides(config_lib.load(_CONFIG + ":quick"), {**tiny, **overrides})


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tiny_config):
  tiny_classify_config = tiny_config
  workdir = tmp_path_factory.mktemp("teacher")
  # Width 6 so a student (width 4) and the teacher cannot be confused by shape.
  trainer.train_and_evaluate(tiny_classify_config(**{"model.width": 6, "num_steps": 10,
                                                     "eval_every": 10}), str(workdir))
  return workdir


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_distill_run_trains_the_student_and_keeps_the_teacher_frozen(teacher_dir, tmp_path):
  config = _distill_config(teacher_dir)
  out = trainer.train_and_evaluate(config, str(tmp_path))
  assert out["step"] == 10 and 0.0 <= out["accuracy"] <= 1.0
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  train = [r for r in rows if r["split"] == "train"]
  assert train and all(np.isfinite(r["loss"]) and "teacher_accuracy" in r for r in train)

  _, teacher_state = trainer.load_state(str(teacher_dir))
  task, state = trainer.load_state(str(tmp_path))
  want = P.flatten(teacher_state.params)
  got = P.flatten(state.teacher["params"])
  assert sorted(got) == sorted(want)
  for name in want:  # bit-for-bit: the optimizer never touched the teacher
    np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(want[name]), err_msg=name)
  # The student did train, and it is the width-4 model, not the teacher.
  student = P.flatten(state.params)
  assert student["Conv_0/kernel"].shape[-1] == 4
  assert want["Conv_0/kernel"].shape[-1] == 6
  init = P.flatten(task.init_variables(jax.random.split(jax.random.PRNGKey(0))[0],
                                       {"image": np.zeros((1, 28, 28, 1), np.uint8)})["params"])
  assert any(not np.array_equal(np.asarray(student[k]), np.asarray(init[k])) for k in init)


def test_train_step_loss_is_the_kd_loss_computed_by_hand(teacher_dir):
  temperature, alpha = 3.0, 0.6
  config = _distill_config(teacher_dir, **{"model.dropout": 0.0,
                                           "distill.temperature": temperature,
                                           "distill.alpha": alpha})
  task = DistillTask(config)
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (8, 28, 28, 1), dtype=np.uint8),
           "label": rng.integers(0, 10, 8).astype(np.int32)}
  state = task.init_state(jax.random.PRNGKey(0), batch)
  step = one_device_step(task)
  new, metrics = step(state, batch, jax.random.PRNGKey(1))

  # Teacher logits from the teacher run loaded on its own (not through DistillTask).
  t_task, t_state = trainer.load_state(str(teacher_dir))
  x = batch["image"].astype(np.float32) / 255.0
  t_logits = np.asarray(t_task.model.apply({"params": t_state.params}, x), np.float64)
  s_logits = np.asarray(task.model.apply({"params": state.params}, x), np.float64)
  p = _softmax(t_logits / temperature)
  q = _softmax(s_logits / temperature)
  kl = np.sum(p * (np.log(p) - np.log(q)), -1)
  ce = -np.log(_softmax(s_logits)[np.arange(8), batch["label"]])
  want = np.mean(alpha * temperature ** 2 * kl + (1 - alpha) * ce)
  np.testing.assert_allclose(float(metrics["loss"][0]), want, rtol=1e-5)
  t_acc = np.mean(t_logits.argmax(-1) == batch["label"])
  np.testing.assert_allclose(float(metrics["teacher_accuracy"][0]), t_acc)
  # One step moves the student only.
  np.testing.assert_array_equal(
      np.asarray(new.teacher["params"]["Conv_0"]["kernel"])[0],
      np.asarray(state.teacher["params"]["Conv_0"]["kernel"]))
  assert not np.array_equal(np.asarray(new.params["Conv_0"]["kernel"])[0],
                            np.asarray(state.params["Conv_0"]["kernel"]))


def test_bad_distill_settings_name_the_value(tmp_path):
  with pytest.raises(ValueError, match="teacher_workdir must name a finished"):
    DistillTask(_distill_config(""))
  with pytest.raises(ValueError, match="temperature must be > 0, got -1.0"):
    DistillTask(_distill_config(tmp_path, **{"distill.temperature": -1.0}))
  with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 1.5"):
    DistillTask(_distill_config(tmp_path, **{"distill.alpha": 1.5}))
  task = DistillTask(_distill_config(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match="no config.json in .*nowhere"):
    task.init_state(jax.random.PRNGKey(0), {"image": np.zeros((2, 28, 28, 1), np.uint8),
                                            "label": np.zeros(2, np.int32)})


def test_config_rejects_unknown_variants():
  with pytest.raises(ValueError, match=r"unknown variant\(s\) \['quik'\]"):
    config_lib.load(_CONFIG + ":quik")
  c = config_lib.load(_CONFIG)
  assert (c.task, c.model.width, c.distill.temperature) == ("distill", 8, 4.0)
