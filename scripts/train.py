"""Train and evaluate one experiment (a thin layer over `research.main`).

  python scripts/train.py --config configs/mnist5k_classify.py[:arg] --workdir DIR \
      [--config.field=value ...]

Rerunning the same command in the same workdir resumes from the last checkpoint.
Exit status: 0 finished; 2 a user error; 3 a non-finite loss; 75 stopped by
SIGTERM/SIGINT after saving a checkpoint (see research/main.py).
"""
from __future__ import annotations

import sys

from research import cli
from research.main import EXIT_PREEMPTED, main  # noqa: F401

if __name__ == "__main__":
  sys.exit(cli.run(main))
