"""Unsupervised domain adaptation: labelled source images, unlabelled target images.

Two input streams on the shared trainer: `train_data` yields
{'source': {'image', 'label'}, 'target': {'image'}}; the target stream has no
labels at all, so no method can use them. Evaluation is one padded pass over
the target test split, the source test split and (optionally) a labelled
slice held out of the target train split, tagged by a 'domain' field:
'accuracy' is the target test accuracy, 'source_accuracy' the source test
accuracy and 'target_val_accuracy' the held-out slice's (for choosing
hyperparameters without looking at the test split).

Methods (`adapt.method`); f = the classifier's penultimate features:
  source_only  cross-entropy on source only.
  dann         + domain classifier on GRL(f) (Ganin & Lempitsky, 2015): the
               discriminator minimises its loss, the feature extractor gets the
               reversed gradient scaled by weight * lambda_p.
  coral        + weight * lambda_p * CORAL(f_s, f_t) (Sun & Saenko, 2016).
  mmd          + weight * lambda_p * MMD^2(f_s, f_t), multi-bandwidth Gaussian
               kernel (Long et al., 2015).
  importance   source cross-entropy weighted by w(x) = p(t|x) / p(s|x) from a
               domain classifier trained alongside on stop_gradient(f) or on the
               input images (`adapt.disc_input`); weights normalised per batch
               and clipped at `adapt.max_weight`.
lambda_p = 2 / (1 + exp(-10 p)) - 1, p = step / num_steps, when
`adapt.schedule == 'warm'`; 1 when 'constant'.

Config fields read here (beside ClassifyTask's, which describe the classifier
and its optimizer; `data` is the source dataset):
  target.name, target.train_split, target.eval_split, target.image_size,
  target.holdout_per_class (0 = no held-out slice), target.holdout_seed
  adapt.method, adapt.weight (>= 0), adapt.schedule ('warm' | 'constant'),
  adapt.gamma (10), adapt.disc_hidden (MLP width), adapt.disc_input
  ('features' | 'inputs', importance only), adapt.max_weight,
  adapt.mmd_kernels, adapt.mmd_kernel_mul,
  adapt.standardize ('none' | 'per_image': zero mean, unit std per image,
  for both domains and every method)

Augmentation (`augment`) is applied to both streams with independent keys,
for every method, so methods differ only in their adaptation term. Alignment
losses are computed on each device's slice of the batch; with BatchNorm
models the source and target halves share one forward pass (so one set of
batch statistics over both domains).
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from research import models, optim
from research.losses import classification as cls_losses
from research.losses import domain
from research.metrics import classification as metrics
from research.parallel import AXIS
from research.tasks import base, classify

METHODS = ("source_only", "dann", "coral", "mmd", "importance")
_NEEDS_DISC = ("dann", "importance")
# Eval 'domain' ids.
TARGET_TEST, SOURCE_TEST, TARGET_VAL = 0, 1, 2
_DOMAIN_NAMES = {TARGET_TEST: "", SOURCE_TEST: "source_", TARGET_VAL: "target_val_"}


@flax.struct.dataclass
class AdaptState:
  step: jax.Array
  params: Any           # the classifier (as ClassifyTask's TrainState.params)
  batch_stats: Any
  opt_state: Any
  disc_params: Any      # domain classifier; {} when the method has none
  disc_opt_state: Any   # {} when the method has none


def standardize_per_image(x: jax.Array, eps: float = 1e-3) -> jax.Array:
  """float [N, H, W, C] -> same shape, each image with mean 0 and std 1 (eps-floored)."""
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  std = jnp.std(x, axis=(1, 2, 3), keepdims=True)
  return (x - mean) / jnp.maximum(std, eps)


class AdaptTask(classify.ClassifyTask):
  """ClassifyTask on a labelled source with an unlabelled target and an adaptation term."""

  def __init__(self, config):
    super().__init__(config)
    a = config.get("adapt", {})
    self.method = a.get("method", "source_only")
    if self.method not in METHODS:
      raise ValueError(f"adapt.method must be one of {METHODS}, got {self.method!r}")
    self.weight = float(a.get("weight", 1.0))
    if self.weight < 0:
      raise ValueError(f"adapt.weight must be >= 0, got {self.weight}")
    self.schedule = a.get("schedule", "warm")
    if self.schedule not in ("warm", "constant"):
      raise ValueError(f"adapt.schedule must be 'warm' or 'constant', got {self.schedule!r}")
    self.gamma = float(a.get("gamma", 10.0))
    self.disc_input = a.get("disc_input", "features")
    if self.disc_input not in ("features", "inputs"):
      raise ValueError(f"adapt.disc_input must be 'features' or 'inputs', "
                       f"got {self.disc_input!r}")
    if self.disc_input == "inputs" and self.method == "dann":
      raise ValueError("adapt.disc_input='inputs' is for method 'importance'; DANN's "
                       "discriminator must see the features")
    self.max_weight = float(a.get("max_weight", 10.0))
    self.mmd_kernels = int(a.get("mmd_kernels", 5))
    self.mmd_kernel_mul = float(a.get("mmd_kernel_mul", 2.0))
    self.standardize = a.get("standardize", "none")
    if self.standardize not in ("none", "per_image"):
      raise ValueError(f"adapt.standardize must be 'none' or 'per_image', "
                       f"got {self.standardize!r}")
    if self.method in _NEEDS_DISC:
      if self.disc_input == "inputs" and self.method == "importance":
        # A small CNN on the images (no shared features with the classifier).
        self.discriminator = models.get_model("small_cnn", num_classes=1,
                                              width=int(a.get("disc_width", 8)))
      else:
        self.discriminator = models.get_model("domain_discriminator",
                                            hidden=int(a.get("disc_hidden", 256)))
    else:
      self.discriminator = None
    self.target_cfg = config.target

  # ---- host side ----
  def _target_train_and_val(self):
    from research import data  # pylint: disable=g-import-not-at-top
    t = self.target_cfg
    arrays = data.load(t.name, t.get("train_split", "train"), t.get("data_dir") or None,
                       t.get("image_size", 0))
    per_class = t.get("holdout_per_class", 0)
    if per_class:
      return data.split_holdout(arrays, per_class, t.get("holdout_seed", 0))
    return arrays, None

  def train_data(self, ctx: base.DataContext):
    from research import data  # pylint: disable=g-import-not-at-top
    source = data.train_iterator(self.config.data, ctx)
    target_train, _ = self._target_train_and_val()
    # Only images: the target's labels never enter training.
    target = data.ArrayIterator({"image": target_train["image"]}, ctx.global_batch_size,
                                ctx.seed + 1_000_003, ctx.process_index, ctx.process_count)
    return data.ZipIterator(source=source, target=target)

  def eval_data(self, ctx: base.DataContext):
    from research import data  # pylint: disable=g-import-not-at-top
    t = self.target_cfg
    sets = {TARGET_TEST: data.load(t.name, t.get("eval_split", "test"),
                                   t.get("data_dir") or None, t.get("image_size", 0)),
            SOURCE_TEST: data.load(self.config.data.name,
                                   self.config.data.get("eval_split", "test"),
                                   self.config.data.get("data_dir") or None,
                                   self.config.data.get("image_size", 0))}
    _, val = self._target_train_and_val()
    if val is not None:
      sets[TARGET_VAL] = val
    shapes = {k: v["image"].shape[1:] for k, v in sets.items()}
    if len(set(shapes.values())) != 1:
      raise ValueError(f"adapt: source and target images must have one shape "
                       f"(set target.image_size / data.image_size), got {shapes}")
    arrays = {"image": np.concatenate([s["image"] for s in sets.values()]),
              "label": np.concatenate([s["label"] for s in sets.values()]),
              "domain": np.concatenate([np.full(len(s["label"]), d, np.int32)
                                        for d, s in sets.items()])}
    return data.eval_batches_from_arrays(
        arrays, self.config.get("eval_batch_size", ctx.global_batch_size),
        ctx.process_index, ctx.process_count)

  def summarize_eval(self, sums):
    out = {}
    for d, prefix in _DOMAIN_NAMES.items():
      confusion = np.asarray(sums["confusion"])[d]
      count = float(np.sum(confusion))
      if count == 0:
        continue
      for k, v in metrics.precision_recall_f1(confusion).items():
        out[prefix + k] = v
      out[prefix + "loss"] = float(np.asarray(sums["loss_sum"])[d]) / count
    out["confusion"] = np.asarray(sums["confusion"])[TARGET_TEST].astype(int).tolist()
    return out

  # ---- model plumbing ----
  def inputs(self, images):
    x = super().inputs(images)
    return standardize_per_image(x) if self.standardize == "per_image" else x

  def _train_inputs(self, images, rng):
    x = classify.preprocess(images, self.input_cfg)
    if self.augment is not None:
      x = self.augment(rng, x)
    x = classify.normalize(x, self.input_cfg.get("normalize", "unit"))
    return standardize_per_image(x) if self.standardize == "per_image" else x

  def init_state(self, rng, batch):
    clf_rng, disc_rng = jax.random.split(rng)
    variables = self.init_variables(clf_rng, batch["source"])
    params = variables["params"]
    self.tx = optim.make(self.config.optimizer, params, self.config.num_steps)
    disc_params, disc_opt_state = {}, {}
    if self.discriminator is not None:
      if self.disc_input == "inputs" and self.method == "importance":
        example = self.inputs(jnp.asarray(batch["source"]["image"][:1]))
      else:
        _, feats = self.model.apply(variables, self.inputs(
            jnp.asarray(batch["source"]["image"][:1])), train=False, return_features=True)
        example = feats
      disc_params = self.discriminator.init(disc_rng, example)["params"]
      self.disc_tx = optim.make(self.config.optimizer, disc_params, self.config.num_steps)
      disc_opt_state = self.disc_tx.init(disc_params)
    return AdaptState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}),
                      opt_state=self.tx.init(params), disc_params=disc_params,
                      disc_opt_state=disc_opt_state)

  def _forward(self, params, batch_stats, x, rng):
    """(logits, features, new_batch_stats) of the classifier in train mode."""
    variables = {"params": params}
    if batch_stats:
      variables["batch_stats"] = batch_stats
    (logits, feats), updates = self.model.apply(
        variables, x, train=True, return_features=True, rngs={"dropout": rng},
        mutable=["batch_stats"])
    return logits, feats, updates.get("batch_stats", batch_stats)

  def _disc(self, disc_params, x):
    return self.discriminator.apply({"params": disc_params}, x)

  # ---- per device ----
  def train_step(self, state, batch, rng):
    src_rng, tgt_rng, drop_rng = jax.random.split(rng, 3)
    x_s = self._train_inputs(batch["source"]["image"], src_rng)
    x_t = self._train_inputs(batch["target"]["image"], tgt_rng)
    n = x_s.shape[0]
    targets = jax.nn.one_hot(batch["source"]["label"], self.num_classes)
    smoothing = self.config.get("label_smoothing", 0.0)
    if smoothing:
      targets = cls_losses.smooth_labels(targets, smoothing)
    progress = state.step.astype(jnp.float32) / self.config.num_steps
    lam = (domain.grl_schedule(progress, self.gamma) if self.schedule == "warm"
           else jnp.ones((), jnp.float32))
    needs_target_features = self.method in ("dann", "coral", "mmd") or (
        self.method == "importance" and self.disc_input == "features")

    def loss_fn(params, disc_params):
      aux = {}
      if needs_target_features:
        logits, feats, new_stats = self._forward(
            params, state.batch_stats, jnp.concatenate([x_s, x_t]), drop_rng)
        logits, f_s, f_t = logits[:n], feats[:n], feats[n:]
      else:
        logits, f_s, new_stats = self._forward(params, state.batch_stats, x_s, drop_rng)
      ce = cls_losses.softmax_cross_entropy(logits, targets)
      if self.method == "source_only":
        loss = jnp.mean(ce)
      elif self.method == "dann":
        d = self._disc(disc_params, domain.gradient_reversal(
            jnp.concatenate([f_s, f_t]), self.weight * lam))
        aux["domain_loss"] = domain.domain_classifier_loss(d[:n], d[n:])
        aux["domain_accuracy"] = domain.domain_accuracy(d[:n], d[n:])
        loss = jnp.mean(ce) + aux["domain_loss"]
      elif self.method in ("coral", "mmd"):
        align = (domain.coral_loss(f_s, f_t) if self.method == "coral"
                 else domain.mmd_loss(f_s, f_t, num_kernels=self.mmd_kernels,
                                      kernel_mul=self.mmd_kernel_mul))
        aux[f"{self.method}_loss"] = align
        loss = jnp.mean(ce) + self.weight * lam * align
      else:  # importance
        if self.disc_input == "features":
          d_in = lax.stop_gradient(jnp.concatenate([f_s, f_t]))
        else:
          d_in = jnp.concatenate([x_s, x_t])
        d = self._disc(disc_params, d_in)
        w = domain.importance_weights(jax.nn.sigmoid(d[:n]), self.max_weight)
        aux["domain_loss"] = domain.domain_classifier_loss(d[:n], d[n:])
        aux["domain_accuracy"] = domain.domain_accuracy(d[:n], d[n:])
        aux["weight_ess"] = domain.effective_sample_size(w)
        aux["weight_max"] = jnp.max(w)
        loss = jnp.mean(w * ce) + aux["domain_loss"]
      aux["ce"] = jnp.mean(ce)
      return loss, (logits, new_stats, aux)

    (loss, (logits, new_stats, aux)), (grads, disc_grads) = jax.value_and_grad(
        loss_fn, argnums=(0, 1), has_aux=True)(state.params, state.disc_params)
    grads = lax.pmean(grads, AXIS)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    disc_params, disc_opt_state = state.disc_params, state.disc_opt_state
    if self.discriminator is not None:
      disc_grads = lax.pmean(disc_grads, AXIS)
      disc_updates, disc_opt_state = self.disc_tx.update(
          disc_grads, state.disc_opt_state, state.disc_params)
      disc_params = optax.apply_updates(state.disc_params, disc_updates)
    if state.batch_stats:
      new_stats = lax.pmean(new_stats, AXIS)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["source"]["label"])
    metrics_ = lax.pmean({"loss": loss, "accuracy": accuracy, "lambda": lam, **aux}, AXIS)
    return state.replace(step=state.step + 1, params=params, batch_stats=new_stats,
                         opt_state=opt_state, disc_params=disc_params,
                         disc_opt_state=disc_opt_state), metrics_

  def eval_step(self, state, batch):
    logits, _ = self.apply(state.params, state.batch_stats, self.inputs(batch["image"]), False)
    mask = batch["mask"]
    loss = cls_losses.cross_entropy(logits, batch["label"])
    pred = jnp.argmax(logits, -1)
    n_dom = len(_DOMAIN_NAMES)
    dom = jax.nn.one_hot(batch["domain"], n_dom) * mask[:, None]  # [N, D]
    confusion = jnp.stack([metrics.confusion_matrix(pred, batch["label"], self.num_classes,
                                                    dom[:, d]) for d in range(n_dom)])
    return {"loss_sum": jnp.sum(loss[:, None] * dom, axis=0),
            "count": jnp.sum(mask),
            "confusion": confusion}

  def params_for_export(self, state):
    return state.params
