"""Unsupervised domain adaptation: labelled source images, unlabelled target images.

Two input streams on the shared trainer: `train_data` yields
{'source': {'image', 'label'}, 'target': {'image'}}; the target stream has no
labels at all, so no method can use them (except the `oracle` arm, whose
labelled stream is the target train split itself). Evaluation is one padded
pass over the target test split, the source test split and (optionally) a
labelled slice held out of the target train split, tagged by a 'domain'
field: 'accuracy' is the target test accuracy, 'source_accuracy' the source
test accuracy and 'target_val_accuracy' the held-out slice's (for choosing
hyperparameters without looking at the test split).

Methods (`adapt.method`); f = the classifier's features, g = softmax(logits):
  source_only  cross-entropy on source only.
  oracle       cross-entropy on the labelled target train split (minus the
               held-out slice), same model and budget: the upper reference.
  dann         + domain classifier on GRL(f) (Ganin & Lempitsky, 2015): the
               discriminator minimises its loss, the feature extractor gets the
               reversed gradient scaled by weight * lambda_p.
  cdan         + domain classifier on GRL(f) (x) g (Long et al., 2018), the
               randomized map (d_out = adapt.cdan_out_dim) when d_f * d_g >
               adapt.cdan_random_threshold; g carries no gradient (as the
               reference code).
  cdan_e       cdan with each example's domain loss weighted by 1 + exp(-H(g)),
               normalised per domain.
  coral        + weight * lambda_p * CORAL(f_s, f_t) (Sun & Saenko, 2016).
  mmd          + weight * lambda_p * MMD^2(f_s, f_t), multi-bandwidth Gaussian
               kernel (Long et al., 2015).
  importance   source cross-entropy weighted by w(x) = p(t|x) / p(s|x) from a
               domain classifier trained alongside on stop_gradient(f) or on the
               input images (`adapt.disc_input`); weights normalised per batch
               and clipped at `adapt.max_weight`.
lambda_p = 2 / (1 + exp(-gamma p)) - 1, p = step / num_steps, when
`adapt.schedule == 'warm'`; 1 when 'constant'. DANN's learning-rate
annealing is `optimizer.schedule = 'anneal'`.

Config fields read here (beside ClassifyTask's, which describe the classifier
and its optimizer; `data` is the source dataset):
  target.name, target.train_split, target.eval_split, target.image_size,
  target.frame, target.frame_size, target.frame_threshold, target.frame_levels
  (digit framing, research/data/frame.py; `data.frame...` frames the source),
  target.holdout_per_class (0 = no held-out slice), target.holdout_seed
  adapt.* (research.tasks.adapt_methods.MethodConfig)
Classification's optimizer fields apply to the classifier as they do there:
optimizer.frozen, optimizer.lr_mults, optimizer.layer_decay, bn_mode
('frozen_stats' / 'frozen' need a BatchNorm model that takes
use_running_average, else a ValueError); `mix` other than 'none' and
`grad_accum_steps` other than 1 (the adaptation terms are statistics of the
whole per-device batch) are rejected.
The domain classifier gets the same optimizer without frozen / lr_mults rules.

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

from research import optim, parallel
from research.losses import classification as cls_losses
from research.metrics import classification as metrics
from research.tasks import adapt_methods, base, classify, train_state
from research.tasks.adapt_methods import METHODS  # noqa: F401  (re-exported)

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
  optimizer: Any = flax.struct.field(pytree_node=False)       # train_state.Optimizer
  disc_optimizer: Any = flax.struct.field(pytree_node=False)  # None without a discriminator


def standardize_per_image(x: jax.Array, eps: float = 1e-3) -> jax.Array:
  """float [N, H, W, C] -> same shape, each image with mean 0 and std 1 (eps-floored)."""
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  std = jnp.std(x, axis=(1, 2, 3), keepdims=True)
  return (x - mean) / jnp.maximum(std, eps)


def load_domain(block, split: str) -> dict:
  """{'image': uint8 [N, H, W, C], 'label': int32 [N]} of `split` of a target block.

  `block.name` is a dataset name (research.data.load) or an .npz path template
  with '{split}' holding {'image', 'label'}; the block's framing fields
  (`frame`, ...; research/data/frame.py) and `image_size` (0 = as stored)
  apply on load, as for a `data` block.
  """
  from research import data  # pylint: disable=g-import-not-at-top
  if block.name.endswith(".npz"):
    if "{split}" not in block.name:
      raise ValueError(f"target.name={block.name!r}: an .npz target needs a '{{split}}' "
                       f"placeholder for its train and test files")
    arrays = data.load_npz(block.name.format(split=split))
    arrays["image"] = data.frame.frame_and_resize(arrays["image"], block)
    return arrays
  return data.load_split(block, split)


class AdaptTask(classify.ClassifyTask):
  """ClassifyTask on a labelled source with an unlabelled target and an adaptation term."""

  def __init__(self, config):
    super().__init__(config)
    self.adapt = adapt_methods.MethodConfig(config.get("adapt", {}))
    self.method = self.adapt.method
    self.standardize = self.adapt.standardize
    if self.mix != "none":
      raise ValueError(f"adapt: mix={self.mix!r} is not supported by the adaptation task "
                       f"(mixing would blend labelled source images only); set mix='none'")
    if self.grad_accum_steps != 1:
      raise ValueError(f"adapt: grad_accum_steps={self.grad_accum_steps} is not supported "
                       f"(the adaptation terms are statistics of the whole per-device "
                       f"batch); use 1")
    self.discriminator = self.adapt.discriminator(self.model.dtype)
    self.target_cfg = config.target

  # ---- host side ----
  def _target_train_and_val(self):
    from research import data  # pylint: disable=g-import-not-at-top
    t = self.target_cfg
    arrays = load_domain(t, t.get("train_split", "train"))
    per_class = t.get("holdout_per_class", 0)
    if per_class:
      return data.split_holdout(arrays, per_class, t.get("holdout_seed", 0))
    return arrays, None

  def train_data(self, ctx: base.DataContext):
    from research import data  # pylint: disable=g-import-not-at-top
    target_train, _ = self._target_train_and_val()
    if self.method == "oracle":
      # The reference arm: the labelled stream is the target's own train split.
      source = data.ArrayIterator(target_train, ctx.global_batch_size, ctx.seed,
                                  ctx.process_index, ctx.process_count)
    else:
      source = data.train_iterator(self.config.data, ctx)
    # Only images: the target's labels never enter training.
    target = data.ArrayIterator({"image": target_train["image"]}, ctx.global_batch_size,
                                ctx.seed + 1_000_003, ctx.process_index, ctx.process_count)
    return data.ZipIterator(source=source, target=target)

  def eval_data(self, ctx: base.DataContext):
    from research import data  # pylint: disable=g-import-not-at-top
    t, d = self.target_cfg, self.config.data
    sets = {TARGET_TEST: load_domain(t, t.get("eval_split", "test")),
            SOURCE_TEST: data.load_split(d, d.get("eval_split", "test"))}
    _, val = self._target_train_and_val()
    if val is not None:
      sets[TARGET_VAL] = val
    # Gray and colour domains meet in one eval pass at input.channels.
    sets = adapt_methods.as_numpy_channels(sets, self.input_cfg.get("channels", 0))
    shapes = {k: v["image"].shape[1:] for k, v in sets.items()}
    if len(set(shapes.values())) != 1:
      raise ValueError(f"adapt: source and target images must have one shape "
                       f"(set target.image_size / data.image_size, and input.channels=3 "
                       f"for a gray and a colour domain), got {shapes}")
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
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    if self.bn_mode != "train" and not batch_stats:
      raise ValueError(f"adapt: bn_mode={self.bn_mode!r} needs a model with BatchNorm; "
                       f"{self.config.model.name!r} has no batch statistics (use 'train')")
    opt = self.optimizer(params, batch_stats)
    disc_params, disc_opt_state, disc_opt = {}, {}, None
    if self.discriminator is not None:
      x = self.inputs(jnp.asarray(batch["source"]["image"][:2]))
      logits, feats = self.model.apply(variables, x, train=False, return_features=True)
      disc_params = self.discriminator.init(
          disc_rng, self.adapt.disc_example(feats, logits, x))["params"]
      # Classifier-path rules (frozen, lr_mults) name classifier parameters only.
      disc_opt = train_state.Optimizer(optim.make(
          self.config.optimizer, disc_params, self.config.num_steps, frozen=(), lr_mults=()))
      disc_opt_state = disc_opt.init(disc_params)
    return AdaptState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=opt.init(params), disc_params=disc_params,
                      disc_opt_state=disc_opt_state, optimizer=opt, disc_optimizer=disc_opt)

  def _forward(self, params, batch_stats, x, rng):
    """(logits, features, new_batch_stats) of the classifier in train mode (bn_mode honoured)."""
    variables = {"params": params}
    if batch_stats:
      variables["batch_stats"] = batch_stats
    if self.bn_mode != "train":
      logits, feats = self.model.apply(variables, x, train=True, return_features=True,
                                       use_running_average=True, rngs={"dropout": rng})
      return logits, feats, batch_stats
    (logits, feats), updates = self.model.apply(
        variables, x, train=True, return_features=True, rngs={"dropout": rng},
        mutable=["batch_stats"])
    return logits, feats, updates.get("batch_stats", batch_stats)

  def _disc(self, disc_params, x):
    return self.discriminator.apply({"params": disc_params}, x)

  # ---- per device ----
  def train_step(self, state, batch, rng):
    src_rng, tgt_rng, drop_rng = jax.random.split(rng, 3)
    cfg = self.adapt
    x_s = self._train_inputs(batch["source"]["image"], src_rng)
    x_t = self._train_inputs(batch["target"]["image"], tgt_rng) if cfg.uses_target else None
    n = x_s.shape[0]
    targets = jax.nn.one_hot(batch["source"]["label"], self.num_classes)
    smoothing = self.config.get("label_smoothing", 0.0)
    if smoothing:
      targets = cls_losses.smooth_labels(targets, smoothing)
    lam = cfg.lambda_p(state.step.astype(jnp.float32) / self.config.num_steps)
    has_disc = self.discriminator is not None

    def loss_fn(params, _, __):
      params, disc_params = params if has_disc else (params, state.disc_params)
      x = jnp.concatenate([x_s, x_t]) if cfg.needs_target_features else x_s
      logits, feats, new_stats = self._forward(params, state.batch_stats, x, drop_rng)
      ce = cls_losses.softmax_cross_entropy(logits[:n], targets)
      ce_weights, term, aux = adapt_methods.adaptation_term(
          cfg, self._disc, disc_params, logits, feats, n, lam, x_s, x_t)
      loss = (jnp.mean(ce) if ce_weights is None else jnp.mean(ce_weights * ce)) + term
      aux["ce"] = jnp.mean(ce)
      return loss, (logits[:n], new_stats, aux)

    # One loss trains the classifier and (if any) the domain classifier, each with its
    # own optimizer; the classifier's frozen leaves get no gradient.
    if has_disc:
      (params, disc_params), (opt_state, disc_opt_state), loss, (logits, new_stats, aux) = (
          train_state.update(loss_fn, (state.params, state.disc_params),
                             (state.opt_state, state.disc_opt_state),
                             (state.optimizer, state.disc_optimizer)))
    else:
      params, opt_state, loss, (logits, new_stats, aux) = train_state.update(
          loss_fn, state.params, state.opt_state, state.optimizer)
      disc_params, disc_opt_state = state.disc_params, state.disc_opt_state
    if state.batch_stats:
      new_stats = parallel.mean(new_stats)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["source"]["label"])
    metrics_ = parallel.mean({"loss": loss, "accuracy": accuracy, "lambda": lam, **aux})
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
