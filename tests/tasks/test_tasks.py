"""The task specs: matching end to end (train -> evaluate.py -> predict.py), config checks and
the expected-F1 rule of the multi-label task."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxmm import config as config_lib
from jaxmm import inference, tasks
from jaxmm.configs import s0_best, tiny
from jaxmm.data import matching
from jaxmm.recipes import train_and_evaluate
from jaxmm.tasks import base
from jaxmm.train import metrics
from jaxmm.train import thresholds as thresholds_lib
from jaxmm.train.writer import read_metrics
from tests.conftest import ROOT


def _matching_config(data_root, **train):
  c = s0_best.get_config()
  c.data.root = str(data_root)
  c.data.synthetic.update(root=c.data.root, n_train=48, n_test=16, image_size=16)
  c.data.image_size = 16
  c.data.num_threads = 1
  c.model.image.update(stem="small", num_filters=8)
  c.model.text.update(embed_dim=16, hidden_size=16)
  c.model.head.update(hidden=(16,), interaction_dim=16)
  c.train.update(
    batch_size=8, eval_batch_size=12, epochs=1, log_every=2, progress_bar=False, **train
  )
  return c


def _multilabel_text_config(data_root, **train):
  """configs/tiny.py's text tower alone: the cheapest multi-label run."""
  c = tiny.get_config()
  c.data.root = c.data.synthetic.root = str(data_root)
  c.model.mode = "text"
  c.train.update(epochs=1, report=False, **train)
  return c


def test_expected_f1_rule_is_saved_and_used_by_inference(tmp_path):
  config = _multilabel_text_config(tmp_path / "data", tune_thresholds="expected_f1")
  workdir = str(tmp_path / "run")
  train_and_evaluate(config, workdir)
  saved = json.load(open(os.path.join(workdir, "thresholds.json")))
  assert saved["mode"] == saved["thresholds"] == "expected_f1"
  with np.load(os.path.join(workdir, "val_predictions.npz")) as z:
    probs, labels = z["probs"], z["labels"]
  assert saved["val_samples_f1"] == pytest.approx(
    metrics.samples_f1(labels, thresholds_lib.expected_f1_predictions(probs))
  )
  restored = inference.restore(workdir)
  assert restored.thresholds == "expected_f1"
  assert inference.restore(workdir, thresholds="0.4").thresholds == 0.4  # the flag overrides
  task = tasks.make(config)
  val = task.load_data(workdir).val
  out = str(tmp_path / "pred.csv")
  val_probs = restored.predict(val)
  task.write_predictions(out, val, val_probs, restored.thresholds)
  want = thresholds_lib.expected_f1_predictions(val_probs)
  with open(out, newline="") as f:
    rows = list(csv.reader(f))[1:]
  assert [len(r[1].split()) for r in rows] == want.sum(axis=1).tolist()


def _run(args):
  proc = subprocess.run(
    [sys.executable, *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_matching_train_evaluate_predict(tmp_path, loss):
  config = _matching_config(
    tmp_path / "data", loss=loss, contrastive_weight=1.0 if loss == "ce" else 0.0
  )
  workdir = tmp_path / "run"
  result = train_and_evaluate(config, str(workdir))
  rows = read_metrics(str(workdir / "metrics.jsonl"))
  evals = [r for r in rows if "val_accuracy" in r]
  assert len(evals) == 1 and evals[0]["step"] == result["step"] == 6  # 48 pairs / batch 8
  ev = evals[0]
  assert ev["val_tn"] + ev["val_fp"] + ev["val_fn"] + ev["val_tp"] == 16
  assert ev["val_accuracy"] == pytest.approx((ev["val_tn"] + ev["val_tp"]) / 16)
  thr = json.loads((workdir / "thresholds.json").read_text())
  assert thr["mode"] == "global" and 0 < thr["thresholds"] < 1
  assert thr["val_accuracy"] >= thr["val_accuracy_at_default"]
  if loss == "bce":  # the scripts do not depend on the head: exercised once, with CE
    return

  # evaluate.py on the val CSV (images found at <csv dir>/val_images) reproduces the tuned accuracy.
  val_csv = str(tmp_path / "data" / "val.csv")
  out = tmp_path / "eval.json"
  proc = _run(["evaluate.py", "--workdir", str(workdir), "--csv", val_csv, "--out", str(out)])
  metrics = json.loads(out.read_text())
  assert metrics["n_examples"] == 16 and "confusion" in proc.stdout
  assert metrics["accuracy"] == pytest.approx(thr["val_accuracy"])

  # predict.py writes id,label for every pair, in input order, also for an unlabelled CSV.
  records = matching.read_matching(val_csv)
  unlabelled = tmp_path / "data" / "val_nolabel.csv"
  matching.write_matching(
    unlabelled, [matching.MatchRecord(r.id, r.caption, r.image_id, None) for r in records]
  )
  sub = tmp_path / "pred.csv"
  _run(
    [
      "predict.py",
      "--workdir",
      str(workdir),
      "--csv",
      str(unlabelled),
      "--images",
      str(tmp_path / "data" / "val_images"),
      "--out",
      str(sub),
    ]
  )
  with open(sub, newline="") as f:
    got = list(csv.reader(f))
  assert got[0] == ["id", "label"] and [r[0] for r in got[1:]] == [r.id for r in records]
  preds = np.array([int(r[1]) for r in got[1:]])
  labels = np.array([r.label for r in records])
  assert set(preds) <= {0, 1}
  assert (preds == labels).mean() == pytest.approx(thr["val_accuracy"])


def test_matching_config_errors(tmp_path):
  def check(config):
    tasks.make(config).check_config()

  with pytest.raises(ValueError, match="not a matching loss"):
    check(_matching_config(tmp_path, loss="focal"))
  for mode in ("per_class", "expected_f1"):
    with pytest.raises(ValueError, match="one threshold"):
      check(_matching_config(tmp_path, loss="ce", tune_thresholds=mode))
  with pytest.raises(ValueError, match=r"tune_thresholds='globl' is not one of"):
    check(_multilabel_text_config(tmp_path, tune_thresholds="globl"))
  with pytest.raises(ValueError, match="not a multi-label loss"):
    check(_multilabel_text_config(tmp_path, loss="ce"))
  with pytest.raises(ValueError, match=r"train.label_reduction='total'"):
    check(_multilabel_text_config(tmp_path, label_reduction="total"))
  with pytest.raises(ValueError, match="select_metric"):
    check(_matching_config(tmp_path, loss="ce", select_metric="val_samples_f1"))
  c = _matching_config(tmp_path, loss="ce", contrastive_weight=1.0)
  c.model.head.interaction_dim = 0
  with pytest.raises(ValueError, match="interaction_dim"):
    check(c)
  c = _matching_config(tmp_path)
  c.task = "segmentation"
  with pytest.raises(ValueError, match="'segmentation' is not a task"):
    tasks.make(c)


@pytest.mark.parametrize("loss", ["bce", "focal"])
def test_label_reduction_sum_is_the_mean_times_the_label_count(tmp_path, loss):
  rng = np.random.default_rng(0)
  batch = {"labels": (rng.random((5, 18)) < 0.2).astype(np.float32)}
  logits = rng.normal(size=(5, 18)).astype(np.float32)
  per_example = {}
  for reduction in ("mean", "sum"):
    task = tasks.make(_multilabel_text_config(tmp_path, loss=loss, label_reduction=reduction))
    task.check_config()
    per_example[reduction] = np.asarray(task.loss(logits, batch))
  assert per_example["mean"].shape == (5,)
  np.testing.assert_allclose(per_example["sum"], 18 * per_example["mean"], rtol=1e-6)


def test_prior_output_bias_starts_every_head_at_the_label_log_odds(tmp_path):
  from flax import nnx

  from jaxmm.data.pipeline import PreparedSplit
  from jaxmm.models import fusion
  from jaxmm.train import state as state_lib

  c = _multilabel_text_config(tmp_path / "data")
  c.model.head.output_bias = "prior"
  task = tasks.make(c)
  config_lib.ensure_synthetic(c.data, task=task.layout)
  vocab_size = len(task.load_data(str(tmp_path)).encoder.vocab)
  task.check_config()
  labels = np.zeros((10, len(task.labels)), np.float32)
  labels[:5, 0] = 1  # label 0: half the rows; label 1: every row; the rest: none
  labels[:, 1] = 1
  split = PreparedSplit(
    ids=[str(i) for i in range(10)], image_cache=None, image_index=None, arrays={"labels": labels}
  )
  bias = task.output_bias(split)
  assert bias[0] == pytest.approx(0.0)
  assert bias[1] == pytest.approx(np.log(10 / 11 / (1 / 11)))  # clipped: 1 in n + 1 apart
  assert bias[2] == pytest.approx(-bias[1])
  state = state_lib.build(c, task, vocab_size=vocab_size, output_bias=bias)
  model = nnx.merge(state.model_def, state.model)
  heads = [m for _, m in nnx.iter_modules(model) if isinstance(m, fusion.MLPHead)]
  assert heads and all(np.allclose(h.out.bias[...], bias) for h in heads)
  # the default keeps the layer's zeros; a task without a label prior refuses 'prior'
  c.model.head.output_bias = "zeros"
  assert tasks.make(c).output_bias(None) is None
  m = _matching_config(tmp_path, loss="ce")
  m.model.head.output_bias = "prior"
  with pytest.raises(ValueError, match="output_bias='prior' is for multi-label"):
    tasks.make(m).check_config()
  m.model.head.output_bias = "log_odds"
  with pytest.raises(ValueError, match="is not 'zeros' or 'prior'"):
    tasks.make(m).check_config()


@pytest.mark.parametrize(
  "key,value,bound",
  [
    ("train.batch_size", 0, ">= 1"),
    ("train.eval_batch_size", -4, ">= 1"),
    ("train.epochs", 0, "> 0"),
    ("train.max_steps", 0, ">= 1"),
    ("optim.lr", -1e-3, "> 0"),
    ("optim.warmup_epochs", -1.0, ">= 0"),
    ("data.image_size", 0, ">= 1"),
    ("data.max_len", -8, ">= 1"),
  ],
)
def test_a_value_out_of_its_range_names_the_key(key, value, bound):
  from configs import tiny

  config = tiny.get_config()
  tasks.make(config).check_config()
  section, name = key.split(".")
  config[section][name] = value
  with pytest.raises(ValueError, match=rf"^{key}={value!r}: it must be {bound}; set --config"):
    tasks.make(config).check_config()


def test_id_predictions_are_csv_or_json_lines_by_the_file_name(tmp_path):
  args = (["ImageID", "Labels"], ["a.jpg", "c.jpg"], ["1 3", "2"], {"p:1": [0.5, 0.1234567]})
  base.write_id_predictions(str(tmp_path / "p.csv"), *args, skipped={1: "b.jpg"})
  assert (tmp_path / "p.csv").read_text().splitlines() == [
    "ImageID,Labels,p:1",
    "a.jpg,1 3,0.5",
    "b.jpg,,",
    "c.jpg,2,0.123457",
  ]
  base.write_id_predictions(str(tmp_path / "p.jsonl"), *args, skipped={1: "b.jpg"})
  lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
  assert lines == [
    {"ImageID": "a.jpg", "Labels": "1 3", "p:1": 0.5},
    {"ImageID": "b.jpg", "Labels": "", "p:1": ""},
    {"ImageID": "c.jpg", "Labels": "2", "p:1": 0.123457},
  ]
