"""Every command the README (and the docs next to the code) shows still works as written.

The README is the first thing a newcomer runs. Each `python scripts/...` or
`python benchmarks/...` command in its code blocks and inline code is checked,
without running the experiment it starts:
  * the program exists;
  * every `--flag` it passes is one the program defines (read from its
    argparse calls, so a renamed or removed flag is caught);
  * `--config FILE[:variants]` builds, and every `--config.field=value`,
    `--grid field=v1,v2` and `--set field=value` names a real field of that
    config and applies (ml_collections type checks included).
The two set-up commands are checked against `.ci/run`, which must run the
README's test command verbatim.
"""
from __future__ import annotations

import glob
import os
import re
import shlex

import pytest

from research import config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md", *sorted(glob.glob("research/**/*.md", root_dir=REPO, recursive=True)),
        *sorted(glob.glob("docs/*.md", root_dir=REPO))]
# Placeholders a reader replaces (DIR, FILE, RUN, ...): such a value is not checked.
_PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]*$|[\[\]<>*$]|\.\.\.")


def _commands(text: str) -> list[str]:
  """`python scripts/x.py ...` / `python benchmarks/x.py ...` commands in code blocks
  and inline code, with line continuations joined and chains (&&, ;) split."""
  chunks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
  chunks += re.findall(r"(?<!`)`([^`\n]+)`(?!`)", text)
  found = []
  for chunk in chunks:
    chunk = chunk.replace("\\\n", " ")
    for line in chunk.splitlines():
      line = re.sub(r"\s#.*$", "", line)  # a trailing shell comment
      for part in re.split(r"&&|;|\|\|", line):
        m = re.search(r"(?:\S*python3?\s+)((?:scripts|benchmarks)/\w+\.py.*)$", part.strip())
        if m:
          found.append(m.group(1).strip())
  return found


def _all_commands():
  out = []
  for doc in DOCS:
    with open(os.path.join(REPO, doc)) as f:
      for cmd in _commands(f.read()):
        out.append(pytest.param(doc, cmd, id=f"{doc}:{cmd[:70]}"))
  return out


def _defined_flags(script: str) -> set[str]:
  with open(os.path.join(REPO, script)) as f:
    source = f.read()
  # A thin script (scripts/train.py) runs a library entry point's main: read its flags there.
  for module in re.findall(r"^from (research(?:\.\w+)+) import .*\bmain\b", source, re.M):
    with open(os.path.join(REPO, *module.split(".")) + ".py") as f:
      source += f.read()
  return set(re.findall(r"add_argument\(\s*['\"](--[\w-]+)['\"]", source))


def _flag_values(tokens: list[str]) -> list[tuple[str, str | None]]:
  """[(--flag, value or None)] from argv tokens (--f=v, --f v, or a bare switch)."""
  pairs, i = [], 0
  while i < len(tokens):
    tok = tokens[i]
    if tok.startswith("--"):
      if "=" in tok:
        flag, value = tok.split("=", 1)
      elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
        flag, value = tok, tokens[i + 1]
        i += 1
      else:
        flag, value = tok, None
      pairs.append((flag, value))
    i += 1
  return pairs


def _check_config(config_arg: str, overrides: list[str], where: str) -> None:
  path = config_arg.partition(":")[0]
  assert os.path.exists(os.path.join(REPO, path)), f"{where}: no config file {path}"
  cwd = os.getcwd()
  os.chdir(REPO)  # README paths are relative to the repository root
  try:
    config = config_lib.load(config_arg)
    for item in overrides:
      config = config_lib.apply_overrides(config, [item])
  except config_lib.ConfigError as e:
    raise AssertionError(f"{where}: {e}") from e
  finally:
    os.chdir(cwd)


DOC_COMMANDS = _all_commands()


def test_the_docs_show_commands():
  """The extraction itself works: the README alone shows a dozen or more commands."""
  readme = [p for p in DOC_COMMANDS if p.values[0] == "README.md"]
  assert len(readme) >= 12, [p.values[1] for p in readme]
  scripts = {p.values[1].split()[0] for p in readme}
  assert {"scripts/train.py", "scripts/sweep.py"} <= scripts


@pytest.mark.parametrize("doc, command", DOC_COMMANDS)
def test_documented_command_is_valid(doc, command):
  tokens = shlex.split(command)
  script, args = tokens[0], tokens[1:]
  where = f"{doc}: `{command}`"
  assert os.path.exists(os.path.join(REPO, script)), f"{where}: {script} does not exist"
  defined = _defined_flags(script)
  config_arg, overrides = None, []
  for flag, value in _flag_values(args):
    if flag.startswith("--config."):
      overrides.append(f"{flag[len('--config.'):]}={value}")
      continue
    assert flag in defined, (f"{where}: {script} has no flag {flag}; it defines "
                             f"{sorted(defined)}")
    if value is None or _PLACEHOLDER.search(value):
      continue
    if flag == "--config":
      config_arg = value
    elif flag in ("--grid", "--set") and script == "scripts/sweep.py":
      field, _, values = value.partition("=")
      overrides.append(f"{field}={values.split(',')[0]}")
  if config_arg is not None and not _PLACEHOLDER.search(config_arg):
    _check_config(config_arg, [o for o in overrides if not _PLACEHOLDER.search(o)], where)


def test_ci_runs_the_readme_test_command_verbatim():
  with open(os.path.join(REPO, "README.md")) as f:
    readme = f.read()
  with open(os.path.join(REPO, ".ci", "run")) as f:
    ci = [l.strip() for l in f if l.strip() and not l.startswith("#")]
  block = re.search(r"## Two commands.*?```bash\n(.*?)```", readme, flags=re.S).group(1)
  lines = [l.strip() for l in block.splitlines() if l.strip() and not l.startswith("#")]
  assert len(lines) == 2, f"the README's set-up block should hold two commands, got {lines}"
  assert "pytest" in lines[1] and lines[1] in ci, (lines[1], ci)
  assert "scripts/" in lines[0], lines[0]
