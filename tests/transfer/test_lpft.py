"""LP-FT: the classify task's head starts as the linear probe fitted on
directly computed features of the run's own training images; nothing else
changes."""
import jax
import ml_collections
import numpy as np
import pytest

from research import data
from research import params as P
from research.tasks.classify import ClassifyTask
from research.transfer import lpft, probes


def _config(tiny_config, kind):
  c = tiny_config(**{"data.few_shot_k": 6, "data.few_shot_val": 2})
  c.init = ml_collections.ConfigDict(dict(checkpoint="", dont_load=(), head_from_probe=kind))
  return c


@pytest.mark.parametrize("kind", ["ridge", pytest.param("logistic", marks=pytest.mark.slow)])
def test_head_from_probe_sets_the_probe_head_and_nothing_else(tiny_config, kind):
  config = _config(tiny_config, kind)
  batch = {"image": np.zeros((1, 28, 28, 1), np.uint8)}
  plain = ClassifyTask(_config(tiny_config, ""))
  before = plain.init_variables(jax.random.PRNGKey(3), batch)
  task = ClassifyTask(config)
  after = task.init_variables(jax.random.PRNGKey(3), batch)

  # Reference: the probe on features from model.apply of the k - val training
  # images, L2 chosen on the held-out validation images.
  train, val = data.load_train(config.data), data.load_val(config.data)
  assert len(train["label"]) == 40 and len(val["label"]) == 20
  feats = lambda a: np.asarray(task.model.apply(before, task.inputs(a["image"]), train=False,
                                                return_features=True)[1])
  want = probes.fit_probe(kind, feats(train), train["label"], feats(val), val["label"], 10)
  # Batched over 8 devices vs one apply: features differ in rounding, which
  # L-BFGS's iterates amplify a little (max 8e-5 seen on kernels of size ~1).
  tol = dict(rtol=1e-4, atol=1e-5) if kind == "ridge" else dict(rtol=1e-3, atol=5e-4)
  np.testing.assert_allclose(after["params"]["head"]["kernel"], want.w, **tol)
  np.testing.assert_allclose(after["params"]["head"]["bias"], want.b, **tol)
  got, init = P.flatten(after["params"]), P.flatten(before["params"])
  assert sorted(got) == sorted(init)
  for name in init:
    if not name.startswith("head/"):
      np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(init[name]), err_msg=name)


def test_head_from_probe_under_eval_shape_keeps_the_shapes(tiny_config):
  """trainer.load_state builds the state with jax.eval_shape: no images are run."""
  task = ClassifyTask(_config(tiny_config, "ridge"))
  batch = {"image": np.zeros((1, 28, 28, 1), np.uint8), "label": np.zeros((1,), np.int32)}
  abstract = jax.eval_shape(lambda: task.init_state(jax.random.PRNGKey(0), batch))
  assert abstract.params["head"]["kernel"].shape == (256, 10)


def test_head_from_probe_needs_a_dense_head(tiny_config):
  task = ClassifyTask(_config(tiny_config, ""))
  variables = task.init_variables(jax.random.PRNGKey(0),
                                  {"image": np.zeros((1, 28, 28, 1), np.uint8)})
  renamed = {"params": {("classifier" if k == "head" else k): v
                        for k, v in variables["params"].items()}}
  with pytest.raises(ValueError, match="no Dense 'head'"):
    lpft.head_from_probe(renamed, task.model, task.inputs, task.config.data, "ridge", 10)
