"""What a new user meets when evaluation or prediction goes wrong, through the real scripts: one
line naming the culprit and the fix, and nothing written or lost."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from configs import tiny
from jaxmm import inference
from jaxmm.data import comp5329
from jaxmm.recipes import train_and_evaluate
from tests.conftest import ROOT


def _train(tmp_dir, mode: str) -> str:
  config = tiny.get_config()
  config.model.mode = mode
  config.train.update(epochs=1, report=False)
  config.data.root = config.data.synthetic.root = str(tmp_dir / "data")
  workdir = str(tmp_dir / f"run_{mode}")
  train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A text-only run (no images to decode: the cheapest workdir) and its dataset folder."""
  tmp_dir = tmp_path_factory.mktemp("faults")
  return _train(tmp_dir, "text"), tmp_dir / "data"


def _copy(workdir, tmp_path) -> str:
  dst = str(tmp_path / "run")
  shutil.copytree(workdir, dst)
  return dst


def _run(script, *args, verbose: bool = False):
  return subprocess.run(
    [sys.executable, script, *map(str, args), *(["--verbose"] * verbose)],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )


def _one_line_error(proc) -> str:
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, proc.stderr[-3000:]
  return errors[0]


def _tree(folder) -> dict:
  return {
    os.path.join(d, n): os.path.getsize(os.path.join(d, n))
    for d, dirs, files in os.walk(folder)
    for n in files + dirs
  }


def _damage_largest(folder) -> None:
  """Truncates the largest file of a checkpoint (an interrupted copy, a full disk)."""
  files = [os.path.join(d, n) for d, _, names in os.walk(folder) for n in names]
  with open(max(files, key=os.path.getsize), "r+b") as f:
    f.truncate(100)


def test_damaged_best_falls_back_to_latest(trained, tmp_path):
  workdir, data = _copy(trained[0], tmp_path), trained[1]
  best = os.path.join(workdir, "checkpoints", "best")
  step = os.listdir(best)[0]
  _damage_largest(os.path.join(best, step))
  out = tmp_path / "sub.csv"
  proc = _run("predict.py", "--workdir", workdir, "--csv", data / "test.csv", "--out", out)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"'best' checkpoint (step {step}" in proc.stderr and "--which latest" in proc.stderr
  assert len(out.read_text().splitlines()) == 1 + 8
  proc = _run(
    "predict.py",
    "--workdir",
    workdir,
    "--csv",
    data / "test.csv",
    "--out",
    out,
    "--which",
    "latest",
  )  # chosen by name: no warning
  assert proc.returncode == 0 and "cannot be restored" not in proc.stderr, proc.stderr[-3000:]
  out.unlink()
  _damage_largest(os.path.join(workdir, "checkpoints", "latest"))
  proc = _run("predict.py", "--workdir", workdir, "--csv", data / "test.csv", "--out", out)
  line = _one_line_error(proc)
  assert f"checkpoints/best/{step}," in line and "checkpoints/latest/" in line
  assert "from a backup" in line and "TensorStore" not in proc.stderr and not out.exists()


@pytest.fixture(scope="module")
def trained_on_images(tmp_path_factory):
  """A run that reads images (the text-only one never opens them)."""
  tmp_dir = tmp_path_factory.mktemp("faults_images")
  return _train(tmp_dir, "image"), tmp_dir / "data"


def test_missing_image_names_csv_and_row_and_predict_can_skip_it(trained_on_images, tmp_path):
  workdir, data = trained_on_images
  data_copy = tmp_path / "data"
  shutil.copytree(data, data_copy)
  rows = list(csv.reader((data_copy / "test.csv").open()))
  missing = rows[3][0]  # record 2: CSV line 4
  (data_copy / "data" / missing).unlink()
  before, out = _tree(workdir), tmp_path / "sub.csv"
  proc = _run("predict.py", "--workdir", workdir, "--csv", data_copy / "test.csv", "--out", out)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert f"{data_copy / 'test.csv'}: 1 image(s) cannot be used" in proc.stderr
  assert "line 4" in proc.stderr and missing in proc.stderr and "--skip_bad" in proc.stderr
  assert "--config.data.skip_bad" not in proc.stderr and not out.exists()
  proc = _run(
    "predict.py", "--workdir", workdir, "--csv", data_copy / "test.csv", "--out", out, "--skip_bad"
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "skipped 1 row(s)" in proc.stderr and missing in proc.stderr
  written = list(csv.reader(out.open()))
  assert [r[0] for r in written] == [r[0] for r in rows]  # every row, in input order
  assert written[3] == [missing, ""] and all(r[1] for i, r in enumerate(written[1:], 1) if i != 3)
  listed = json.loads((tmp_path / "sub.csv.skipped.json").read_text())
  assert listed["rows"] == [{"id": missing, "record": 2}] and missing in listed["reasons"][0]
  assert _tree(workdir) == before


def test_rows_reads_those_records_alone(trained_on_images, tmp_path):
  """evaluate.py --rows: a bad image outside the range is not read; with --skip_bad the range
  still names records of the file, not of what is left after skipping."""
  workdir, data = trained_on_images
  data_copy = tmp_path / "data"
  shutil.copytree(data, data_copy)
  source = str(data_copy / "train.csv")
  ids = [r.image_id for r in comp5329.read_comp5329(source)]
  (data_copy / "data" / ids[2]).unlink()
  restored = inference.restore(workdir)
  read = dict(labelled=True, skip_bad=False, skip_hint="")
  split, skipped = inference.read_split(
    restored, source, str(data_copy / "data"), rows="5:9", **read
  )
  assert split.ids == ids[5:9] and skipped is None
  read["skip_bad"] = True
  split, skipped = inference.read_split(
    restored, source, str(data_copy / "data"), rows="1:6", **read
  )
  assert split.ids == ids[1:2] + ids[3:6] and skipped.ids == [ids[2]] and skipped.records == [1]
  with pytest.raises(ValueError, match=r"--rows='500:' selects no row of .*train\.csv \(\d+ rec"):
    inference.read_split(restored, source, str(data_copy / "data"), rows="500:", **read)


def test_usage_and_path_mistakes_get_one_line(trained_on_images, tmp_path):
  workdir, data = trained_on_images
  line = _one_line_error(_run("evaluate.py", "--workdir", workdir, "--rows", "1:3"))
  assert line == "error: --rows selects records of --csv; pass --csv too (--help lists the flags)"
  afile = tmp_path / "afile"
  afile.write_text("x")
  line = _one_line_error(_run("train.py", "--config", "tiny", "--workdir", afile))
  assert f"cannot write {afile} ({afile} is not a writable folder)" in line
  test_csv = data / "test.csv"
  line = _one_line_error(
    _run("predict.py", "--workdir", workdir, "--csv", test_csv, "--images", tmp_path / "nope")
  )
  assert f"the images folder {tmp_path / 'nope'} does not exist: pass --images DIR" in line
  rows = (data / "train.csv").read_text().splitlines()
  image_id, _, caption = rows[2].split(",", 2)
  rows[2] = f"{image_id},,{caption}"  # record 2 (CSV line 3) without labels
  (tmp_path / "t.csv").write_text("\n".join(rows[:5]) + "\n")
  line = _one_line_error(
    _run(
      "evaluate.py", "--workdir", workdir, "--csv", tmp_path / "t.csv", "--images", data / "data"
    )
  )
  assert f"t.csv:3: no labels for {image_id!r} (1 row(s) without)" in line


def test_header_only_csv_gives_header_only_file(trained_on_images, tmp_path):
  workdir, data = trained_on_images  # an image model: no image store of no images is made
  empty = tmp_path / "test.csv"
  empty.write_text((data / "test.csv").read_text().splitlines()[0] + "\n")
  out = tmp_path / "sub.csv"
  proc = _run("predict.py", "--workdir", workdir, "--csv", empty, "--out", out)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert out.read_text().splitlines() == ["ImageID,Labels"]
  assert "has no records" in proc.stderr


def test_evaluate_checks_out_before_any_work(trained, tmp_path):
  workdir, _ = trained
  before = _tree(workdir)
  folder = tmp_path / "metrics"
  folder.mkdir()  # an existing folder cannot be written as a file, by root either
  line = _one_line_error(_run("evaluate.py", "--workdir", workdir, "--out", folder))
  assert f"--out={folder} is a folder" in line
  line = _one_line_error(
    _run("evaluate.py", "--workdir", workdir, "--out", tmp_path / "no" / "m.json")
  )
  assert "does not exist" in line and "--out" in line
  assert _tree(workdir) == before
  line = _one_line_error(_run("evaluate.py", "--workdir", tmp_path / "no_run"))
  assert "no_run/config.json not found: is" in line and "a jaxmm workdir" in line


def test_evaluate_of_a_run_whose_relative_data_root_is_elsewhere_says_what_it_takes(
  trained, tmp_path
):
  workdir = _copy(trained[0], tmp_path)
  path = os.path.join(workdir, "config.json")
  with open(path) as f:
    config = json.load(f)
  config["data"]["root"] = "data/moved_away"  # relative to wherever train.py ran
  with open(path, "w") as f:
    json.dump(config, f)
  line = _one_line_error(_run("evaluate.py", "--workdir", workdir, "--out", tmp_path / "m.json"))
  assert "data.root='data/moved_away', a path relative to the folder train.py ran in" in line
  assert "--csv FILE" in line and "--config" not in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_evaluate_read_only_workdir_asks_for_out(trained, tmp_path):
  workdir = _copy(trained[0], tmp_path)
  os.chmod(workdir, 0o555)
  try:
    line = _one_line_error(_run("evaluate.py", "--workdir", workdir))
    assert "eval_metrics.json" in line and "pass --out" in line
    out = tmp_path / "m.json"
    assert _run("evaluate.py", "--workdir", workdir, "--out", out).returncode == 0
    assert out.exists()
  finally:
    os.chmod(workdir, 0o755)


def test_readers_create_nothing_in_the_workdir(trained, tmp_path):
  workdir, data = _copy(trained[0], tmp_path), trained[1]
  before = _tree(workdir)
  proc = _run("evaluate.py", "--workdir", workdir, "--out", tmp_path / "m.json")
  assert proc.returncode == 0, proc.stderr[-3000:]
  proc = _run(
    "predict.py", "--workdir", workdir, "--csv", data / "test.csv", "--out", tmp_path / "sub.csv"
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert _tree(workdir) == before
  shutil.rmtree(os.path.join(workdir, "checkpoints"))  # a run that stopped before its first one
  line = _one_line_error(
    _run(
      "predict.py", "--workdir", workdir, "--csv", data / "test.csv", "--out", tmp_path / "sub2.csv"
    )
  )
  assert "has no checkpoint" in line and "Train it" in line
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))


def test_train_mistyped_data_root_is_one_line(tmp_path):
  bad = tmp_path / "typo"
  proc = _run(
    "train.py",
    "--config",
    "configs/tiny.py",
    "--workdir",
    tmp_path / "run",
    f"--config.data.root={bad}",
  )
  line = _one_line_error(proc)
  assert f"data.root={str(bad)!r}" in line and f"--config.data.synthetic.root={bad}" in line
  assert not bad.exists()


def test_predict_missing_workdir_is_one_line_and_verbose_shows_the_traceback(tmp_path):
  args = (
    "--workdir",
    tmp_path / "nowhere",
    "--csv",
    tmp_path / "t.csv",
    "--out",
    tmp_path / "sub.csv",
  )
  line = _one_line_error(_run("predict.py", *args))
  assert "config.json not found" in line and "Train first" in line
  proc = _run("predict.py", *args, verbose=True)
  assert proc.returncode == 1 and "Traceback" in proc.stderr and "error: " in proc.stderr
  assert not (tmp_path / "nowhere").exists() and not (tmp_path / "sub.csv").exists()
