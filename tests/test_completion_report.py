"""scripts/completion_report.py --from_csv: a root assembled from earlier sweeps'
runs.csv gives the same tables as one sweep over all runs (numpy means, the
validation selection recomputed), later CSVs win, runs no longer swept drop."""
import csv
import os

import numpy as np
import pytest

from research import config_lib, sweep

REPO = os.path.join(os.path.dirname(__file__), "..")
SPEC = os.path.join(REPO, "configs", "completion.py") + ":quick"


def _write(path, rows):
  columns = list(dict.fromkeys(k for r in rows for k in r))
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, columns)
    w.writeheader()
    w.writerows(rows)


def test_from_csv_assembles_the_sweep_report(tmp_path):
  report = config_lib.load_module(os.path.join(REPO, "scripts", "completion_report.py"),
                                  "_completion_report_from_csv")
  runs, _ = sweep.sweep_from_config(SPEC)
  rng = np.random.default_rng(0)
  old, new, acc, val = [], [], {}, {}
  for r in runs:
    key = (r["_arm"], r["data.few_shot_k"])
    acc[key], val[key] = float(rng.uniform()), float(rng.uniform())
    row = {**r, "name": sweep.run_name(r), "step": 150, "accuracy": acc[key] - 0.5,
           "val_accuracy": val[key], "val_loss": 1.0, "f1": 0.5}
    old.append(row)
    if r["_arm"] == "aug":  # re-run later: the newer CSV's value counts
      new.append({**row, "accuracy": acc[key]})
    else:
      old[-1]["accuracy"] = acc[key]
  old.append({"_arm": "transfer", "data.few_shot_k": 10, "seed": 0, "name": "arm=transfer",
              "accuracy": 0.1, "val_accuracy": 1.0})
  old.append({**old[0], "_arm": "best (val)", "selected": "base", "name": "best (val): x"})
  _write(tmp_path / "old.csv", old)
  _write(tmp_path / "new.csv", new)
  root = tmp_path / "root"
  assert report.main(["--root", str(root), "--config", SPEC, "--from_csv",
                      str(tmp_path / "old.csv"), "--from_csv", str(tmp_path / "new.csv")]) == 0
  with open(root / "results.csv") as f:
    table = list(csv.DictReader(f))
  got = {(e["_arm"], int(e["data.few_shot_k"])): float(e["accuracy_mean"]) for e in table}
  assert "transfer" not in {arm for arm, _ in got}
  for key, value in acc.items():
    assert got[key] == pytest.approx(value, abs=1e-12), key
  for k in (10, 50):  # one seed: 'best (val)' is the arm with the best validation accuracy
    best = max((a for a, kk in val if kk == k), key=lambda a: val[(a, k)])
    assert got[("best (val)", k)] == pytest.approx(acc[(best, k)], abs=1e-12)
  assert os.path.exists(root / "paired.md") and os.path.exists(root / "results.md")
