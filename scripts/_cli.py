"""The command-line error contract of scripts/*.py: `research.cli` (one definition)."""
from research.cli import (EXIT_NON_FINITE, EXIT_PREEMPTED, EXIT_USAGE,  # noqa: F401
                          exit_code, one_line, run)
