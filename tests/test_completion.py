"""The completion experiment: its sweep definition and the no-leakage rule.

No-leakage: the generator behind a k-shot arm trains on exactly that arm's
k-shot subset (same images as the classifier of the same (k, seed)) and on
no other image, and every arm of a (k, seed) shares one generator.
"""
import collections
import csv
import hashlib
import json
import os

import numpy as np
import pytest

from research import config_lib, data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "completion.py")


_module = config_lib.load_module


completion = _module(CONFIG, "_test_completion_config")


def _flag(command, name):
  return command[command.index(name) + 1]


@pytest.mark.parametrize("variant, ks, seeds, ratios", [
    ("quick", (10, 50), (0,), (0.5,)), ("full", (10, 50, 100), (0, 1, 2), (0.25, 0.5))])
def test_sweep_grid_and_one_generator_per_subset(variant, ks, seeds, ratios):
  runs = completion.get_sweep(variant)
  base = completion.get_config(variant)
  for r in runs:  # every override names a real field of the base config
    config_lib.apply_overrides(base, {k: v for k, v in r.items() if not k.startswith("_")})
  arms = ["base", "aug"] + [f"{g}@{r}" for g in ("vae", "gan") for r in ratios]
  if variant == "full":
    arms += ["aug+vae@0.5", "aug+gan@0.5", "probe", "finetune"]
  cells = collections.Counter((r["_arm"], r["data.few_shot_k"], r["seed"]) for r in runs)
  assert set(cells) == {(a, k, s) for a in arms for k in ks for s in seeds}
  assert set(cells.values()) == {1}
  generators = {}
  for r in runs:
    assert r["data.few_shot_seed"] == r["seed"]
    assert r["data.few_shot_val"] == completion.val_per_class(r["data.few_shot_k"]) >= 1
    prereqs = completion.get_prerequisites(r)
    if "vae" not in r["_arm"] and "gan" not in r["_arm"]:
      assert prereqs == [] and "data.synthetic" not in r
      continue
    (p,) = prereqs
    assert int(_flag(p["command"], "--k")) == r["data.few_shot_k"]
    assert int(_flag(p["command"], "--seed")) == r["data.few_shot_seed"]
    kind = "vae" if "vae" in r["_arm"] else "gan"
    assert _flag(p["command"], "--config").endswith(completion.GENERATORS[kind])
    generators.setdefault(p["name"], set()).add((r["data.few_shot_k"], r["seed"], kind))
    assert r["data.synthetic"].startswith("{root}/" + p["name"] + "/")
  # One generator per (kind, k, seed), shared by all its arms.
  assert len(generators) == 2 * len(ks) * len(seeds)
  assert all(len(v) == 1 for v in generators.values())


def test_prerequisites_refuse_a_generator_of_another_subset():
  run = {"_arm": "vae@0.5", "data.few_shot_k": 10, "seed": 1, "data.few_shot_seed": 1,
         "data.synthetic": completion.synthetic_path("quick", "vae", 10, 0),
         "data.synthetic_ratio": 0.5}
  with pytest.raises(ValueError, match="another subset"):
    completion.get_prerequisites({**run, "data.few_shot_val": 2})
  with pytest.raises(ValueError, match="few_shot_val=0"):
    completion.get_prerequisites(run)


def test_config_uses_no_test_selection():
  for variant in ("quick", "full"):
    c = completion.get_config(variant)
    assert c.best_metric == "" and c.eval_every == c.num_steps
    assert c.data.eval_split == "test" and c.data.train_split == "train"


def _sha1(images):
  return [hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images]


def _complete_script():
  from research import complete  # pylint: disable=g-import-not-at-top
  return complete


def _check_record(record, k, seed, val):
  """The recorded generator training set is the classifier's (k, seed) training
  subset, nothing else: not the validation images held out of it, no test image."""
  train = data.load("mnist5k", "train")
  test = data.load("mnist5k", "test")
  classifier = config_lib.apply_overrides(
      completion.get_config("quick"), {"data.few_shot_k": k, "data.few_shot_seed": seed,
                                       "data.few_shot_val": val, "seed": seed})
  seen = data.load_train(classifier.data)
  assert sorted(record["image_sha1"]) == sorted(_sha1(seen["image"]))
  idx = data.few_shot_indices(train["label"], k, seed)
  val_images = set(_sha1(data.load_val(classifier.data)["image"]))
  assert len(val_images) == 10 * val
  assert set(record["image_sha1"]) | val_images == set(_sha1(train["image"][idx]))
  assert not set(record["image_sha1"]) & val_images
  assert set(record["indices"]) < set(idx.tolist()) and record["val_per_class"] == val
  # Exactly k - val per class, nothing from the test split, nothing from another subset.
  np.testing.assert_array_equal(np.bincount(record["labels"], minlength=10), [k - val] * 10)
  assert not set(record["image_sha1"]) & set(_sha1(test["image"]))
  other = data.few_shot_indices(train["label"], k, seed + 1)
  assert set(record["image_sha1"]) != set(_sha1(train["image"][other]))


@pytest.mark.parametrize("kind", ["vae", "gan"])
def test_generator_training_set_is_the_arms_subset(tmp_path, kind):
  """Fast: the data the generator's task iterates over (what the trainer feeds it)."""
  from research import tasks
  complete = _complete_script()
  k, seed = 5, 2
  run = {"_arm": f"{kind}@0.5", "data.few_shot_k": k, "seed": seed, "data.few_shot_seed": seed,
         "data.few_shot_val": completion.val_per_class(k),
         "data.synthetic": completion.synthetic_path("quick", kind, k, seed),
         "data.synthetic_ratio": 0.5}
  (p,) = completion.get_prerequisites(run)
  cmd = p["command"]
  overrides = [a[2:] for a in cmd if a.startswith("--config.")]
  config = complete.generator_config(_flag(cmd, "--config"), int(_flag(cmd, "--k")),
                                     int(_flag(cmd, "--seed")), overrides)
  record = complete.record_training_data(tasks.get_task(config.task, config), config,
                                         str(tmp_path / "training_data.json"))
  assert json.load(open(tmp_path / "training_data.json")) == record
  _check_record(record, k, seed, completion.val_per_class(k))


def test_generator_refuses_synthetic_training_data():
  complete = _complete_script()
  with pytest.raises(ValueError, match="real k-shot data only"):
    complete.generator_config(os.path.join(REPO, "configs", "mnist5k_cvae.py"), 5, 0,
                              ["data.synthetic=/x.npz"])


@pytest.mark.slow
def test_complete_script_end_to_end(tmp_path):
  """Trains a tiny conditional VAE on a k-shot subset and writes balanced samples."""
  complete = _complete_script()
  k, seed = 3, 1
  out = tmp_path / "gen"
  rc = complete.main(["--config", os.path.join(REPO, "configs", "mnist5k_cvae.py") + ":quick",
                      "--k", str(k), "--seed", str(seed), "--out", str(out),
                      "--num_per_class", "4", "--config.num_steps=2",
                      "--config.eval_batch_size=1000", "--config.iwae_samples=0",
                      "--config.data.few_shot_val=1"])
  assert rc == 0
  _check_record(json.load(open(out / "training_data.json")), k, seed, 1)
  samples = np.load(out / "samples.npz")
  assert samples["image"].shape == (40, 28, 28, 1) and samples["image"].dtype == np.uint8
  np.testing.assert_array_equal(np.bincount(samples["label"]), [4] * 10)
  saved = json.load(open(out / "generator" / "config.json"))
  assert (saved["data"]["few_shot_k"], saved["data"]["few_shot_seed"]) == (k, seed)
  assert saved["data"]["synthetic"] == ""


def test_paired_report_matches_numpy(tmp_path):
  report = _module(os.path.join(REPO, "scripts", "completion_report.py"), "_completion_report")
  rng = np.random.default_rng(0)
  acc = {(arm, k, s): float(rng.uniform()) for arm in ("base", "aug", "vae@0.5")
         for k in (10, 50) for s in (0, 1, 2)}
  acc[("aug", 10, 0)], acc[("aug", 10, 1)], acc[("aug", 10, 2)] = (
      acc[("base", 10, 0)] + 0.05, acc[("base", 10, 1)] + 0.06, acc[("base", 10, 2)] + 0.055)
  with open(tmp_path / "runs.csv", "w", newline="") as f:
    w = csv.DictWriter(f, ["_arm", "data.few_shot_k", "seed", "accuracy"])
    w.writeheader()
    for (arm, k, s), v in acc.items():
      w.writerow({"_arm": arm, "data.few_shot_k": k, "seed": s, "accuracy": v})
  assert report.main(["--root", str(tmp_path)]) == 0
  with open(tmp_path / "runs.csv") as f:
    table = report.paired_table(list(csv.DictReader(f)), "accuracy")
  for e in table:
    d = np.array([acc[(e["arm"], e["k"], s)] - acc[("base", e["k"], s)] for s in (0, 1, 2)])
    np.testing.assert_allclose([e["diff_mean"], e["diff_std"]], [d.mean(), d.std(ddof=1)],
                               atol=1e-12)
  (aug10,) = [e for e in table if (e["arm"], e["k"]) == ("aug", 10)]
  assert report.verdict(aug10) == "helps" and aug10["wins"] == 3
  assert "| 10 | aug |" in open(tmp_path / "paired.md").read()
  assert report.main(["--root", str(tmp_path), "--metric", "nope"]) == 2
