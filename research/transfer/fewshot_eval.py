"""Few-shot evaluation while a model trains (big_vision's few-shot evaluator).

Every `fewshot.every` steps the trainer calls the evaluator on the current
state: the task's `features(state, images)` (per-device, pure; pooled
features of stored images) is run over the k-shot subsets of a named
dataset's training split and over its eval split, a closed-form ridge probe
(`research.transfer.probes`, features standardised on the subset, fixed L2)
is fitted on each subset, and its eval accuracy, averaged over the subset
seeds, is logged as `fewshot/{k}shot` (metrics.jsonl split 'fewshot').

Config block (optional; absent or every = 0: off):
  fewshot.every: steps between evaluations
  fewshot.dataset: dataset name ('' = the run's data.name)
  fewshot.train_split / eval_split: where subsets / test images come from
    ('train' / 'test')
  fewshot.k: shots per class, e.g. (1, 5, 10)
  fewshot.seeds: subset seeds averaged over, e.g. (0, 1, 2)
  fewshot.eval_size: first n eval images (0 = all)
  fewshot.l2: ridge L2 strength on standardised features (1.0)
  fewshot.batch_size: extraction batch over all local devices (256)

A task opts in by defining `features(state, images) -> float [n, D]`
(images as its data stores them, e.g. uint8 [n, H, W, C]); the classify task
returns its model's pooled features in eval mode.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from research import data
from research.transfer import features as features_lib
from research.transfer import probes

DEFAULTS = dict(every=0, dataset="", train_split="train", eval_split="test", k=(1, 5, 10),
                seeds=(0,), eval_size=0, l2=1.0, batch_size=256)


class FewShotEvaluator:
  """Ridge probes on a task's current features; `evaluator(state) -> metrics`."""

  def __init__(self, cfg: Any, task: Any, data_cfg: Any, mode: str = "pmap"):
    cfg = {**DEFAULTS, **dict(cfg)}
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
      raise ValueError(f"fewshot: unknown field(s) {unknown}; valid: {sorted(DEFAULTS)}")
    if getattr(task, "features", None) is None:
      raise ValueError(f"fewshot: the {type(task).__name__} exposes no "
                       f"features(state, images); few-shot evaluation needs one")
    self.every, self.l2 = int(cfg["every"]), float(cfg["l2"])
    self.ks, self.seeds = tuple(int(k) for k in cfg["k"]), tuple(int(s) for s in cfg["seeds"])
    if self.every < 1 or not self.ks or not self.seeds:
      raise ValueError(f"fewshot: every >= 1 and non-empty k, seeds needed, got {cfg}")
    name = cfg["dataset"] or data_cfg.name
    load = lambda split: data.load(name, split, data_cfg.get("data_dir") or None,
                                   data_cfg.get("image_size", 0))
    train, test = load(cfg["train_split"]), load(cfg["eval_split"])
    if cfg["eval_size"]:
      test = {key: v[:cfg["eval_size"]] for key, v in test.items()}
    self.subsets = {(k, s): data.few_shot_indices(train["label"], k, s)
                    for k in self.ks for s in self.seeds}
    # Every image any subset uses is run once per evaluation.
    self.union = np.unique(np.concatenate(list(self.subsets.values())))
    self.train_images, self.train_labels = train["image"][self.union], train["label"][self.union]
    self.test_images, self.test_labels = test["image"], test["label"]
    self.num_classes = int(max(train["label"].max(), test["label"].max())) + 1
    self.extract = features_lib.Extractor(task.features, int(cfg["batch_size"]), mode)

  def due(self, step: int) -> bool:
    return step % self.every == 0

  def __call__(self, state: Any) -> dict[str, float]:
    """{'{k}shot': eval accuracy of the k-shot ridge probe, mean over seeds}."""
    x_train = self.extract(state, self.train_images)
    x_test = self.extract(state, self.test_images)
    where = {int(i): j for j, i in enumerate(self.union)}
    out = {}
    for k in self.ks:
      accs = []
      for s in self.seeds:
        rows = np.array([where[int(i)] for i in self.subsets[(k, s)]])
        probe = probes.fit_probe("ridge", x_train[rows], self.train_labels[rows], None, None,
                                 self.num_classes, grid=(self.l2,))
        accs.append(float(np.mean(np.argmax(probe.logits(x_test), -1) == self.test_labels)))
      out[f"{k}shot"] = float(np.mean(accs))
    return out


def for_run(config: Any, task: Any) -> FewShotEvaluator | None:
  """The run's evaluator, or None when it has no `fewshot` block (or every = 0)."""
  cfg = config.get("fewshot", None)
  if not cfg or not cfg.get("every", 0):
    return None
  return FewShotEvaluator(cfg, task, config.data, config.get("parallel", "pmap"))
