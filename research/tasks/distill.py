"""Knowledge distillation: a student classifier trained on a frozen teacher's
temperature-softened logits mixed with the hard labels.

Config fields read here (beside ClassifyTask's, which describe the student):
  distill.teacher_workdir  a finished scripts/train.py classification run; its
                           config.json says the teacher's model and input
                           preprocessing, its newest checkpoint gives weights
  distill.temperature      T > 0 (default 4)
  distill.alpha            weight of the soft term in [0, 1] (default 0.9)

The teacher's variables live in the training state (`state.teacher`), so they
are checkpointed with the student, but they are never given to the optimizer.
Each network sees the batch through its own preprocessing (the teacher may be
an EfficientNet at 224x224 with ImageNet normalization, the student a small
CNN at 28x28). Augmentation and mixing are not applied when distilling.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import lax

from research import checkpoint, parallel
from research.losses import distillation
from research.tasks import classify
from research.tasks.train_state import TrainState


@flax.struct.dataclass
class DistillState(TrainState):
  teacher: Any = None  # {'params': ..., maybe 'batch_stats': ...}; frozen


def load_teacher_task(workdir: str) -> classify.ClassifyTask:
  """The teacher's ClassifyTask (model, preprocessing) from a run's config.json."""
  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"distill.teacher_workdir: no config.json in {workdir!r} "
                            "(expected a finished scripts/train.py run)")
  with open(config_path) as f:
    t_config = ml_collections.ConfigDict(json.load(f))
  t_config.init = ml_collections.ConfigDict({"checkpoint": ""})
  return classify.ClassifyTask(t_config)


def load_teacher(workdir: str, example_batch, rng):
  """(teacher ClassifyTask, teacher variables) from a finished run's workdir.

  The teacher's newest checkpoint is read (and verified) by
  `research.checkpoint.restore_state`, as `trainer.load_state` reads any run.
  """
  teacher = load_teacher_task(workdir)
  abstract = jax.eval_shape(lambda: teacher.init_state(rng, example_batch))
  try:
    state = checkpoint.restore_state(workdir, abstract)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"distill.teacher_workdir: {e}") from e
  variables = {"params": state.params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
  return teacher, variables


class DistillTask(classify.ClassifyTask):
  """ClassifyTask whose loss is `losses.distillation.distillation_loss`."""

  def __init__(self, config):
    super().__init__(config)
    d = config.get("distill", {})
    if not d.get("teacher_workdir", ""):
      raise ValueError("distill.teacher_workdir must name a finished "
                       "classification run, got ''")
    self.temperature = float(d.get("temperature", 4.0))
    self.alpha = float(d.get("alpha", 0.9))
    if self.temperature <= 0:
      raise ValueError(f"distill.temperature must be > 0, got {self.temperature}")
    if not 0.0 <= self.alpha <= 1.0:
      raise ValueError(f"distill.alpha must be in [0, 1], got {self.alpha}")

  @functools.cached_property
  def teacher_task(self) -> classify.ClassifyTask:
    """The teacher's model and preprocessing, from its run's config.json (no weights)."""
    return load_teacher_task(self.config.distill.teacher_workdir)

  def init_state(self, rng, batch):
    student_rng, teacher_rng = jax.random.split(rng)
    variables = self.init_variables(student_rng, batch)
    # Concrete even when traced (trainer.load_state calls init_state under
    # jax.eval_shape): the teacher's weights are read from disk, not computed.
    with jax.ensure_compile_time_eval():
      _, teacher_vars = load_teacher(
          self.config.distill.teacher_workdir,
          jax.tree.map(lambda x: np.asarray(x)[:1], dict(batch)), teacher_rng)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    # ClassifyTask's optimizer: optimizer.frozen / lr_mults / layer_decay and bn_mode
    # apply to the student as they do to a classifier.
    return DistillState.create(params, self.optimizer(params, batch_stats), batch_stats,
                               teacher=teacher_vars)

  def train_step(self, state, batch, rng):
    teacher_logits = self.teacher_task.model.apply(
        state.teacher, self.teacher_task.inputs(batch["image"]), train=False)
    teacher_logits = lax.stop_gradient(teacher_logits)
    x = self.inputs(batch["image"])

    def loss_fn(params, b, rng):
      logits, new_stats = self.apply(params, state.batch_stats, b["x"], True, rng)
      loss = jnp.mean(distillation.distillation_loss(
          logits, b["teacher_logits"], b["label"], self.temperature, self.alpha))
      return loss, (new_stats, jnp.mean(jnp.argmax(logits, -1) == b["label"]))

    params, opt_state, loss, (new_stats, accuracy) = state.apply_loss(
        loss_fn, {"x": x, "teacher_logits": teacher_logits, "label": batch["label"]}, rng,
        self.grad_accum_steps)
    metrics = parallel.mean({
        "loss": loss,
        "accuracy": accuracy,
        "teacher_accuracy": jnp.mean(jnp.argmax(teacher_logits, -1) == batch["label"]),
    })
    return state.replace(step=state.step + 1, params=params, batch_stats=new_stats,
                         opt_state=opt_state), metrics
