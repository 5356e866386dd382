"""Few-shot mnist5k: pretrained EfficientNet-Lite0 fine-tuned vs the same network
from scratch vs the small CNN; k labelled images per class, several seeds.

  python scripts/fewshot_transfer.py --root runs/fewshot --ks 10,50,100 --seeds 0,1,2

Arms (each run is a scripts/train.py run in ROOT/<config>/<run name>):
  effnet_pretrained  configs/mnist5k_finetune.py:fewshot (ImageNet init, new head)
  effnet_scratch     the same config and budget with init.checkpoint=''
  small_cnn          configs/mnist5k_classify.py, num_steps=--cnn_steps
A run's seed is also its few-shot subset seed (data.few_shot_seed), so every
arm sees the same k-shot subsets. Seeds run in order (all arms and k for seed
0 first), so a stopped sweep still has complete rows; rerunning skips finished
runs. Writes ROOT/results.md (test accuracy mean ± std over seeds) and
ROOT/runs.csv. A persistent XLA compilation cache in ROOT/jax_cache lets the
EfficientNet runs (jit+shard_map) skip recompiling after the first.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from research import sweep

FINETUNE = "configs/mnist5k_finetune.py:fewshot"
CNN = "configs/mnist5k_classify.py"


def arm_runs(arm: str, ks, seed: int, cnn_steps: int) -> tuple[str, list[dict]]:
  """(config spec, run overrides) of one arm for one seed."""
  runs = []
  for k in ks:
    run = {"_arm": arm, "data.few_shot_k": k, "seed": seed, "data.few_shot_seed": seed}
    if arm == "effnet_scratch":
      run["init.checkpoint"] = ""
    if arm == "small_cnn":
      run.update({"num_steps": cnn_steps, "eval_every": cnn_steps,
                  "checkpoint_every": cnn_steps})
    runs.append(run)
  return (CNN if arm == "small_cnn" else FINETUNE), runs


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--root", required=True)
  parser.add_argument("--ks", default="10,50,100")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--arms", default="effnet_pretrained,effnet_scratch,small_cnn")
  parser.add_argument("--cnn_steps", type=int, default=300)
  parser.add_argument("--report_only", action="store_true")
  args = parser.parse_args(argv)
  ks = [int(k) for k in args.ks.split(",")]
  seeds = [int(s) for s in args.seeds.split(",")]
  arms = args.arms.split(",")
  bad = set(arms) - {"effnet_pretrained", "effnet_scratch", "small_cnn"}
  if bad:
    parser.error(f"--arms: unknown arm(s) {sorted(bad)}")
  root = os.path.abspath(args.root)
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.path.join(root, "jax_cache"))
  failed, rows, start = 0, [], time.time()
  for seed in seeds:
    for arm in arms:
      spec, runs = arm_runs(arm, ks, seed, args.cnn_steps)
      sub = os.path.join(root, spec.split("/")[-1].split(".")[0])
      if not args.report_only:
        jobs = sweep.run_sweep(spec, runs, sub, env=env,
                               extra_flags=sweep.progress_flags(spec))
        failed += sum(j.state == "failed" for j in jobs)
      rows += sweep.collect(runs, sub)
  group_by = ["_arm", "data.few_shot_k"]
  table = sweep.aggregate(rows, group_by, "seed", ["accuracy"])
  md = sweep.markdown_table(table, group_by, ["accuracy"])
  sweep.write_csv(rows, os.path.join(root, "runs.csv"))
  with open(os.path.join(root, "results.md"), "w") as f:
    f.write("mnist5k test accuracy (1,000 images), mean ± sample std over seeds "
            f"(seed = few-shot subset seed).\n\n{md}")
  print(md)
  print(f"wall time {time.time() - start:.0f} s; {failed} failed runs")
  return 1 if failed else 0


if __name__ == "__main__":
  import _cli  # pylint: disable=g-import-not-at-top
  sys.exit(_cli.run(main))
