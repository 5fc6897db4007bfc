"""Tests for the reports (jaxmm/report.py): files written, numbers in report.md, sane pictures."""

from __future__ import annotations

import json
import logging
import os
import re

import numpy as np
from PIL import Image

from configs import tiny
from jaxmm import report
from jaxmm import workdir as workdir_lib
from jaxmm.data.comp5329 import LABEL_IDS, LABEL_NAMES, NUM_LABELS
from jaxmm.train.writer import MetricWriter

SPE = 4  # steps per epoch of the fake run


def _workdir(tmp_path, *, predictions: bool = True) -> str:
  """What a 3-epoch run leaves: rows every 3 steps plus the epoch-end flush, evals at epoch ends."""
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  workdir_lib.write_config(tiny.get_config(), workdir)
  w = MetricWriter(workdir, tensorboard=False)
  val_f1 = [0.5, 0.8, 0.7]  # best at epoch 2
  for epoch in range(3):
    for step in (epoch * SPE + 3, epoch * SPE + 4):
      w.write(
        step,
        {
          "train_loss": 1.0 / step,
          "grad_norm": 1.0,
          "lr": 1e-3 / step,
          "nonfinite_steps": int(step == 7),
        },
        epoch=epoch,
        elapsed_s=float(step),
      )
    w.write(
      (epoch + 1) * SPE,
      {
        "val_samples_f1": val_f1[epoch],
        "val_micro_f1": 0.6,
        "val_macro_f1": 0.4,
        "val_loss": 0.3 + epoch * 0.01,
      },
      epoch=epoch + 1,
      elapsed_s=1.0,
    )
  with open(os.path.join(workdir, "thresholds.json"), "w") as f:
    json.dump(
      {
        "mode": "global",
        "thresholds": 0.3,
        "val_samples_f1": 0.85,
        "val_samples_f1_at_default": 0.8,
      },
      f,
    )
  if predictions:
    rng = np.random.default_rng(0)
    labels = (rng.random((40, NUM_LABELS)) < 0.2).astype(np.float32)
    labels[:, 0] = 1.0  # 'person' in every row
    labels[:, 5] = 0.0  # 'bus' in none
    probs = np.clip(0.5 * labels + 0.6 * rng.random(labels.shape), 0, 1)
    report.save_predictions(
      os.path.join(workdir, report.PREDICTIONS_FILE), [f"{i}.jpg" for i in range(40)], probs, labels
    )
  return workdir


def _picture(path) -> np.ndarray:
  with Image.open(path) as im:
    assert im.format == "PNG" and im.width >= 300 and im.height >= 200
    return np.asarray(im.convert("L"), np.float64)


def test_report_of_a_workdir(tmp_path):
  workdir = _workdir(tmp_path)
  path = report.write_report(workdir)
  assert path == os.path.join(workdir, "report.md")
  text = open(path).read()
  plots = sorted(os.listdir(os.path.join(workdir, "plots")))
  assert plots == [
    "loss.png",
    "lr.png",
    "per_class_f1.png",
    "threshold_sweep.png",
    "val_scores.png",
  ]
  for name in plots:
    assert _picture(os.path.join(workdir, "plots", name)).std() > 5  # drawn, not blank
  # Every embedded picture exists; every picture is embedded.
  assert sorted(re.findall(r"\]\(plots/([\w.]+)\)", text)) == plots

  assert (
    "| best val samples F1 (picks the checkpoint) | **0.8000** (epoch 2, step 8; threshold 0.5) |"
  ) in text
  assert "| tuned threshold (global) | 0.30 |" in text
  assert "**0.8500** (at 0.5: 0.8000)" in text
  assert "| trained | 12 steps (3 epochs)" in text and "| non-finite steps (skipped) | 1 |" in text
  assert "| `model.image.name` | resnet18 |" in text and "| `optim.lr` | 0.001 |" in text
  # The per-class table: one row per label, supports counted from the saved labels.
  with np.load(os.path.join(workdir, report.PREDICTIONS_FILE)) as z:
    support = z["labels"].sum(axis=0).astype(int)
  table = re.findall(r"^\| (\d+) \| ([a-z ]+) \| (\d+) \| (\d+) \|", text, re.M)
  assert [(int(i), n, int(s)) for i, n, s, _ in table] == [
    (i, LABEL_NAMES[i], int(n)) for i, n in zip(LABEL_IDS, support)
  ]


def test_report_without_predictions_still_has_curves(tmp_path):
  workdir = _workdir(tmp_path, predictions=False)
  os.remove(os.path.join(workdir, "thresholds.json"))
  out = str(tmp_path / "elsewhere")
  text = open(report.write_report(workdir, out)).read()
  assert sorted(os.listdir(os.path.join(out, "plots"))) == ["loss.png", "lr.png", "val_scores.png"]
  assert "Per-class" not in text and "tuned threshold" not in text
  assert not os.path.exists(os.path.join(workdir, "report.md"))  # written only where asked


def test_matching_predictions_get_a_confusion_matrix(tmp_path):
  workdir = _workdir(tmp_path, predictions=False)
  labels = np.array([1, 1, 1, 0, 0, 0, 0, 1], np.float32)
  probs = np.array([0.9, 0.8, 0.2, 0.1, 0.7, 0.3, 0.2, 0.6], np.float32)  # tp 3, fn 1, fp 1, tn 3
  text = open(
    report.write_report(workdir, probs=probs, labels=labels, thresholds=0.5, source="matching val")
  ).read()
  assert (
    "| accuracy | 0.7500 |" in text and "![Confusion matrix](plots/confusion_matrix.png)" in text
  )
  img = _picture(os.path.join(workdir, "plots", "confusion_matrix.png"))
  assert img.std() > 5


def test_a_failing_report_only_warns(tmp_path, caplog):
  workdir = _workdir(tmp_path)
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write("garbage\n{}\n")
  with caplog.at_level(logging.WARNING, logger="jaxmm"):
    assert report.try_write_report(workdir) is None
  assert "could not write the report" in caplog.text and "metrics.jsonl" in caplog.text


def test_autoencoder_report_picks_the_lowest_mae_and_names_no_threshold(tmp_path):
  from configs import pretrain_autoencoder

  workdir = str(tmp_path / "ae")
  os.makedirs(workdir)
  workdir_lib.write_config(pretrain_autoencoder.get_config(), workdir)
  w = MetricWriter(workdir, tensorboard=False)
  for epoch, mae in enumerate([0.30, 0.12, 0.20]):  # best (lowest) at epoch 2
    w.write((epoch + 1) * SPE, {"val_mae": mae, "val_loss": mae}, epoch=epoch + 1, elapsed_s=1.0)
  w.close()
  text = open(report.write_report(workdir)).read()
  assert "| best val mae (picks the checkpoint) | **0.1200** (epoch 2, step 8) |" in text


def test_report_names_the_expected_f1_rule_and_plots_its_score(tmp_path):
  workdir = _workdir(tmp_path)
  with open(os.path.join(workdir, "thresholds.json"), "w") as f:
    json.dump(
      {
        "mode": "expected_f1",
        "thresholds": "expected_f1",
        "val_samples_f1": 0.86,
        "val_samples_f1_at_default": 0.8,
      },
      f,
    )
  text = open(report.write_report(workdir)).read()
  assert (
    "| tuned threshold (expected_f1) | none: each row's label set of highest expected F1 |" in text
  )
  assert "**0.8600** (at 0.5: 0.8000)" in text
  assert _picture(os.path.join(workdir, "plots", "threshold_sweep.png")).std() > 5
