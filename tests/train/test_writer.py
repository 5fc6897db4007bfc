"""Tests for the metrics writer (jaxmm/train/writer.py)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from jaxmm.train.writer import METRICS_FILE, MetricWriter, read_metrics


def _path(workdir) -> str:
  return os.path.join(workdir, METRICS_FILE)


def test_rows_appended(tmp_path):
  w = MetricWriter(str(tmp_path), tensorboard=False)
  assert os.path.exists(_path(tmp_path)) and read_metrics(_path(tmp_path)) == []
  row = w.write(1, {"loss": 0.5}, split="train")
  assert row == {"step": 1, "split": "train", "loss": 0.5}
  w.write(2, {"loss": np.float32(0.25), "acc": np.float64(0.75), "n": 3, "flag": True})
  w.close()
  rows = read_metrics(_path(tmp_path))
  assert rows == [
    {"step": 1, "split": "train", "loss": 0.5},
    {"step": 2, "loss": 0.25, "acc": 0.75, "n": 3, "flag": True},
  ]
  assert type(rows[1]["n"]) is int and rows[1]["flag"] is True


def test_jax_and_numpy_scalars(tmp_path):
  jnp = pytest.importorskip("jax.numpy")
  w = MetricWriter(str(tmp_path), tensorboard=False)
  row = w.write(np.int64(3), {"loss": jnp.asarray(1.5), "x": np.asarray(2.0)})
  assert row == {"step": 3, "loss": 1.5, "x": 2.0} and type(row["step"]) is int
  assert read_metrics(_path(tmp_path)) == [row]


def test_non_finite_become_null(tmp_path):
  w = MetricWriter(str(tmp_path), tensorboard=True)
  row = w.write(1, {"nan": float("nan"), "inf": np.float32("inf"), "ninf": -math.inf, "ok": 1.0})
  w.close()
  assert row == {"step": 1, "nan": None, "inf": None, "ninf": None, "ok": 1.0}
  text = open(_path(tmp_path)).read()
  assert "NaN" not in text and "Infinity" not in text and "null" in text
  assert read_metrics(_path(tmp_path)) == [row]


def test_fresh_run_truncates(tmp_path):
  w = MetricWriter(str(tmp_path), tensorboard=False)
  w.write(1, {"a": 1.0})
  MetricWriter(str(tmp_path), tensorboard=False)  # resume_step=None: a fresh run
  assert read_metrics(_path(tmp_path)) == []


def test_resume_drops_later_rows(tmp_path):
  w = MetricWriter(str(tmp_path), tensorboard=False)
  for step in (1, 2, 3, 4, 5):
    w.write(step, {"loss": float(step)})
  w.write(3, {"val": 0.5}, split="val")  # an eval row of step 3 stays
  # Resumed from the checkpoint of step 3: rows of steps 4 and 5 are dropped, the rest kept.
  w2 = MetricWriter(str(tmp_path), resume_step=3, tensorboard=False)
  assert [r["step"] for r in read_metrics(_path(tmp_path))] == [1, 2, 3, 3]
  for step in (4, 5):
    w2.write(step, {"loss": float(step)})
  rows = read_metrics(_path(tmp_path))
  assert [r["step"] for r in rows] == [1, 2, 3, 3, 4, 5]
  assert rows[3] == {"step": 3, "split": "val", "val": 0.5}


def test_resume_without_file(tmp_path):
  w = MetricWriter(str(tmp_path), resume_step=10, tensorboard=False)
  w.write(11, {"a": 1.0})
  assert read_metrics(_path(tmp_path)) == [{"step": 11, "a": 1.0}]


def test_resume_step_zero_keeps_step_zero(tmp_path):
  w = MetricWriter(str(tmp_path), tensorboard=False)
  w.write(0, {"a": 0.0})
  w.write(1, {"a": 1.0})
  MetricWriter(str(tmp_path), resume_step=0, tensorboard=False)
  assert read_metrics(_path(tmp_path)) == [{"step": 0, "a": 0.0}]


def test_tensorboard_dir(tmp_path):
  w = MetricWriter(str(tmp_path))
  w.write(1, {"loss": 0.5, "bad": float("nan")}, split="train")
  w.close()
  tb = tmp_path / "tensorboard"
  assert tb.is_dir()
  events = [f for f in os.listdir(tb) if f.startswith("events.out.tfevents")]
  assert events and os.path.getsize(tb / events[0]) > 0
  assert not (tmp_path / "t2" / "tensorboard").exists()
  (tmp_path / "t2").mkdir()
  MetricWriter(str(tmp_path / "t2"), tensorboard=False).close()
  assert not (tmp_path / "t2" / "tensorboard").exists()


def test_read_metrics_skips_blank_lines(tmp_path):
  p = tmp_path / "m.jsonl"
  p.write_text('{"step": 1}\n\n{"step": 2}\n')
  assert read_metrics(str(p)) == [{"step": 1}, {"step": 2}]


def test_resume_keeps_the_rows_the_checkpoint_counted(tmp_path):
  # Rows written after the checkpoint (here an eval row of the same step) are dropped, which
  # a step filter cannot do; the rerun writes them again.
  w = MetricWriter(str(tmp_path), tensorboard=False)
  w.write(4, {"loss": 1.0})
  assert w.num_rows == 1  # what the loop stores in the checkpoint
  w.write(4, {"val": 0.5})
  w2 = MetricWriter(str(tmp_path), resume_step=4, keep_rows=1, tensorboard=False)
  assert w2.num_rows == 1 and read_metrics(_path(tmp_path)) == [{"step": 4, "loss": 1.0}]
  assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_cut_off_last_line_is_dropped(tmp_path):
  p = tmp_path / METRICS_FILE
  p.write_text('{"step": 1}\n{"step": 2, "lo')  # a kill in mid-write
  assert read_metrics(str(p)) == [{"step": 1}]
  w = MetricWriter(str(tmp_path), resume_step=1, tensorboard=False)
  w.write(2, {"a": 1.0})
  assert read_metrics(str(p)) == [{"step": 1}, {"step": 2, "a": 1.0}]


def test_garbled_line_inside_names_file_and_line(tmp_path):
  p = tmp_path / "m.jsonl"
  p.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
  with pytest.raises(ValueError, match=r"m\.jsonl:2: not a JSON object"):
    read_metrics(str(p))
