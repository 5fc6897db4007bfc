"""Shared test fixtures: tiny synthetic datasets and paths to the optional real data."""

from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # configs/ is imported as a package by the config files
  sys.path.insert(0, ROOT)

# Tests run tiny arrays through many programs, so compiling dominates their time. XLA's backend
# (LLVM) optimisations add compile time on the CPU (a 2-step ResNet-34 run beside a training job:
# 123 s -> 55 s without them; idle, much less) and buy nothing at these sizes. Set before jax
# starts its backend; the scripts the tests start inherit it. Users' runs keep XLA's default.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_backend_optimization_level=0").strip()

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


def requires(path: str):
  return pytest.mark.skipif(not os.path.exists(path), reason=f"{path} not present")
