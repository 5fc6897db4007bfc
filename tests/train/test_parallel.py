"""Data parallelism: 4 fake CPU devices train exactly what one device does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.train import parallel
from tests.conftest import ROOT

# Runs in a fresh process: the device count is fixed when jax starts.
_SCRIPT = r"""
import json, sys
import jax
from jaxmm.configs import tiny
from jaxmm import config as config_lib
from jaxmm.train import parallel
from jaxmm.recipes import train_and_evaluate
from jaxmm.train.writer import read_metrics

config_lib.setup_compilation_cache()
tmp = sys.argv[1]
assert jax.device_count() == 4, jax.devices()
try:
  parallel.per_process_batch(10, parallel.make_mesh())
  raise SystemExit("a batch of 10 over 4 devices was accepted")
except ValueError as e:
  assert "divide" in str(e) and "data_parallel=False" in str(e), e
out = {}
for dp in (False, True):
  c = tiny.get_config()
  c.data.root = c.data.synthetic.root = tmp + "/data"
  c.train.update(data_parallel=dp, epochs=1, max_steps=3, log_every=1, tune_thresholds="",
                 report=False)
  c.model.image.update(stem="imagenet", stage_sizes=(1,))  # conv, BN, pool; compiles fast
  workdir = f"{tmp}/dp{int(dp)}"
  train_and_evaluate(c, workdir)
  rows = read_metrics(workdir + "/metrics.jsonl")
  out[dp] = {"train": [r["train_loss"] for r in rows if "train_loss" in r],
             "val": [r["val_loss"] for r in rows if "val_loss" in r]}
print(json.dumps(out))
"""


def test_four_devices_match_one_device(tmp_path):
  # Keeps conftest's compile-time flags: without them this test takes half again as long.
  env = {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": " ".join(
      [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=4"]
    ).strip(),
  }
  proc = subprocess.run(
    [sys.executable, "-c", _SCRIPT, str(tmp_path)],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  one, four = out["false"], out["true"]
  assert len(one["train"]) == 3 and len(one["val"]) == 1
  for a, b in zip(one["train"] + one["val"], four["train"] + four["val"]):
    assert abs(a - b) <= 1e-5, (one, four)
  assert len(set(one["train"])) == 3  # the steps really trained


def test_place_commits_each_leaf_to_the_sharding_once():
  sharding = parallel.state_sharding(None)  # no mesh: this process's first device
  tree = {"fresh": jnp.ones(3), "host": np.zeros((2, 2), np.float32)}
  placed = parallel.place(tree, sharding)
  assert all(x.committed and x.sharding == sharding for x in jax.tree.leaves(placed))
  np.testing.assert_array_equal(placed["fresh"], np.ones(3))
  assert parallel.place(placed, sharding)["fresh"] is placed["fresh"]  # already placed: kept


def test_first_process_work_returns_its_result_and_raises_its_error():
  assert parallel.on_first_process(lambda: 3, "adding") == 3
  with pytest.raises(KeyError, match="k"):
    parallel.on_first_process(lambda: {}["k"], "reading")
  assert parallel.any_process(True) and not parallel.any_process(False)
