"""profile_steps: a jax.profiler trace of a window of steps in WORKDIR/profile."""
import glob
import os

import pytest

from research import config_lib, profiling, trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_parse_accepts_a_window_and_names_the_field_otherwise():
  assert profiling.parse("") is None and profiling.parse("10:15") == (10, 15)
  for bad in ("15:10", "3", "a:b", "5:5"):
    with pytest.raises(ValueError, match=f"profile_steps={bad!r}"):
      profiling.parse(bad)


def test_a_run_writes_the_trace_of_its_window(tmp_path):
  config = config_lib.apply_overrides(
      config_lib.load(os.path.join(REPO, "configs", "mnist5k_classify.py:quick")),
      {"num_steps": 4, "eval_every": 4, "checkpoint_every": 4, "log_every": 2,
       "progress": False, "profile_steps": "1:3", "eval_batch_size": 1000})
  trainer.train_and_evaluate(config, str(tmp_path))
  traces = glob.glob(str(tmp_path / "profile" / "plugins" / "profile" / "*" / "*"))
  assert any(t.endswith(".xplane.pb") for t in traces), traces
  assert any(t.endswith(".trace.json.gz") for t in traces), traces


def test_a_bad_window_is_refused_before_the_run_starts(tmp_path):
  config = config_lib.apply_overrides(
      config_lib.load(os.path.join(REPO, "configs", "mnist5k_classify.py:quick")),
      {"profile_steps": "9:3"})
  with pytest.raises(ValueError, match="profile_steps='9:3'"):
    trainer.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "config.json")
