"""One tiny real run through every stage: train -> checkpoint -> evaluate -> predict -> resume."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

from jaxmm.configs import tiny
from jaxmm.data import comp5329
from jaxmm.data import labels as labels_lib
from jaxmm.recipes import train_and_evaluate
from jaxmm.train.writer import read_metrics
from tests.conftest import ROOT


def _run(args, cwd=ROOT):
  proc = subprocess.run(
    [sys.executable, *args],
    cwd=cwd,
    capture_output=True,
    text=True,
    timeout=600,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def test_train_evaluate_predict_resume(tmp_path):
  config = tiny.get_config()
  config.data.root = config.data.synthetic.root = str(tmp_path / "data")
  config.train.epochs = 1
  workdir = str(tmp_path / "run")

  result = train_and_evaluate(config, workdir)
  for name in (
    "config.json",
    "vocab.json",
    "metrics.jsonl",
    "thresholds.json",
    "tensorboard",
    "checkpoints/latest",
    "checkpoints/best",
    "val_predictions.npz",
    "report.md",
    "plots/loss.png",
    "plots/per_class_f1.png",
    "plots/threshold_sweep.png",
  ):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert labels_lib.load(os.path.join(workdir, "labels.json")) == labels_lib.COMP5329
  # A workdir from before labels.json existed is a COMP5329 run: evaluate.py and predict.py below
  # read it so (18 outputs, label ids), and write nothing into it.
  os.remove(os.path.join(workdir, "labels.json"))
  rows = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  evals = [r for r in rows if "val_samples_f1" in r]
  assert len(evals) == 1 and evals[0]["step"] == result["step"] == 4  # 64 train / batch 16
  for key in (
    "val_samples_f1",
    "val_micro_f1",
    "val_macro_f1",
    "val_weighted_f1",
    "val_samples_precision",
    "val_samples_recall",
    "val_loss",
  ):
    assert 0.0 <= evals[0][key] <= 10.0, key
  assert all("train_loss" in r for r in rows if "val_samples_f1" not in r)

  # evaluate.py restores the best checkpoint and sees all 16 val examples (batch 12: one padded).
  out = tmp_path / "eval.json"
  proc = _run(
    [
      "evaluate.py",
      "--workdir",
      workdir,
      "--out",
      str(out),
      "--report_dir",
      str(tmp_path / "eval_report"),
    ]
  )
  metrics = json.loads(out.read_text())
  assert metrics["n_examples"] == 16
  assert (
    abs(
      metrics["samples_f1"]
      - json.load(open(os.path.join(workdir, "thresholds.json")))["val_samples_f1"]
    )
    < 1e-6
  )
  assert "label" in proc.stdout and len(metrics["per_class"]) == comp5329.NUM_LABELS
  eval_report = (tmp_path / "eval_report" / "report.md").read_text()
  assert f"| samples F1 | {metrics['samples_f1']:.4f} |" in eval_report
  assert (tmp_path / "eval_report" / "plots" / "per_class_f1.png").is_file()

  # --rows evaluates a slice of any labelled CSV: the held-out-records protocol of COMP5329 dev.
  train_csv = os.path.join(config.data.root, "train.csv")
  out_rows = tmp_path / "eval_rows.json"
  _run(
    [
      "evaluate.py",
      "--workdir",
      workdir,
      "--csv",
      train_csv,
      "--rows",
      "70:",
      "--out",
      str(out_rows),
    ]
  )
  rows_metrics = json.loads(out_rows.read_text())
  assert rows_metrics["n_examples"] == 10 and rows_metrics["source"].endswith("rows 70:")

  # predict.py: one row per input row, in input order, >= 1 valid label each.
  test_csv = os.path.join(config.data.root, "test.csv")
  sub = tmp_path / "submission.csv"
  _run(["predict.py", "--workdir", workdir, "--csv", test_csv, "--out", str(sub)])
  with open(sub, newline="") as f:
    got = list(csv.reader(f))
  assert got[0] == ["ImageID", "Labels"]
  assert [r[0] for r in got[1:]] == [r.image_id for r in comp5329.read_comp5329(test_csv)]
  for _, labels in got[1:]:
    ids = [int(t) for t in labels.split()]
    assert ids and all(i in comp5329.LABEL_IDS for i in ids)

  assert not os.path.exists(os.path.join(workdir, "labels.json"))

  # The same workdir with more epochs resumes from step 4 instead of starting over.
  config.train.epochs = 2
  result2 = train_and_evaluate(config, workdir)
  assert result2["step"] == 8
  rows2 = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  assert rows2[: len(rows)] == rows  # history kept, nothing re-done
  assert [r["step"] for r in rows2 if "val_samples_f1" in r] == [4, 8]


def test_train_cli_smoke_with_override(tmp_path):
  """train.py as a user runs it, with --config overrides and a max_steps cap."""
  workdir = tmp_path / "cli"
  proc = _run(
    [
      "train.py",
      "--config",
      "configs/tiny.py",
      "--workdir",
      str(workdir),
      f"--config.data.root={tmp_path / 'data'}",
      f"--config.data.synthetic.root={tmp_path / 'data'}",
      "--config.train.max_steps=2",
      "--config.optim.lr=3e-3",
    ]
  )
  assert "best val_samples_f1" in proc.stdout
  assert json.load(open(workdir / "config.json"))["optim"]["lr"] == 3e-3
  rows = read_metrics(str(workdir / "metrics.jsonl"))
  assert max(r["step"] for r in rows) == 2


def test_train_cli_rejects_unknown_key(tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      "train.py",
      "--config",
      "configs/tiny.py",
      "--workdir",
      str(tmp_path / "x"),
      "--config.optim.lrr=1e-3",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode != 0
  assert "optim.lrr" in proc.stderr and "optim.lr" in proc.stderr
