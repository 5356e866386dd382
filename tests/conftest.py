"""Test setup: 8 forced host devices so multi-device code runs on the CPU."""
import os

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


def tiny_classify_config(**overrides):
  """mnist5k classification small enough for a test: ~1 s per 10 steps on the CPU."""
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      "mnist5k_classify", os.path.join(os.path.dirname(__file__), "..", "configs",
                                       "mnist5k_classify.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config("quick")
  c.model.width = 4
  c.batch_size = 32
  c.eval_batch_size = 1000
  c.num_steps = 20
  c.eval_every = 10
  c.checkpoint_every = 10
  c.log_every = 5
  c.optimizer.warmup_steps = 0
  c.progress = False
  for k, v in overrides.items():
    node = c
    *path, last = k.split(".")
    for p in path:
      node = node[p]
    node[last] = v
  return c


@pytest.fixture(scope="session")
def tiny_config():
  return tiny_classify_config
