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

import json
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax import lax

from research import optim
from research.losses import distillation
from research.parallel import AXIS
from research.tasks import classify


@flax.struct.dataclass
class DistillState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  teacher: Any  # {'params': ..., maybe 'batch_stats': ...}; frozen


def load_teacher(workdir: str, example_batch, rng):
  """(teacher ClassifyTask, teacher variables) from a finished run's workdir."""
  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"distill.teacher_workdir: no config.json in {workdir!r} "
                            "(expected a finished scripts/train.py run)")
  with open(config_path) as f:
    t_config = ml_collections.ConfigDict(json.load(f))
  t_config.init = ml_collections.ConfigDict({"checkpoint": ""})
  teacher = classify.ClassifyTask(t_config)
  # A concrete sharding (one local device) so a checkpoint written on another
  # device count (e.g. an 8-device run) restores here; pmap replicates it later.
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device),
      jax.eval_shape(lambda: teacher.init_state(rng, example_batch)))
  mngr = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                               options=ocp.CheckpointManagerOptions(read_only=True))
  step = mngr.latest_step()
  if step is None:
    raise FileNotFoundError(f"distill.teacher_workdir: no checkpoint in {workdir}/checkpoints")
  state = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract)))["state"]
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
    self.teacher_task = None

  def init_state(self, rng, batch):
    student_rng, teacher_rng = jax.random.split(rng)
    variables = self.init_variables(student_rng, batch)
    # Concrete even when traced (trainer.load_state calls init_state under
    # jax.eval_shape): the teacher's weights are read from disk, not computed.
    with jax.ensure_compile_time_eval():
      self.teacher_task, teacher_vars = load_teacher(
          self.config.distill.teacher_workdir,
          jax.tree.map(lambda x: np.asarray(x)[:1], dict(batch)), teacher_rng)
    params = variables["params"]
    self.tx = optim.make(self.config.optimizer, params, self.config.num_steps)
    return DistillState(step=jnp.zeros((), jnp.int32), params=params,
                        batch_stats=variables.get("batch_stats", {}),
                        opt_state=self.tx.init(params), teacher=teacher_vars)

  def train_step(self, state, batch, rng):
    teacher_logits = self.teacher_task.model.apply(
        state.teacher, self.teacher_task.inputs(batch["image"]), train=False)
    teacher_logits = lax.stop_gradient(teacher_logits)
    x = self.inputs(batch["image"])

    def loss_fn(params):
      logits, new_stats = self.apply(params, state.batch_stats, x, True, rng)
      loss = jnp.mean(distillation.distillation_loss(
          logits, teacher_logits, batch["label"], self.temperature, self.alpha))
      return loss, (logits, new_stats)

    (loss, (logits, new_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    grads = lax.pmean(grads, AXIS)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = lax.pmean({
        "loss": loss,
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
        "teacher_accuracy": jnp.mean(jnp.argmax(teacher_logits, -1) == batch["label"]),
    }, AXIS)
    return state.replace(step=state.step + 1, params=params, batch_stats=new_stats,
                         opt_state=opt_state), metrics
