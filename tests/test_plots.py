"""Tests for the report pictures (jaxmm/plots.py); report.md and its plots: tests/test_report.py."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jaxmm import plots


def _picture(path) -> np.ndarray:
  with Image.open(path) as im:
    assert im.format == "PNG" and im.width >= 300 and im.height >= 200
    return np.asarray(im.convert("L"), np.float64)


def test_epoch_means_weight_steps_and_skip_non_finite():
  rows = [
    {"step": 3, "epoch": 0, "train_loss": 1.0, "nonfinite_steps": 0},
    {"step": 4, "epoch": 0, "train_loss": 2.0, "nonfinite_steps": 0},
    {"step": 7, "epoch": 1, "train_loss": 1.0, "nonfinite_steps": 1},  # 2 finite steps
    {"step": 8, "epoch": 1, "train_loss": None, "nonfinite_steps": 1},
  ]
  assert plots.epoch_means(rows, 4) == [(1, 1.25), (2, 1.0)]
  assert plots.epoch_means(rows, None) == []
  evals = [{"step": 2, "epoch": 0}, {"step": 4, "epoch": 1}, {"step": 6, "epoch": 1}]
  assert plots.steps_per_epoch(evals) == 4
  assert plots.steps_per_epoch(evals[:1]) is None  # a run cut inside its first epoch


def test_plot_confusion_matrix_checks_its_input(tmp_path):
  path = str(tmp_path / "cm.png")
  plots.plot_confusion_matrix([[5, 1], [2, 7]], path)
  assert _picture(path).std() > 5
  with pytest.raises(ValueError, match=r"must be \(2, 2\); got \(3,\)"):
    plots.plot_confusion_matrix([1, 2, 3], path)
