"""The installed commands (jaxmm-train, jaxmm-evaluate, jaxmm-predict) outside a checkout, with the
configs shipped inside the package."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys

import pytest

from jaxmm import config as config_lib
from tests.conftest import ROOT

COMMANDS = ("jaxmm-train", "jaxmm-evaluate", "jaxmm-predict")


def test_the_commands_are_installed_entry_points():
  scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
  assert {c: scripts.get(c) for c in COMMANDS} == {
    c: f"jaxmm.scripts.{c.split('-')[1]}:run" for c in COMMANDS
  }


def test_shipped_configs_are_found_by_name():
  demo = config_lib.shipped_config("demo")
  assert demo == os.path.join(config_lib.CONFIGS_DIR, "demo.py") and os.path.isfile(demo)
  assert config_lib.shipped_config("configs/demo.py") == demo
  assert config_lib.shipped_config("nonexistent") is None
  argv = ["x", "--config", "demo", "--config=tiny:arg", "--workdir", "w"]
  config_lib.resolve_config_arg(argv)
  assert argv[2] == demo and argv[3] == f"--config={config_lib.shipped_config('tiny')}:arg"
  here = [__file__]  # a file that exists is left alone
  argv = ["x", "--config", here[0]]
  config_lib.resolve_config_arg(argv)
  assert argv[2] == here[0]


def _command(name: str) -> list[str]:
  """The installed command when it is on PATH (pip install), else the same entry point run as a
  module: both run jaxmm.scripts.<name>.run."""
  found = shutil.which(f"jaxmm-{name}", path=os.path.dirname(sys.executable))
  return [found] if found else [sys.executable, "-m", f"jaxmm.scripts.{name}"]


@pytest.mark.slow
def test_train_evaluate_predict_outside_a_checkout(tmp_path):
  """From an empty folder: the shipped tiny config by name, its synthetic data made there."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  env.pop("PYTHONPATH", None)

  def run(*args):
    proc = subprocess.run(
      list(args), cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc

  run(*_command("train"), "--config", "tiny", "--workdir", "w", "--config.train.epochs=1")
  assert os.path.isfile(tmp_path / "w" / "config.json")
  out = run(*_command("evaluate"), "--workdir", "w")
  assert "val_" in out.stdout or "f1" in out.stdout.lower()
  test_csv = tmp_path / "data" / "synthetic_tiny" / "test.csv"
  run(*_command("predict"), "--workdir", "w", "--csv", str(test_csv), "--out", "sub.csv")
  lines = (tmp_path / "sub.csv").read_text().splitlines()
  assert lines[0] == "ImageID,Labels" and len(lines) == 1 + 8


@pytest.mark.parametrize(
  "name, own_flags",
  [
    ("train", ("--config", "--workdir", "--stage")),
    ("evaluate", ("--workdir", "--csv", "--rows")),
    ("predict", ("--workdir", "--csv", "--out", "--probs")),
  ],
)
def test_help_lists_the_programs_own_flags(name, own_flags):
  """--help of the checkout's script and of the installed command: the program's flags and
  --verbose, though they are defined in jaxmm.scripts.<name>, not in the file run."""
  for cmd in ([sys.executable, f"{name}.py"], _command(name)):
    out = subprocess.run(
      [*cmd, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    ).stdout
    assert all(f"{flag}:" in out or f"--[no]{flag[2:]}:" in out for flag in own_flags), out
    assert "--[no]verbose:" in out, out
