"""The command-line error contract shared by the entry points (`research.main`,
`research.complete`) and scripts/*.py.

`sys.exit(cli.run(main))` runs an entry point's `main(argv)`. A user error (a bad
config value or field, an unknown variant, task, model, dataset or augmentation
op, a batch size the devices cannot split, a config that differs from the one
saved in the workdir, an unusable checkpoint, a dataset not prepared, a missing
file) prints ONE line `error: ...` on stderr and exits EXIT_USAGE; a non-finite
loss prints one line and exits EXIT_NON_FINITE; no traceback. Set
RESEARCH_TRACEBACK=1 to get the traceback instead (debugging).
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

EXIT_USAGE = 2  # a user error: fix the command or the config and rerun
EXIT_NON_FINITE = 3  # the loss became NaN/inf; the message names the checkpoint kept
EXIT_PREEMPTED = 75  # sysexits.h EX_TEMPFAIL: stopped by a signal after saving; rerun resumes

# Exceptions that mean "the user asked for something that cannot be done", besides
# ValueError (which config_lib.ConfigError and trainer.ConfigMismatchError are) and
# FileNotFoundError. Looked up only in modules the script has already imported.
_USER_ERRORS = (("research.checkpoint", "CheckpointError"),
                ("research.data.sources", "DatasetNotPreparedError"),
                ("research.transfer.torch_checkpoint", "CheckpointError"))


def exit_code(error: BaseException) -> int | None:
  """EXIT_USAGE or EXIT_NON_FINITE for an error the user can act on; None for a bug."""
  if isinstance(error, FloatingPointError):  # trainer.NonFiniteLossError
    return EXIT_NON_FINITE
  user = [ValueError, FileNotFoundError]
  for module, name in _USER_ERRORS:
    if module in sys.modules:
      user.append(getattr(sys.modules[module], name))
  return EXIT_USAGE if isinstance(error, tuple(user)) else None


def one_line(error: BaseException) -> str:
  """The error's message on one line (multi-line messages joined with '; ')."""
  return "; ".join(l.strip() for l in str(error).splitlines() if l.strip()) or type(error).__name__


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
  """Runs `main(argv)`; a user error becomes one `error: ...` line and its exit code."""
  try:
    return main(argv)
  except Exception as e:  # pylint: disable=broad-except
    code = exit_code(e)
    if code is None or os.environ.get("RESEARCH_TRACEBACK"):
      raise
    print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
    return code
