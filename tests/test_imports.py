"""The package's import graph: every module imports, and no two modules import each other, even
through others or from inside a function (a deferred import hides a cycle; it does not remove
it)."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PACKAGE = os.path.join(ROOT, "jaxmm")


def _modules() -> dict[str, str]:
  out = {}
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].replace(os.sep, ".")
        out[rel.removesuffix(".__init__")] = os.path.join(folder, name)
  return out


def _imports(path: str, modules: dict[str, str]) -> set[str]:
  """The jaxmm modules `path` imports: `from jaxmm.a import b` names jaxmm.a.b when that is a
  module, else jaxmm.a."""
  found = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name in modules)
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxmm"):
      for alias in node.names:
        sub = f"{node.module}.{alias.name}"
        found.add(sub if sub in modules else node.module)
  return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
  state: dict[str, int] = {}  # 1: on the current path, 2: done
  path: list[str] = []

  def visit(node):
    state[node] = 1
    path.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return path[path.index(nxt) :] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    state[node] = 2
    path.pop()
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_the_package_has_no_import_cycle():
  modules = _modules()
  graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
  assert "jaxmm.tasks.multilabel" in graph and "jaxmm.train.loop" in graph
  assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_one():
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_loop_imports_no_recipe_or_task_module():
  # Data flows one way: recipes build objects and call fit(); the loop only runs it.
  modules = _modules()
  loop = _imports(modules["jaxmm.train.loop"], modules)
  assert not {m for m in loop if m.startswith(("jaxmm.recipes", "jaxmm.tasks"))}
  data = set().union(
    *(_imports(p, modules) for m, p in modules.items() if m.startswith("jaxmm.data"))
  )
  assert not {m for m in data if m.startswith(("jaxmm.models", "jaxmm.train", "jaxmm.tasks"))}


SCRIPTS = "jaxmm.scripts."  # each defines its absl flags at import: one process per script


@pytest.mark.parametrize("name", sorted(m for m in _modules() if not m.startswith(SCRIPTS)))
def test_every_module_imports(name):
  importlib.import_module(name)


@pytest.mark.parametrize("name", sorted(m for m in _modules() if m.startswith(SCRIPTS)))
def test_every_script_imports_on_its_own(name):
  done = subprocess.run(
    [sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True
  )
  assert done.returncode == 0, done.stderr[-2000:]
