"""scripts/adaptation_table.py on hand-made run directories: method and seed from config.json,
glob roots that pick some runs of a sweep, and the gap-closed arithmetic."""
import csv
import json
import os

import numpy as np
import pytest

from research import config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(root, name, method, seed, acc):
  d = root / name
  d.mkdir(parents=True)
  (d / "config.json").write_text(json.dumps({"adapt": {"method": method}, "seed": seed}))
  (d / "results.json").write_text(json.dumps({"accuracy": acc, "source_accuracy": 0.9,
                                              "target_val_accuracy": acc}))


def test_glob_root_and_config_json_give_the_rows(tmp_path):
  table = config_lib.load_module(os.path.join(REPO, "scripts", "adaptation_table.py"),
                                 "_adaptation_table")
  base, budget = tmp_path / "base", tmp_path / "budget"
  for s, (so, orc) in enumerate([(0.5, 0.9), (0.6, 1.0)]):
    _run(base, f"method=source-only,seed={s}", "source_only", s, so)
    _run(base, f"method=oracle,seed={s}", "oracle", s, orc)
    # A sweep over another field: the directory name has no method; config.json has it.
    _run(budget, f"num_steps=300,seed={s}", "source_only", s, 0.1)
    _run(budget, f"num_steps=1200,seed={s}", "source_only", s, 0.7 + 0.1 * s)
  out = tmp_path / "out"
  table.main(["--out", str(out), "--sweep", f"p={base}",
              "--sweep", f"p={budget}/num_steps=1200,*: + long"])
  with open(out / "results.csv") as f:
    rows = {r["method"]: r for r in csv.DictReader(f)}
  assert set(rows) == {"source_only", "oracle", "source_only + long"}
  long = rows["source_only + long"]
  assert int(long["n"]) == 2 and float(long["target_accuracy_mean"]) == pytest.approx(0.75)
  assert float(long["target_accuracy_std"]) == pytest.approx(np.std([0.7, 0.8], ddof=1))
  # gap closed = (0.75 - 0.55) / (0.95 - 0.55)
  assert float(long["gap_closed"]) == pytest.approx(0.5)
  with pytest.raises(SystemExit, match="existing ROOT"):
    table.main(["--out", str(out), "--sweep", f"p={budget}/nothing=*"])
