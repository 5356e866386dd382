"""Supervised classification (and fine-tuning): cross-entropy on labelled images.

Config fields read here (beside the trainer's):
  model.name, model.* (constructor kwargs, e.g. num_classes)
  input.size (resize on the device, 0 = as stored), input.channels (1 -> 3 by
    repeating gray), input.normalize ('unit' = [0, 1], 'imagenet', 'centered')
  augment (spec string for research.augment, '' = none), mix ('none' | 'mixup' | 'cutmix'), mix_alpha
  label_smoothing, optimizer.* (research.optim)
  optimizer.layer_decay (0 = off): layer-wise LR decay of an EfficientNet-Lite,
    expanded into optimizer.lr_mults rules (research.transfer)
  bn_mode: 'train' (batch statistics, running stats updated) | 'frozen_stats'
    (running statistics used and kept; scale/bias trainable) | 'frozen'
    (frozen_stats, and every BatchNorm's scale/bias added to optimizer.frozen)
  init.checkpoint / init.dont_load (pretrained weights, see research.transfer)
  init.head_from_probe ('' | 'logistic' | 'ridge'): LP-FT, the head starts as a
    linear probe on the run's training images (research.transfer.lpft)
  fewshot (optional): few-shot probes of `features` during training
    (research.transfer.fewshot_eval)

With frozen parameters (optimizer.frozen or bn_mode='frozen') the train step
differentiates only the trainable subset, so frozen layers cost no gradients.
grad_accum_steps > 1 splits each device's batch into micro-batches
(research.tasks.train_state; with BatchNorm each micro-batch has its own
statistics).
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from research import models, optim, parallel
from research.losses import classification as losses
from research.metrics import classification as metrics
from research.tasks import base
from research.tasks.train_state import Optimizer, TrainState

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
_NORMALIZE = ("unit", "imagenet", "centered")
_BN_MODES = ("train", "frozen_stats", "frozen")


def preprocess(images: jax.Array, cfg) -> jax.Array:
  """uint8 [N, H, W, C] -> float32 [N, size, size, channels] in the range the model expects."""
  x = images.astype(jnp.float32) / 255.0
  size = cfg.get("size", 0)
  if size and x.shape[1:3] != (size, size):
    x = jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), "bilinear")
  channels = cfg.get("channels", 0)
  if channels and x.shape[-1] != channels:
    if x.shape[-1] != 1:
      raise ValueError(f"input.channels={channels} but images have {x.shape[-1]} channels")
    x = jnp.repeat(x, channels, axis=-1)
  return x


def normalize(x: jax.Array, kind: str) -> jax.Array:
  """Maps [0, 1] images to the model's input range ('unit' leaves them in [0, 1])."""
  if kind not in _NORMALIZE:
    raise ValueError(f"input.normalize must be one of {_NORMALIZE}, got {kind!r}")
  if kind == "imagenet":
    return (x - IMAGENET_MEAN[: x.shape[-1]]) / IMAGENET_STD[: x.shape[-1]]
  if kind == "centered":
    return x * 2.0 - 1.0
  return x


class ClassifyTask(base.Task):
  """Cross-entropy classifier with optional on-device augmentation and mixing."""

  def __init__(self, config):
    super().__init__(config)
    kwargs = dict(config.model)
    name = kwargs.pop("name")
    self.num_classes = kwargs.get("num_classes", 10)
    self.model = models.get_model(name, axis_name=parallel.batchnorm_axis_name(),
                                  dtype=models.compute_dtype(config.get("dtype", "float32")),
                                  **kwargs)
    self.input_cfg = config.get("input", {})
    spec = config.get("augment", "")
    self.augment = None
    if spec:
      from research import augment  # pylint: disable=g-import-not-at-top
      self.augment = augment.build(spec)
    self.mix = config.get("mix", "none")
    self.bn_mode = config.get("bn_mode", "train")
    if self.bn_mode not in _BN_MODES:
      raise ValueError(f"bn_mode must be one of {_BN_MODES}, got {self.bn_mode!r}")

  # ---- model plumbing shared with tasks that reuse a classifier ----
  def inputs(self, images):
    return normalize(preprocess(images, self.input_cfg), self.input_cfg.get("normalize", "unit"))

  def init_variables(self, rng, batch):
    x = self.inputs(jnp.asarray(batch["image"][:1]))
    variables = self.model.init({"params": rng, "dropout": rng}, x, train=False)
    init = self.config.get("init", {})
    if init.get("checkpoint", ""):
      from research import transfer  # pylint: disable=g-import-not-at-top
      variables = transfer.load_pretrained(variables, init.checkpoint,
                                           dont_load=tuple(init.get("dont_load", ())))
    if init.get("head_from_probe", ""):  # LP-FT: the head starts as a linear probe
      from research.transfer import lpft  # pylint: disable=g-import-not-at-top
      variables, probe = lpft.head_from_probe(variables, self.model, self.inputs,
                                              self.config.data, init.head_from_probe,
                                              self.num_classes,
                                              mode=self.config.get("parallel", "pmap"))
      if probe is not None:  # None under jax.eval_shape
        print(f"init.head_from_probe: {init.head_from_probe} probe, l2={probe.l2:g}, "
              f"val accuracy {max(probe.val_accuracy):.4f}", flush=True)
    return variables

  def init_state(self, rng, batch):
    variables = self.init_variables(rng, batch)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    return TrainState.create(params, self.optimizer(params, batch_stats), batch_stats)

  def optimizer(self, params, batch_stats) -> Optimizer:
    """The classifier's optimizer: optimizer.*, with bn_mode / layer_decay expanded."""
    frozen, lr_mults = self.partitions(params, batch_stats)
    return Optimizer(optim.make(self.config.optimizer, params, self.config.num_steps,
                                frozen=frozen, lr_mults=lr_mults), frozen)

  def partitions(self, params, batch_stats):
    """(frozen regexes, lr_mults rules) from optimizer.* and bn_mode."""
    cfg = self.config.optimizer
    frozen = tuple(cfg.get("frozen", ()) or ())
    lr_mults = tuple(tuple(r) for r in (cfg.get("lr_mults", ()) or ()))
    if self.bn_mode == "frozen" or cfg.get("layer_decay", 0.0):
      from research import transfer  # pylint: disable=g-import-not-at-top
      if self.bn_mode == "frozen":
        frozen += tuple(transfer.batchnorm_affine_patterns(batch_stats))
      if cfg.get("layer_decay", 0.0):
        # Explicit lr_mults come first, so they win over the generated rules.
        lr_mults += tuple(transfer.efficientnet_layer_decay_rules(params, cfg.layer_decay))
    return frozen, lr_mults

  def apply(self, params, batch_stats, x, train, rng=None):
    variables = {"params": params}
    if batch_stats:
      variables["batch_stats"] = batch_stats
    if train and self.bn_mode != "train":
      out = self.model.apply(variables, x, train=True, use_running_average=True,
                             rngs={"dropout": rng})
      return out, batch_stats
    if train:
      out, updates = self.model.apply(variables, x, train=True, rngs={"dropout": rng},
                                      mutable=["batch_stats"])
      return out, updates.get("batch_stats", batch_stats)
    return self.model.apply(variables, x, train=False), batch_stats

  def features(self, state, images):
    """Pooled features float32 [N, D] of stored images (eval mode): what
    few-shot evaluation (config.fewshot, research.transfer.fewshot_eval) probes."""
    variables = {"params": state.params}
    if state.batch_stats:
      variables["batch_stats"] = state.batch_stats
    return self.model.apply(variables, self.inputs(images), train=False,
                            return_features=True)[1]

  # ---- per device ----
  def train_step(self, state, batch, rng):
    aug_rng, mix_rng, drop_rng = jax.random.split(rng, 3)
    x = preprocess(batch["image"], self.input_cfg)
    if self.augment is not None:
      x = self.augment(aug_rng, x)
    targets = jax.nn.one_hot(batch["label"], self.num_classes)
    if self.mix != "none":
      from research import augment  # pylint: disable=g-import-not-at-top
      x, targets = augment.mix(mix_rng, x, targets, self.mix, self.config.get("mix_alpha", 1.0))
    x = normalize(x, self.input_cfg.get("normalize", "unit"))
    smoothing = self.config.get("label_smoothing", 0.0)
    if smoothing:
      targets = losses.smooth_labels(targets, smoothing)


    def loss_fn(params, b, rng):
      logits, new_stats = self.apply(params, state.batch_stats, b["x"], True, rng)
      loss = jnp.mean(losses.softmax_cross_entropy(logits, b["targets"]))
      accuracy = jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(b["targets"], -1))
      return loss, (new_stats, accuracy)

    params, opt_state, loss, (new_stats, accuracy) = state.apply_loss(
        loss_fn, {"x": x, "targets": targets}, drop_rng, self.grad_accum_steps)
    metrics_ = parallel.mean({"loss": loss, "accuracy": accuracy})
    return state.replace(step=state.step + 1, params=params, batch_stats=new_stats,
                         opt_state=opt_state), metrics_

  def eval_step(self, state, batch):
    logits, _ = self.apply(state.params, state.batch_stats, self.inputs(batch["image"]), False)
    mask = batch["mask"]
    loss = losses.cross_entropy(logits, batch["label"])
    pred = jnp.argmax(logits, -1)
    return {"loss_sum": jnp.sum(loss * mask),
            "count": jnp.sum(mask),
            "confusion": metrics.confusion_matrix(pred, batch["label"], self.num_classes, mask)}

  # ---- host side ----
  def summarize_eval(self, sums):
    out = metrics.precision_recall_f1(sums["confusion"])
    out["loss"] = float(sums["loss_sum"]) / max(float(sums["count"]), 1.0)
    out["confusion"] = np.asarray(sums["confusion"]).astype(int).tolist()
    out["per_class"] = metrics.per_class(sums["confusion"], self.class_names())
    return out

  def class_names(self) -> list[str]:
    """Display names of the classes, index = label (research.data.class_names)."""
    from research import data  # pylint: disable=g-import-not-at-top
    return data.class_names(self.config.data, self.num_classes)
