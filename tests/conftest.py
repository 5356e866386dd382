"""Test setup: 8 forced host devices so multi-device code runs on the CPU."""
import os

# Must happen before jax is imported anywhere. Most tests compile more than they run, so
# LLVM optimises less: XLA's CPU backend compiles ~25% faster (results may differ from an
# optimised build in the last bits; tests compare across paths with tolerances).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                      "--xla_backend_optimization_level=0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# One persistent XLA compilation cache for the test run, its xdist workers and the
# subprocesses they start (inherited through the environment): many tests compile the
# same tiny programs, and a cache hit skips XLA's compile. A fresh clone starts empty.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache", "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import pytest  # noqa: E402


def tiny_classify_config(**overrides):
  """mnist5k classification small enough for a test: ~1 s per 10 steps on the CPU."""
  from research import config_lib  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(__file__), "..", "configs", "mnist5k_classify.py")
  tiny = {"model.width": 4, "batch_size": 32, "eval_batch_size": 1000, "num_steps": 20,
          "eval_every": 10, "checkpoint_every": 10, "log_every": 5,
          "optimizer.warmup_steps": 0, "progress": False}
  return config_lib.apply_overrides(config_lib.load(path + ":quick"), {**tiny, **overrides})


@pytest.fixture(scope="session")
def tiny_config():
  return tiny_classify_config


@pytest.fixture(scope="module")
def one_torch_thread():
  """PyTorch on one thread for a module (use: pytestmark usefixtures): its tiny ops
  then avoid OpenMP spin-waits on a busy (or xdist-shared) CPU. torch is imported
  only by the modules that ask for it."""
  import torch  # pylint: disable=g-import-not-at-top
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)
