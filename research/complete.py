"""Train a class-conditional generator on one k-shot subset and write labelled samples.

  python -m research.complete --config configs/mnist5k_cvae.py --k 10 --seed 0 \
      --out runs/gen/cvae_k10_s0 --num_per_class 500 [--config.num_steps=2000 ...]

(`scripts/complete.py` is the same command; configs/completion.py's sweep runs
it as a prerequisite of the classifiers that read the samples.)

The generator's config gets data.few_shot_k=K, data.few_shot_seed=SEED and
seed=SEED, so it trains on exactly the k-shot subset a classifier run with
the same (k, seed) sees, and on nothing else. Writes into OUT:
  training_data.json  what the generator trained on: k, seed, dataset, split,
                      the subset's indices into the split (without the
                      data.few_shot_val images held out for validation, which
                      a generator never sees either), and the SHA-1 of
                      every training image (in the order the iterator holds them)
  generator/          the generator's trainer workdir (resumable)
  samples.npz         {'image': uint8 [N, H, W, C], 'label': int32 [N]},
                      num_per_class samples of every class (written last,
                      atomically: its presence means the job is done)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys


def image_sha1(images) -> list[str]:
  """SHA-1 hex digest of each uint8 image's bytes: images uint8 [N, H, W, C]."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  return [hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images]


def record_training_data(task, config, path: str) -> dict:
  """Writes what the generator's training iterator draws from (see module doc)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from research import data  # pylint: disable=g-import-not-at-top
  from research.tasks.base import DataContext  # pylint: disable=g-import-not-at-top
  iterator = task.train_data(DataContext(global_batch_size=config.batch_size,
                                         seed=config.seed))
  if not isinstance(iterator, data.ArrayIterator):
    raise ValueError(f"complete.py: the generator must train on real data only "
                     f"(an ArrayIterator), got {type(iterator).__name__}; is "
                     f"data.synthetic set?")
  d = config.data
  full = data.load(d.name, d.get("train_split", "train"), d.get("data_dir") or None,
                   d.get("image_size", 0))
  record = {"dataset": d.name, "split": d.get("train_split", "train"),
            "k": int(d.few_shot_k), "seed": int(d.few_shot_seed),
            "val_per_class": int(d.get("few_shot_val", 0)),
            "indices": data.train_val_indices(full["label"], d.few_shot_k, d.few_shot_seed,
                                              d.get("few_shot_val", 0))[0].tolist(),
            "labels": np.asarray(iterator.arrays["label"]).tolist(),
            "image_sha1": image_sha1(iterator.arrays["image"])}
  with open(path, "w") as f:
    json.dump(record, f)
  return record


def generator_config(spec: str, k: int, seed: int, overrides=()):
  """The generator's config: `spec` + overrides, trained on the (k, seed) subset only."""
  from research import config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.apply_overrides(config_lib.load(spec), list(overrides) + [
      f"data.few_shot_k={k}", f"data.few_shot_seed={seed}", f"seed={seed}"])
  if config.task not in ("gan", "vae") or not config.model.get("conditional", False):
    raise ValueError(f"{spec} is a {config.task!r} config with conditional="
                     f"{config.model.get('conditional')}; expected a conditional "
                     f"'gan' or 'vae'")
  if config.data.get("synthetic", ""):
    raise ValueError(f"data.synthetic={config.data.synthetic!r}: a generator trains "
                     f"on real k-shot data only")
  return config


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", required=True,
                      help="a conditional GAN or VAE config, configs/NAME.py[:arg]")
  parser.add_argument("--k", type=int, required=True, help="examples per class")
  parser.add_argument("--seed", type=int, required=True, help="which k-shot subset")
  parser.add_argument("--out", required=True)
  parser.add_argument("--num_per_class", type=int, default=500)
  args, rest = parser.parse_known_args(argv)
  overrides = []
  for item in rest:
    if not item.startswith("--config."):
      parser.error(f"unrecognised argument {item!r}; overrides look like --config.field=value")
    overrides.append(item[2:])
  if args.k < 1:
    parser.error(f"--k must be >= 1, got {args.k}")
  from research import config_lib, trainer  # pylint: disable=g-import-not-at-top
  try:
    config = generator_config(args.config, args.k, args.seed, overrides)
  except (config_lib.ConfigError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2

  from research import tasks  # pylint: disable=g-import-not-at-top
  from research.tasks import generation  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  os.makedirs(args.out, exist_ok=True)
  record = record_training_data(tasks.get_task(config.task, config), config,
                                os.path.join(args.out, "training_data.json"))
  workdir = os.path.join(args.out, "generator")
  result = trainer.train_and_evaluate(config, workdir)
  if result.get("preempted"):
    print(f"preempted at step {result['step']}; rerun to resume", flush=True)
    return 1
  task, state = trainer.load_state(workdir, config)
  images, labels = generation.generate_balanced(generation.require(task, workdir), state,
                                                args.num_per_class, args.seed + 7)
  path = os.path.join(args.out, "samples.npz")
  with open(path + ".tmp", "wb") as f:
    np.savez(f, image=images, label=labels)
  os.replace(path + ".tmp", path)
  print(json.dumps({"samples": path, "num_samples": len(labels),
                    "trained_on": len(record["image_sha1"]), "k": args.k,
                    "seed": args.seed, "step": result.get("step")}))
  return 0


if __name__ == "__main__":
  from research import cli  # pylint: disable=g-import-not-at-top
  sys.exit(cli.run(main))
