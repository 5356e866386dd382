"""docs/ARCHITECTURE.md stays true: its layer table against the imports in research/."""
import ast
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "ARCHITECTURE.md")


def _allowed() -> dict[str, set[str]]:
  """{unit: units it may import}, from the doc's layer table."""
  table = {}
  for line in open(DOC):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == 3 and re.fullmatch(r"`\w+`", cells[0]):
      table[cells[0].strip("`")] = set(re.findall(r"`(\w+)`", cells[2]))
  return table


def _unit(module: str) -> str:
  """research.tasks.gan -> tasks; research.trainer -> trainer."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else "research"


def _imports() -> dict[str, dict[str, str]]:
  """{unit: {imported unit: first file importing it}} for every module under research/."""
  found = {}
  for root, _, files in os.walk(os.path.join(REPO, "research")):
    for name in files:
      if not name.endswith(".py"):
        continue
      path = os.path.join(root, name)
      rel = os.path.relpath(path, REPO)
      unit = _unit(rel[:-3].replace(os.sep, "."))
      if unit in ("__init__", "research"):
        continue
      deps = found.setdefault(unit, {})
      for node in ast.walk(ast.parse(open(path).read(), rel)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
          if node.module == "research":
            targets = [a.name for a in node.names]
          elif node.module.startswith("research."):
            targets = [_unit(node.module)]
          else:
            continue
        elif isinstance(node, ast.Import):
          targets = [_unit(a.name) for a in node.names if a.name.startswith("research.")]
        else:
          continue
        for t in targets:
          if t != unit:
            deps.setdefault(t, rel)
  return found


def test_every_unit_of_research_has_a_row():
  units = set(_imports())
  table = set(_allowed())
  assert units - table == set(), f"units without a row in docs/ARCHITECTURE.md: {units - table}"
  assert table - units == set(), f"rows for units that do not exist: {table - units}"


def test_imports_follow_the_layer_table():
  allowed = _allowed()
  bad = [f"{where} imports research.{dep} (a `{unit}` module may import: "
         f"{sorted(allowed[unit]) or 'nothing'})"
         for unit, deps in _imports().items() for dep, where in deps.items()
         if dep not in allowed.get(unit, set())]
  assert not bad, "\n".join(bad)


def test_only_the_entry_points_import_the_trainer_and_nothing_the_sweep_runner():
  for unit, deps in _imports().items():
    assert "sweep" not in deps, unit
    assert "trainer" not in deps or unit in ("main", "complete"), unit


def test_tasks_reach_devices_only_through_parallel():
  """No task names the device axis: parallel.mean / example_keys / device_key instead."""
  bad = []
  tasks_dir = os.path.join(REPO, "research", "tasks")
  for name in sorted(os.listdir(tasks_dir)):
    if not name.endswith(".py"):
      continue
    tree = ast.parse(open(os.path.join(tasks_dir, name)).read(), name)
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and any(a.name == "AXIS" for a in node.names):
        bad.append(f"{name}: imports AXIS from {node.module}")
      if isinstance(node, ast.Attribute) and node.attr in ("AXIS", "axis_index", "pmean", "psum"):
        bad.append(f"{name}:{node.lineno}: uses .{node.attr}")
  assert not bad, "\n".join(bad)


def test_paths_the_doc_names_exist():
  text = open(DOC).read()
  paths = set(re.findall(r"`((?:research|configs|scripts|tests|benchmarks|docs)/[\w./]+)`", text))
  assert paths, "the doc names no files"
  missing = [p for p in paths if "<" not in p and not os.path.exists(os.path.join(REPO, p))]
  assert not missing, missing


def test_the_readme_links_the_doc_and_no_path_outside_the_repository():
  readme = open(os.path.join(REPO, "README.md")).read()
  assert "docs/ARCHITECTURE.md" in readme
  assert not re.search(r"(?<![\w.])/(work|home|root|tmp)/", readme)
