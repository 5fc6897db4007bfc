"""Tests for the config helpers (jaxmm/config.py): the workdir guard and override checks."""

from __future__ import annotations

import json
import os

import pytest

from configs import default
from jaxmm import config as config_lib
from jaxmm.config import (CONFIG_FILE, check_overrides, check_workdir_config, flatten,
                          load_config_file, nearest_key)
from tests.conftest import ROOT


def test_flatten():
  flat = flatten(default.get_config())
  assert flat["optim.lr"] == 1e-3
  assert flat["model.head.hidden"] == [512]  # tuples as lists, as in JSON
  assert flat["data.augment.crop_scale"] == [0.5, 1.0]
  assert "data" not in flat and "model.head" not in flat


def test_workdir_config_written_and_same_accepted(tmp_path):
  c = default.get_config()
  check_workdir_config(c, str(tmp_path))
  path = tmp_path / CONFIG_FILE
  saved = json.loads(path.read_text())
  assert saved["optim"]["lr"] == c.optim.lr and saved["model"]["name"] == c.model.name
  check_workdir_config(default.get_config(), str(tmp_path))  # same config: fine


def test_workdir_config_train_change_allowed(tmp_path):
  check_workdir_config(default.get_config(), str(tmp_path))
  c = default.get_config()
  c.train.epochs = 50
  c.train.max_steps = 7
  c.data.num_threads = 8
  check_workdir_config(c, str(tmp_path))
  saved = json.loads((tmp_path / CONFIG_FILE).read_text())
  assert saved["train"]["epochs"] == 50  # the file follows the resumed run


def test_workdir_config_model_change_refused(tmp_path):
  check_workdir_config(default.get_config(), str(tmp_path))
  before = (tmp_path / CONFIG_FILE).read_text()
  c = default.get_config()
  c.model.text.hidden_size = 64
  c.optim.lr = 0.1
  with pytest.raises(ValueError) as e:
    check_workdir_config(c, str(tmp_path))
  msg = str(e.value)
  assert "model.text.hidden_size" in msg and "128" in msg and "64" in msg
  assert "optim.lr" in msg and "2 key(s)" in msg
  assert str(tmp_path) in msg and "allow_config_change" in msg
  assert (tmp_path / CONFIG_FILE).read_text() == before  # not overwritten

  c.train.allow_config_change = True
  check_workdir_config(c, str(tmp_path))
  saved = json.loads((tmp_path / CONFIG_FILE).read_text())
  assert saved["model"]["text"]["hidden_size"] == 64


def test_workdir_config_added_key_refused(tmp_path):
  check_workdir_config(default.get_config(), str(tmp_path))
  c = default.get_config()
  c.model.extra = 1
  with pytest.raises(ValueError, match="model.extra"):
    check_workdir_config(c, str(tmp_path))


def test_workdir_from_before_an_added_key_resumes_only_with_its_old_behaviour(tmp_path):
  check_workdir_config(default.get_config(), str(tmp_path))
  path = tmp_path / CONFIG_FILE
  old = json.loads(path.read_text())
  for key in config_lib.ADDED_KEYS:  # the config.json an older jaxmm wrote
    *parents, leaf = key.split(".")
    node = old
    for p in parents:
      node = node[p]
    del node[leaf]
  path.write_text(json.dumps(old))
  check_workdir_config(default.get_config(), str(tmp_path))  # defaults = the old behaviour
  path.write_text(json.dumps(old))
  c = default.get_config()
  c.data.augment.color_jitter = 0.3
  with pytest.raises(ValueError, match=r"data.augment.color_jitter: 0.0 -> 0.3"):
    check_workdir_config(c, str(tmp_path))


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
  check_overrides(["train.py", "--config=configs/tiny.py", "--config.optim.lr=1",
                   "--config.train.batch_size=4", "--config.model.head.hidden=(8,)"])
  check_overrides(["train.py", "--config", "configs/tiny.py", "--config.data.root=/x"])
  # A whole sub-config (a prefix of existing keys) is a valid target too.
  check_overrides(["train.py", "--config=configs/tiny.py", "--config.model.text=x"])
  check_overrides(["train.py", "--workdir=/tmp/x"])  # no --config: nothing to check


def test_check_overrides_space_separated_config(in_root):
  with pytest.raises(SystemExit, match="data.rooot"):
    check_overrides(["train.py", "--config", "configs/tiny.py", "--config.data.rooot=/x"])


def test_load_config_file_missing(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.py"):
    load_config_file(str(tmp_path / "nope.py"))


def test_load_config_file(in_root):
  c = load_config_file(os.path.join("configs", "tiny.py"))
  assert c.data.image_size == 16 and c.train.batch_size == 16


def test_ensure_synthetic(tmp_path):
  c = default.get_config()
  c.data.root = str(tmp_path / "syn")
  c.data.synthetic.update(n_train=6, n_test=2, image_size=8)
  config_lib.ensure_synthetic(c.data)
  assert (tmp_path / "syn" / "train.csv").is_file()
  assert len(os.listdir(tmp_path / "syn" / "data")) == 8
  mtime = os.stat(tmp_path / "syn" / "train.csv").st_mtime_ns
  config_lib.ensure_synthetic(c.data)  # already there: untouched
  assert os.stat(tmp_path / "syn" / "train.csv").st_mtime_ns == mtime
