"""Linear probe on frozen pretrained features: a classifier with no gradient steps.

The backbone (`model.*`, `init.*`, `input.*` as in the classify task) is run
once in eval mode over the whole training split and the eval split; the
pooled features go to the on-disk cache of `research.transfer.features`
(keyed by weights hash, model, input size, normalisation, dataset, split), so
every run after the first (other k, other seed) only indexes them. The probe
is fitted on the k-shot training subset minus its validation images
(`data.few_shot_k/seed/val`, the same subsets as every classify run), with
its L2 strength chosen on those validation images, and is evaluated like a
classifier (accuracy, f1, val_accuracy, ...). Run it with `num_steps=0`.

Config fields read here (beside classify's):
  probe.kind: 'logistic' (multinomial, L-BFGS) | 'ridge' (closed form)
  probe.l2_grid: L2 strengths tried ((): research.transfer.probes' default)
  probe.cache_dir: feature cache ('' = ~/.cache/research/features)
  probe.batch_size: extraction batch (global, over all local devices)
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from research import data
from research.losses import classification as losses
from research.metrics import classification as metrics
from research.tasks import classify

_DEFAULTS = dict(kind="logistic", l2_grid=(), cache_dir="", batch_size=64)


class ProbeTask(classify.ClassifyTask):
  """Frozen features + a linear head fitted in closed form / by L-BFGS."""

  features = None  # the state holds the head only: no few-shot evaluation

  def __init__(self, config):
    super().__init__(config)
    self.probe_cfg = {**_DEFAULTS, **dict(config.get("probe", {}))}
    self._sets = None
    self.probe = None

  def _backbone_features(self):
    """{'train': (features, labels) of the whole training split, 'eval': ...}."""
    from research.transfer import features  # pylint: disable=g-import-not-at-top
    cfg = self.config.data
    splits = {"train": cfg.get("train_split", "train"), "eval": cfg.get("eval_split", "test")}
    arrays = {k: data.load(cfg.name, s, cfg.get("data_dir") or None, cfg.get("image_size", 0))
              for k, s in splits.items()}
    variables = self.init_variables(jax.random.PRNGKey(0), {"image": arrays["train"]["image"][:1]})
    variables = {c: v for c, v in variables.items() if c in ("params", "batch_stats")}
    cache = features.FeatureCache(self.probe_cfg["cache_dir"] or features.DEFAULT_DIR)
    fn = features.pooled_feature_fn(self.model, self.inputs)
    wh = features.weights_hash(variables)
    out = {}
    for k, split in splits.items():
      key = features.FeatureKey(
          weights=wh, model=self.config.model.name + (  # bf16 features are other features
              "" if self.model.dtype == jnp.float32 else f"/{self.config.dtype}"),
          input_size=int(self.input_cfg.get("size", 0)),
          normalize=(f"{self.input_cfg.get('normalize', 'unit')}"
                     f"/c{self.input_cfg.get('channels', 0)}"),
          dataset=cfg.name, split=split)
      images, labels = arrays[k]["image"], arrays[k]["label"]
      feats, labels, hit = cache.get_or_extract(key, lambda: (features.extract(
          fn, variables, images, self.probe_cfg["batch_size"],
          self.config.get("parallel", "pmap"), self.config.get("progress", True),
          desc=f"{split} features"), labels))
      print(f"probe: {split} features {feats.shape} "
            f"{'from cache' if hit else 'extracted'}: {cache.path(key)}", flush=True)
      out[k] = (feats, labels)
    return out

  def _data(self):
    """Features/labels of the k-shot training, validation and eval sets; fits the probe."""
    if self._sets is None:
      from research.transfer import probes  # pylint: disable=g-import-not-at-top
      feats = self._backbone_features()
      (x, y), test = feats["train"], feats["eval"]
      cfg = self.config.data
      k, val = cfg.get("few_shot_k", 0), cfg.get("few_shot_val", 0)
      if k or val:
        train_idx, val_idx = data.train_val_indices(y, k, cfg.get("few_shot_seed", 0), val)
      else:
        train_idx, val_idx = np.arange(len(y)), np.arange(0)
      self._sets = {"train": (x[train_idx], y[train_idx]), "val": (x[val_idx], y[val_idx]),
                    "eval": test}
      self.probe = probes.fit_probe(
          self.probe_cfg["kind"], *self._sets["train"], *self._sets["val"],
          self.num_classes, tuple(self.probe_cfg["l2_grid"]) or None)
      print(f"probe: {self.probe_cfg['kind']} on {len(train_idx)} images, l2={self.probe.l2:g} "
            f"chosen on {len(val_idx)} validation images", flush=True)
    return self._sets

  # ---- host side ----
  def train_data(self, ctx):
    x, y = self._data()["train"]
    return data.ArrayIterator({"features": x, "label": y}, ctx.global_batch_size, ctx.seed,
                              ctx.process_index, ctx.process_count)

  def eval_data(self, ctx):
    sets = self._data()
    bs = self.config.get("eval_batch_size", 500)
    named = {"": sets["eval"]}
    if len(sets["val"][0]):
      named["val"] = sets["val"]
    return {name: data.eval_batches_from_arrays({"features": x, "label": y}, bs,
                                                ctx.process_index, ctx.process_count)
            for name, (x, y) in named.items()}

  def init_state(self, rng, batch):
    del rng, batch
    self._data()
    head = {"kernel": jnp.asarray(self.probe.w), "bias": jnp.asarray(self.probe.b)}
    return classify.TrainState.create({"head": head}, None)  # never trained: no optimizer

  def summarize_eval(self, sums):
    out = super().summarize_eval(sums)
    out["probe_l2"] = self.probe.l2
    return out

  def on_eval(self, state, step, workdir):
    with open(os.path.join(workdir, "probe.json"), "w") as f:
      json.dump({"kind": self.probe_cfg["kind"], "l2": self.probe.l2,
                 "grid": list(self.probe.grid), "val_accuracy": list(self.probe.val_accuracy)},
                f, indent=1)

  # ---- per device ----
  def train_step(self, state, batch, rng):
    del batch, rng  # the probe is fitted on the host; nothing to train
    return state.replace(step=state.step + 1), {"loss": jnp.zeros(())}

  def eval_step(self, state, batch):
    head = state.params["head"]
    logits = batch["features"] @ head["kernel"] + head["bias"]
    mask = batch["mask"]
    loss = losses.cross_entropy(logits, batch["label"])
    return {"loss_sum": jnp.sum(loss * mask), "count": jnp.sum(mask),
            "confusion": metrics.confusion_matrix(jnp.argmax(logits, -1), batch["label"],
                                                  self.num_classes, mask)}
