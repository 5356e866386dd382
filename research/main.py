"""Train and evaluate one experiment: the training entry point.

  python -m research.main --config configs/mnist5k_classify.py[:arg] --workdir DIR \
      [--config.field=value ...]

(`scripts/train.py` is the same command.)

Rerunning the same command in the same workdir resumes from the last checkpoint.

Exit status: 0 finished; 2 a user error (one line `error: ...` naming the config
field and value: unknown variant/task/model/dataset/augmentation op, bad batch or
few-shot size, a config that differs from the one saved in the workdir); 3 the
loss became non-finite (the message names the last good checkpoint, or says there
is none); 75 stopped by SIGTERM/SIGINT after saving a checkpoint (rerun to resume).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from research import cli

EXIT_PREEMPTED = cli.EXIT_PREEMPTED


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", required=True, help="configs/NAME.py[:arg]")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--coordinator_address", default=None,
                      help="multi-host: host:port of process 0 (starts jax.distributed)")
  parser.add_argument("--num_processes", type=int, default=None)
  parser.add_argument("--process_id", type=int, default=None)
  parser.add_argument("--dump_params", default=None,
                      help="also write the final parameters to this .npz (the task's "
                           "params_for_export: a GAN's EMA generator; for checks)")
  args, rest = parser.parse_known_args(argv)
  overrides = []
  for item in rest:
    if not item.startswith("--config."):
      raise ValueError(f"unrecognised argument {item!r}; overrides look like "
                       f"--config.field=value")
    overrides.append(item[2:])
  logging.basicConfig(level=logging.WARNING)
  from research import config_lib, trainer  # pylint: disable=g-import-not-at-top
  cluster = None
  if args.coordinator_address:
    cluster = dict(coordinator_address=args.coordinator_address,
                   num_processes=args.num_processes, process_id=args.process_id)
  config = config_lib.apply_overrides(config_lib.load(args.config), overrides)
  result = trainer.train_and_evaluate(config, args.workdir, cluster=cluster)
  summary = {k: v for k, v in result.items() if k != "confusion"}
  import jax  # pylint: disable=g-import-not-at-top
  summary.update(process_count=jax.process_count(), device_count=jax.device_count())
  if args.dump_params:
    import numpy as np  # pylint: disable=g-import-not-at-top
    from research import params as P  # pylint: disable=g-import-not-at-top
    task, state = trainer.load_state(args.workdir, config)
    exported = P.flatten(task.params_for_export(state))  # every task: GAN -> EMA generator
    np.savez(args.dump_params, **{k: np.asarray(v) for k, v in exported.items()})
  print(json.dumps(summary, indent=1))
  if result.get("preempted"):
    # Not finished: a shell chain `train.py && eval.py` must not go on.
    return EXIT_PREEMPTED
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
