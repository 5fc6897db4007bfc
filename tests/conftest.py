"""Shared test fixtures: tiny synthetic datasets and paths to the optional real data."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # configs/ is imported as a package by the config files
  sys.path.insert(0, ROOT)

# Tests run tiny arrays through many programs, so compiling dominates their time, and two XLA
# settings cut it on the CPU while buying nothing at these sizes (users' runs keep XLA's defaults):
# - no LLVM backend optimisation (a 2-step ResNet-34 run beside a training job: 123 s -> 55 s);
# - XLA's older loop emitters instead of its MLIR fusion emitters: s2_xu's two-step run compiles
#   in 24 s instead of 38 s (its train step 22 s -> 13 s; benchmarks/RESULTS.md, "Tests").
# Set before jax starts its backend; the scripts the tests start inherit them. XLA aborts the
# process on a flag it does not know, so each is first tried in a child process.
_TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")


def _xla_accepts(flags: str) -> bool:
  probe = "import jax, jax.numpy as jnp; jax.jit(lambda x: x + 1)(jnp.ones(2)).block_until_ready()"
  env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
  return (
    subprocess.run(
      [sys.executable, "-c", probe], env=env, capture_output=True, timeout=300
    ).returncode
    == 0
  )


def _test_xla_flags() -> str:
  flags = os.environ.get("XLA_FLAGS", "")
  wanted = [f for f in _TEST_XLA_FLAGS if f.split("=")[0] not in flags]
  if wanted and _xla_accepts(" ".join([flags, *wanted])):  # one probe in the usual case
    return " ".join([flags, *wanted]).strip()
  for flag in wanted:
    if _xla_accepts(f"{flags} {flag}"):
      flags = f"{flags} {flag}".strip()
  return flags


os.environ["XLA_FLAGS"] = _test_xla_flags()

# The README runs the suite as `pytest -n 2 --dist loadscope` (pytest-xdist): most tests compile
# and trace in one Python thread, so two workers on two cores take ~0.6x the serial time. A
# module's tests stay on one worker (they share module fixtures), as loadscope does; on top of it,
# the config tests share nothing and spread one by one, the two modules reading the session's
# own-data run share a worker, and units start longest first, so no long one is left for the end
# (seconds: one serial run; units not named here follow in collection order).
_SPREAD_MODULES = ("tests/test_configs.py",)
_MERGED_MODULES = {"tests/test_api.py": "own_data", "tests/test_own_data.py": "own_data"}
_SECONDS = {
  "tests/recipes/test_two_stage.py": 100,
  "tests/test_faults.py": 87,
  "tests/test_end_to_end.py": 81,
  "tests/test_configs.py::test_config_trains_two_steps[s1_bingi]": 71,
  "own_data": 70,
  "tests/train/test_loop.py": 76,
  "tests/train/test_multihost.py": 61,
  "tests/tasks/test_tasks.py": 56,
  "tests/test_benchmarks.py": 72,
  "tests/train/test_steps.py": 37,
  "tests/test_scripts.py": 37,
  "tests/recipes/test_pretrained_starts.py": 36,
  "tests/test_configs.py::test_config_trains_two_steps[s4_liu]": 36,
  "tests/test_configs.py::test_config_trains_two_steps[best]": 28,
  "tests/test_configs.py::test_config_trains_two_steps[s3_ren]": 26,
  "tests/test_configs.py::test_config_trains_two_steps[s2_xu]": 24,
}


def _xdist_unit(nodeid: str) -> str:
  module = nodeid.split("::")[0]
  return nodeid if module in _SPREAD_MODULES else _MERGED_MODULES.get(module, module)


def pytest_collection_modifyitems(config, items):
  if hasattr(config, "workerinput"):  # an xdist worker: the scheduler takes units in this order
    items.sort(key=lambda item: -_SECONDS.get(_xdist_unit(item.nodeid), 0))  # stable


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
  if config.getvalue("dist") != "loadscope":
    return None
  from xdist.scheduler import LoadScopeScheduling

  class UnitScheduling(LoadScopeScheduling):
    def _split_scope(self, nodeid: str) -> str:
      return _xdist_unit(nodeid)

  config.option.loadscopereorder = False  # keep the workers' longest-first order
  return UnitScheduling(config, log)


SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
COMP5329_DEV = os.path.join(SHARED, "comp5329-dev")
MATCHING_DEV = os.path.join(SHARED, "matching-dev")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
  # Image caches of one test never leak into another, or into the user's ~/.cache.
  monkeypatch.setenv("JAXMM_CACHE", str(tmp_path_factory.getbasetemp() / "jaxmm_cache"))


@pytest.fixture(scope="session", autouse=True)
def _shared_compilation_cache(tmp_path_factory):
  # One XLA cache for this session's tests and the scripts they start: the tiny configs compile
  # the same programs again and again, and compiling dominates their run time on CPU.
  path = str(tmp_path_factory.getbasetemp() / "xla_cache")
  os.environ["JAXMM_XLA_CACHE"] = path
  from jaxmm import config as config_lib

  config_lib.setup_compilation_cache(path)


@pytest.fixture(scope="session")
def own_data_run(tmp_path_factory):
  """configs/own_data.py trained once on tests/test_own_data.py's generated folder, with
  predict.py's `--probs` output on its test.csv: (root, rows, workdir, predictions path). Shared
  by the tests of own data and of `jaxmm.load`, which only read it."""
  from jaxmm.recipes import train_and_evaluate
  from tests.test_own_data import _config, _run, make_own_data

  tmp = tmp_path_factory.mktemp("own_data")
  root = tmp / "mine"
  rows = make_own_data(str(root))
  workdir = str(tmp / "run")
  train_and_evaluate(_config(root), workdir)
  pred = tmp / "pred.csv"
  args = ["predict.py", "--workdir", workdir, "--csv", str(root / "test.csv"), "--out", str(pred)]
  _run([*args, "--probs"])
  return root, rows, workdir, pred


def import_torchvision():
  """torchvision, or None when it is not installed. The torchvision wheel pip finds beside a CPU
  torch is a CUDA build whose compiled ops (nms ...) fail to register at import; its models, and
  transformers (which imports torchvision whenever it is installed), need none of them, so the op
  registrations are skipped then."""
  import importlib.util
  import types

  if importlib.util.find_spec("torch") is None or importlib.util.find_spec("torchvision") is None:
    return None
  try:
    import torchvision
  except (ImportError, RuntimeError):
    for name in [n for n in sys.modules if n.split(".")[0] == "torchvision"]:
      del sys.modules[name]
    sys.modules["torchvision._meta_registrations"] = types.ModuleType("_meta_registrations")
    import torchvision
  return torchvision


def requires(path: str):
  return pytest.mark.skipif(not os.path.exists(path), reason=f"{path} not present")
