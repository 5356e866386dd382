"""Sweeps: a grid of config overrides, each a training run (`python -m research.main`,
what scripts/train.py runs) in its own workdir.

A sweep is a list of runs; a run is an ordered dict of overrides
{'data.few_shot_k': 10, 'seed': 0, ...}. Keys starting with '_' are labels
('_arm': 'vae'): they name and group runs but are not config fields. Values
may hold '{root}', replaced by the sweep's root directory.

  runs = sweep.grid({'data.few_shot_k': [10, 50], 'seed': [0, 1, 2]})
  sweep.validate(base_config, runs)           # ConfigError before anything runs
  status = sweep.run_sweep('configs/x.py', runs, root, parallel=2)
  table = sweep.aggregate(sweep.collect(runs, root), group_by=['data.few_shot_k'],
                          seed_axis='seed', metrics=['accuracy'])

Each run lives in `root/<name>`, the name derived from its overrides (stable
across invocations). A run whose `results.json` exists is skipped; any other
is (re)launched, and the trainer resumes it from its last checkpoint. Runs may
need prerequisites (e.g. a generator trained once per k-shot subset): a
config file's optional `get_prerequisites(overrides) -> [Prerequisite-like
dicts]` names them; each is run once, before the runs that need it, and is
skipped when its output file exists. Failed runs (their log tail and
workdir) are reported and do not stop the others.

Modules: `grid` (what runs: grids, names, validation), `runner` (running
them: subprocesses, prerequisites, display, status), `results` (what they
gave: collection, aggregation, selection, tables, plots). Everything is
re-exported here, so `from research import sweep; sweep.run_sweep(...)`.
"""
from research.sweep.grid import (REPO_ROOT, RUN_LOG, STATUS_FILE, TRAIN_MODULE, Overrides,
                                  config_overrides, grid, load_module, override_flags,
                                  parse_grid_flag, run_name, sweep_from_config, validate)
from research.sweep.results import (aggregate, collect, default_metrics, markdown_table, plot,
                                     report, select, write_csv)
from research.sweep.runner import (Display, Job, log_tail, make_jobs, prerequisite_jobs,
                                    progress_flags, run_jobs, run_sweep)
