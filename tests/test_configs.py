"""Every config file builds with every variant it declares, and its quick variant trains
(big_vision's 'runlocal' idea): a broken config is caught here, not by a user."""
import glob
import os

import jax
import numpy as np
import pytest

from research import config_lib, trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))
# One step, and a test set cut to one eval batch, so that each config costs a compile, not a run.
_ONE_STEP = {"num_steps": 1, "eval_every": 1, "checkpoint_every": 1, "log_every": 1,
             "progress": False}


# Their one step (compile, evaluation, sample grids) costs 35-90 s on 2 shared CPU cores
# (Lite0, the SNGAN, the cVAE's IWAE evaluation, a teacher run first): run with `-m slow`.
# Every other config trains a step in the default suite; tests/test_scripts.py also trains the
# quick VAE and GAN configs end to end.
_SLOW_TO_COMPILE = {"mnist5k_cgan", "mnist5k_finetune", "mnist5k_distill", "mnist5k_cvae",
                    "mnist5k_dcgan", "mnist5k_vae", "mnist5k_prune", "completion"}


def _declared_variants(path):
  module = config_lib.load_module(path)
  return tuple(getattr(module, "VARIANTS", getattr(module, "_VARIANTS", ("quick",))))


def _name(path):
  return os.path.basename(path)[:-3]


@pytest.mark.parametrize("path", CONFIG_FILES, ids=_name)
def test_every_declared_variant_builds_and_a_typo_is_refused(path):
  variants = _declared_variants(path)
  assert "quick" in variants, f"{_name(path)} has no quick variant (README: every config has one)"
  for variant in ("",) + variants:
    config = config_lib.load(f"{path}:{variant}" if variant else path)
    assert config.task and config.num_steps > 0, variant
  with pytest.raises(ValueError, match="quik"):
    config_lib.load(f"{path}:quik")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  """A finished (one-step) classification run, for the configs that read a teacher."""
  workdir = str(tmp_path_factory.mktemp("teacher"))
  config = config_lib.apply_overrides(
      config_lib.load(os.path.join(REPO, "configs", "mnist5k_classify.py:quick")),
      {**_ONE_STEP, "eval_batch_size": 1000})
  trainer.train_and_evaluate(config, workdir)
  return workdir


@pytest.mark.parametrize("path", [
    pytest.param(p, marks=pytest.mark.slow) if _name(p) in _SLOW_TO_COMPILE else p
    for p in CONFIG_FILES], ids=_name)
def test_quick_variant_trains_a_step(path, tmp_path, request):
  config = config_lib.load(f"{path}:quick")
  overrides = dict(_ONE_STEP)
  if "distill" in config:
    overrides["distill.teacher_workdir"] = request.getfixturevalue("teacher")
  config = config_lib.apply_overrides(config, overrides)
  trainer.train_and_evaluate(config, str(tmp_path))
  _, state = trainer.load_state(str(tmp_path))
  leaves = jax.tree.leaves(state)
  assert leaves and all(np.isfinite(np.asarray(x, np.float64)).all() for x in leaves
                        if np.issubdtype(np.asarray(x).dtype, np.floating))
