"""Metrics: hand-computed edge cases, then agreement with scikit-learn on random data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from jaxmm.data.comp5329 import LABEL_IDS
from jaxmm.data.labels import LabelSet
from jaxmm.train import metrics

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")

# Row 0 exact; row 1 nothing true, nothing predicted; row 2 nothing true; row 3 nothing
# predicted. Class 2 has no support and no predictions.
LABELS = np.array([[1, 0, 0], [0, 0, 0], [0, 0, 0], [1, 1, 0]])
PREDS = np.array([[1, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]])


def _sklearn_metrics(labels, preds):
  num_labels = labels.shape[1]
  out = {}
  for avg in ("samples", "micro", "macro", "weighted"):
    p, r, f, _ = skm.precision_recall_fscore_support(
      labels, preds, average=avg, labels=range(num_labels)
    )
    out[f"{avg}_precision"], out[f"{avg}_recall"], out[f"{avg}_f1"] = p, r, f
  out["exact_match"] = skm.accuracy_score(labels, preds)
  return out


def test_hand_computed_edge_cases():
  m = metrics.multilabel_metrics(LABELS, PREDS)
  assert set(m) == set(metrics.MULTILABEL_KEYS)
  # Rows score F1 1, 0 (empty vs empty counts 0, as sklearn), 0, 0.
  assert m["samples_f1"] == pytest.approx(0.25)
  assert m["samples_precision"] == pytest.approx(0.25)
  assert m["samples_recall"] == pytest.approx(0.25)
  # Pooled: tp 1, predicted 2, true 3.
  assert m["micro_precision"] == pytest.approx(0.5)
  assert m["micro_recall"] == pytest.approx(1 / 3)
  assert m["micro_f1"] == pytest.approx(0.4)
  # Per class F1 0.5, 0, 0: the unsupported class still counts in the macro mean.
  assert m["macro_f1"] == pytest.approx(1 / 6)
  assert m["macro_precision"] == pytest.approx(1 / 6)
  assert m["macro_recall"] == pytest.approx(1 / 6)
  # Supports 2, 1, 0.
  assert m["weighted_f1"] == pytest.approx(1 / 3)
  assert m["exact_match"] == pytest.approx(0.5)


def test_hand_case_matches_sklearn():
  mine = metrics.multilabel_metrics(LABELS, PREDS)
  ref = _sklearn_metrics(LABELS, PREDS)
  for key in metrics.MULTILABEL_KEYS:
    assert mine[key] == pytest.approx(ref[key], abs=1e-12), key


@pytest.mark.parametrize("seed", range(12))
def test_random_vs_sklearn(seed):
  rng = np.random.default_rng(seed)
  n, num_labels = rng.integers(1, 40), rng.integers(1, 19)
  # Sparse draws give empty rows and unsupported or never-predicted classes.
  labels = (rng.random((n, num_labels)) < rng.uniform(0.05, 0.5)).astype(int)
  preds = (rng.random((n, num_labels)) < rng.uniform(0.0, 0.5)).astype(int)
  mine = metrics.multilabel_metrics(labels, preds)
  ref = _sklearn_metrics(labels, preds)
  for key in metrics.MULTILABEL_KEYS:
    assert mine[key] == pytest.approx(ref[key], abs=1e-12), key


def test_no_support_anywhere_matches_sklearn():
  labels = np.zeros((3, 4), int)
  preds = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0]])
  mine = metrics.multilabel_metrics(labels, preds)
  ref = _sklearn_metrics(labels, preds)
  for key in metrics.MULTILABEL_KEYS:
    assert mine[key] == pytest.approx(ref[key], abs=1e-12), key


def test_bool_and_float_inputs_agree():
  a = metrics.multilabel_metrics(LABELS, PREDS)
  b = metrics.multilabel_metrics(LABELS.astype(bool), PREDS.astype(np.float32))
  assert a == b
  assert metrics.samples_f1(LABELS, PREDS) == a["samples_f1"]


def test_shape_mismatch_and_empty_raise():
  with pytest.raises(ValueError):
    metrics.multilabel_metrics(LABELS, PREDS[:, :2])
  with pytest.raises(ValueError):
    metrics.multilabel_metrics(np.zeros((0, 3)), np.zeros((0, 3)))


def test_per_class_metrics_and_table():
  rows = metrics.per_class_metrics(LABELS, PREDS)
  assert [r["label_id"] for r in rows] == [0, 1, 2]
  assert rows[0] == dict(
    label_id=0, name="0", support=2, precision=0.5, recall=0.5, f1=0.5, predicted=2
  )
  assert rows[1]["support"] == 1 and rows[1]["predicted"] == 0 and rows[1]["f1"] == 0.0
  assert rows[2]["support"] == 0 and rows[2]["f1"] == 0.0
  rng = np.random.default_rng(0)
  labels = rng.random((20, 18)) < 0.3
  preds = rng.random((20, 18)) < 0.3
  rows = metrics.per_class_metrics(labels, preds)
  assert [r["label_id"] for r in rows] == list(LABEL_IDS)
  p, r, f, s = skm.precision_recall_fscore_support(labels, preds, average=None)
  np.testing.assert_allclose([x["f1"] for x in rows], f)
  np.testing.assert_allclose([x["precision"] for x in rows], p)
  np.testing.assert_allclose([x["recall"] for x in rows], r)
  assert [x["support"] for x in rows] == list(s)
  table = metrics.format_per_class_table(rows).splitlines()
  assert len(table) == 18 + 2
  assert len({len(line) for line in table}) == 1  # fixed width
  assert table[2].split()[:2] == ["1", "person"] and table[-1].split()[:2] == ["19", "horse"]
  assert [r["name"] for r in rows][9:11] == ["traffic light", "fire hydrant"]


def test_per_class_rows_carry_the_label_names():
  named = LabelSet(names=("red car", "cat", "a|b"))
  rows = metrics.per_class_metrics(LABELS, PREDS, label_set=named)
  assert [(r["label_id"], r["name"]) for r in rows] == [(0, "red car"), (1, "cat"), (2, "a|b")]
  table = metrics.format_per_class_table(rows).splitlines()
  assert len({len(line) for line in table}) == 1 and "red car" in table[2]
  assert [metrics.label_text(r) for r in rows][:1] == ["0 red car"]
  with pytest.raises(ValueError, match="3 labels for 2 columns"):
    metrics.per_class_metrics(LABELS[:, :2], PREDS[:, :2], label_set=named)


@pytest.mark.parametrize("seed", range(6))
def test_binary_vs_sklearn(seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, 30)
  preds = rng.integers(0, 2, 30) if seed else np.zeros(30, int)  # seed 0: no positives predicted
  m = metrics.binary_metrics(labels, preds)
  assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds))
  assert m["precision"] == pytest.approx(skm.precision_score(labels, preds))
  assert m["recall"] == pytest.approx(skm.recall_score(labels, preds))
  assert m["f1"] == pytest.approx(skm.f1_score(labels, preds))
  assert m["confusion"] == skm.confusion_matrix(labels, preds, labels=[0, 1]).tolist()


def test_binary_hand_case():
  m = metrics.binary_metrics([1, 1, 0, 0, 1], [1, 0, 0, 1, 1])
  assert m["confusion"] == [[1, 1], [1, 2]]
  assert m["accuracy"] == pytest.approx(0.6)
  assert m["precision"] == pytest.approx(2 / 3)
  assert m["recall"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", range(6))
def test_average_precision_vs_sklearn(seed):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(2, 60))
  labels = rng.random((n, 4)) < 0.3
  labels[0] = True  # every column has a positive
  scores = np.round(rng.random((n, 4)), 1)  # many ties: each distinct score is one threshold
  for j in range(4):
    assert metrics.average_precision(labels[:, j], scores[:, j]) == pytest.approx(
      skm.average_precision_score(labels[:, j], scores[:, j]), abs=1e-12
    )
  want = np.mean([skm.average_precision_score(labels[:, j], scores[:, j]) for j in range(4)])
  assert metrics.mean_average_precision(labels, scores) == pytest.approx(want, abs=1e-12)


def test_mean_average_precision_skips_labels_without_positives():
  labels = np.array([[1, 0], [0, 0], [1, 0]])
  scores = np.array([[0.9, 0.8], [0.5, 0.5], [0.2, 0.1]])
  # column 0: ranked 1st and 3rd -> AP = (1/2)(1/1) + (1/2)(2/3); column 1 has no positive
  assert metrics.mean_average_precision(labels, scores) == pytest.approx(0.5 + 1 / 3)
  assert np.isnan(metrics.average_precision([0, 0], [0.3, 0.2]))
  # a perfect ranking scores 1 whatever the threshold: the scores never cross 0.5 here
  assert metrics.average_precision([1, 0, 1, 0], [0.3, 0.1, 0.4, 0.2]) == 1.0
