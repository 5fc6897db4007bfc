"""The workdir (jaxmm/workdir.py): its config guard, and reading a finished run's config."""

from __future__ import annotations

import json
import os

import pytest

from configs import default, tiny
from jaxmm import workdir as workdir_lib


def write(config, workdir: str) -> None:
  """write_config, as a run that got as far as a checkpoint leaves the workdir."""
  workdir_lib.write_config(config, workdir)
  os.makedirs(os.path.join(workdir, "checkpoints", "latest", "1"), exist_ok=True)


def test_workdir_config_written_and_same_accepted(tmp_path):
  c = default.get_config()
  write(c, str(tmp_path))
  path = tmp_path / workdir_lib.CONFIG_FILE
  saved = json.loads(path.read_text())
  assert saved["optim"]["lr"] == c.optim.lr and saved["model"]["name"] == c.model.name
  write(default.get_config(), str(tmp_path))  # same config: fine


def test_workdir_config_train_change_allowed(tmp_path):
  write(default.get_config(), str(tmp_path))
  c = default.get_config()
  c.train.epochs = 50
  c.train.max_steps = 7
  c.data.num_threads = 8
  write(c, str(tmp_path))
  saved = json.loads((tmp_path / workdir_lib.CONFIG_FILE).read_text())
  assert saved["train"]["epochs"] == 50  # the file follows the resumed run


def test_workdir_config_model_change_refused(tmp_path):
  write(default.get_config(), str(tmp_path))
  before = (tmp_path / workdir_lib.CONFIG_FILE).read_text()
  c = default.get_config()
  c.model.text.hidden_size = 64
  c.optim.lr = 0.1
  with pytest.raises(ValueError) as e:
    write(c, str(tmp_path))
  msg = str(e.value)
  assert "model.text.hidden_size" in msg and "128" in msg and "64" in msg
  assert "optim.lr" in msg and "2 key(s)" in msg
  assert str(tmp_path) in msg and "allow_config_change" in msg
  assert (tmp_path / workdir_lib.CONFIG_FILE).read_text() == before  # not overwritten

  c.train.allow_config_change = True
  write(c, str(tmp_path))
  saved = json.loads((tmp_path / workdir_lib.CONFIG_FILE).read_text())
  assert saved["model"]["text"]["hidden_size"] == 64


def test_workdir_config_added_key_refused(tmp_path):
  write(default.get_config(), str(tmp_path))
  c = default.get_config()
  c.model.extra = 1
  with pytest.raises(ValueError, match="model.extra"):
    write(c, str(tmp_path))


def test_workdir_from_before_an_added_key_resumes_only_with_its_old_behaviour(tmp_path):
  write(default.get_config(), str(tmp_path))
  path = tmp_path / workdir_lib.CONFIG_FILE
  old = json.loads(path.read_text())
  for key in workdir_lib.ADDED_KEYS:  # the config.json an older jaxmm wrote
    *parents, leaf = key.split(".")
    node = old
    for p in parents:
      node = node[p]
    del node[leaf]
  path.write_text(json.dumps(old))
  write(default.get_config(), str(tmp_path))  # defaults = the old behaviour
  path.write_text(json.dumps(old))
  c = default.get_config()
  c.data.augment.color_jitter = 0.3
  with pytest.raises(ValueError, match=r"data.augment.color_jitter: 0.0 -> 0.3"):
    write(c, str(tmp_path))


def test_a_workdir_without_checkpoints_takes_another_config(tmp_path):
  workdir_lib.write_config(default.get_config(), str(tmp_path))  # a run that failed early
  c = default.get_config()
  c.model.text.hidden_size = 64
  workdir_lib.write_config(c, str(tmp_path))
  assert workdir_lib.read_config(str(tmp_path)).model.text.hidden_size == 64


def test_one_data_folder_written_relative_or_absolute_is_the_same_config(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  os.makedirs("data/mine")
  c = default.get_config()
  c.data.root = "data/mine"
  write(c, str(tmp_path / "run"))
  c.data.root = str(tmp_path / "data" / "mine")
  assert workdir_lib.config_differences(c, str(tmp_path / "run")) == []
  c.data.root = str(tmp_path / "data" / "other")
  assert workdir_lib.config_differences(c, str(tmp_path / "run")) == [
    f"data.root: 'data/mine' -> {c.data.root!r}"
  ]


def test_clear_untrained_drops_derived_files_only_before_the_first_checkpoint(tmp_path):
  wd = str(tmp_path)
  workdir_lib.write_config(default.get_config(), wd)
  for name in workdir_lib.DERIVED_FILES + (workdir_lib.METRICS_FILE,):
    (tmp_path / name).write_text("{}")
  assert sorted(workdir_lib.clear_untrained(wd)) == sorted(
    os.path.join(wd, n) for n in workdir_lib.DERIVED_FILES
  )
  assert sorted(os.listdir(wd)) == [workdir_lib.CONFIG_FILE, workdir_lib.METRICS_FILE]
  (tmp_path / workdir_lib.VOCAB_FILE).write_text("{}")
  os.makedirs(tmp_path / "checkpoints" / "latest" / "3")  # a run that saved step 3
  assert workdir_lib.clear_untrained(wd) == [] and (tmp_path / workdir_lib.VOCAB_FILE).exists()


def test_read_config_fills_keys_the_run_predates(tmp_path):
  write(tiny.get_config(), str(tmp_path))
  path = tmp_path / workdir_lib.CONFIG_FILE
  old = json.loads(path.read_text())
  del old["optim"]["eps"], old["train"]["report"]
  path.write_text(json.dumps(old))
  c = workdir_lib.read_config(str(tmp_path))
  assert c.optim.eps == default.get_config().optim.eps and c.train.report is True
  assert c.data.image_size == 16  # the run's own values stay


def test_read_config_names_a_folder_that_is_no_workdir(tmp_path):
  with pytest.raises(FileNotFoundError, match="is .* a jaxmm workdir"):
    workdir_lib.read_config(str(tmp_path))
