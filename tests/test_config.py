"""Tests for the config helpers (jaxmm/config.py): loading, override checks, synthetic data."""

from __future__ import annotations

import os

import pytest

from jaxmm import config as config_lib
from jaxmm.config import check_overrides, flatten, load_config_file, nearest_key
from jaxmm.configs import default
from tests.conftest import ROOT


def test_flatten():
  flat = flatten(default.get_config())
  assert flat["optim.lr"] == 1e-3
  assert flat["model.head.hidden"] == [512]  # tuples as lists, as in JSON
  assert flat["data.augment.crop_scale"] == [0.5, 1.0]
  assert "data" not in flat and "model.head" not in flat


def test_nearest_key():
  c = default.get_config()
  assert nearest_key(c, "optim.lrr") == "optim.lr"
  assert nearest_key(c, "train.batchsize") == "train.batch_size"
  assert nearest_key(c, "zzzzzzzzzzzzzzzzzzzzzz") is None


@pytest.fixture
def in_root(monkeypatch):
  monkeypatch.chdir(ROOT)  # configs/tiny.py is given relative to the repository


def test_check_overrides_bad_key(in_root):
  argv = ["train.py", "--config=configs/tiny.py", "--config.optim.lrr=1"]
  with pytest.raises(SystemExit) as e:
    check_overrides(argv)
  msg = str(e.value.code)
  assert "'optim.lrr'" in msg and "--config.optim.lr?" in msg and "configs/tiny.py" in msg


def test_check_overrides_valid(in_root):
  check_overrides(
    [
      "train.py",
      "--config=configs/tiny.py",
      "--config.optim.lr=1",
      "--config.train.batch_size=4",
      "--config.model.head.hidden=(8,)",
    ]
  )
  check_overrides(["train.py", "--config", "configs/tiny.py", "--config.data.root=/x"])
  # A whole sub-config (a prefix of existing keys) is a valid target too.
  check_overrides(["train.py", "--config=configs/tiny.py", "--config.model.text=x"])
  check_overrides(["train.py", "--workdir=/tmp/x"])  # no --config: nothing to check


def test_check_overrides_space_separated_config(in_root):
  with pytest.raises(SystemExit, match="data.rooot"):
    check_overrides(["train.py", "--config", "configs/tiny.py", "--config.data.rooot=/x"])


def test_check_overrides_space_separated_value_and_missing_file(in_root, tmp_path):
  with pytest.raises(
    SystemExit, match=r"'train\.epochz' does not exist.*--config\.train\.epochs\?"
  ):
    check_overrides(["train.py", "--config", "configs/tiny.py", "--config.train.epochz", "1"])
  check_overrides(["train.py", "--config", "configs/tiny.py", "--config.train.epochs", "1"])
  with pytest.raises(SystemExit, match=r"^error: config file '.*nope\.py' does not exist"):
    check_overrides(["train.py", f"--config={tmp_path / 'nope.py'}"])


def test_load_config_file_missing(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.py"):
    load_config_file(str(tmp_path / "nope.py"))


def test_load_config_file(in_root):
  c = load_config_file(os.path.join("jaxmm", "configs", "tiny.py"))
  assert c.data.image_size == 16 and c.train.batch_size == 16


def test_ensure_synthetic(tmp_path):
  c = default.get_config()
  c.data.root = c.data.synthetic.root = str(tmp_path / "syn")
  c.data.synthetic.update(n_train=6, n_test=2, image_size=8)
  config_lib.ensure_synthetic(c.data)
  assert (tmp_path / "syn" / "train.csv").is_file()
  assert len(os.listdir(tmp_path / "syn" / "data")) == 8
  mtime = os.stat(tmp_path / "syn" / "train.csv").st_mtime_ns
  config_lib.ensure_synthetic(c.data)  # already there: untouched
  assert os.stat(tmp_path / "syn" / "train.csv").st_mtime_ns == mtime


def test_a_mistyped_root_is_an_error_not_a_new_synthetic_set(tmp_path):
  c = default.get_config()
  c.data.synthetic.update(root=str(tmp_path / "syn"), n_train=6, n_test=2, image_size=8)
  c.data.root = str(tmp_path / "sny")
  with pytest.raises(FileNotFoundError) as e:
    config_lib.ensure_synthetic(c.data)
  assert "sny" in str(e.value) and "--config.data.synthetic.root=" in str(e.value)
  assert not os.path.exists(tmp_path / "sny") and not os.path.exists(tmp_path / "syn")
  c.data.synthetic.root = ""  # a config without a synthetic set never generates one
  config_lib.ensure_synthetic(c.data)
  assert not os.path.exists(tmp_path / "sny")


def test_a_root_holding_a_jsonl_table_is_data_not_a_mistyped_root(tmp_path):
  # demo.py / tiny.py pointed at one's own table (train.jsonl, no train.csv) read it.
  c = default.get_config()
  c.data.synthetic.update(root=str(tmp_path / "syn"), n_train=6, n_test=2, image_size=8)
  c.data.root = str(tmp_path / "mine")
  os.makedirs(c.data.root)
  with open(os.path.join(c.data.root, "train.jsonl"), "w") as f:
    f.write('{"image": "a.jpg", "text": "a cat", "labels": "cat"}\n')
  config_lib.ensure_synthetic(c.data)
  assert os.listdir(c.data.root) == ["train.jsonl"] and not os.path.exists(tmp_path / "syn")
  os.remove(os.path.join(c.data.root, "train.jsonl"))
  with pytest.raises(FileNotFoundError, match=r"has no train\.csv or train\.jsonl: check"):
    config_lib.ensure_synthetic(c.data)


def test_train_py_with_a_mistyped_root_exits_with_the_error_and_writes_nothing(tmp_path):
  import subprocess
  import sys

  workdir = tmp_path / "run"
  proc = subprocess.run(
    [
      sys.executable,
      "train.py",
      "--config",
      "configs/tiny.py",
      "--workdir",
      str(workdir),
      f"--config.data.root={tmp_path / 'no' / 'such'}",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )
  assert proc.returncode != 0 and "no/such" in proc.stderr
  assert not os.path.exists(tmp_path / "no")
