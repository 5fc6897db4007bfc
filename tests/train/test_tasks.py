"""The matching task end to end (train -> evaluate.py -> predict.py) and S1's two-stage recipe."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from configs import s0_best, tiny
from jaxmm import inference
from jaxmm.data import matching
from jaxmm.train import checkpoint as ckpt_lib
from jaxmm.train import loop, metrics, tasks
from jaxmm.train import thresholds as thresholds_lib
from jaxmm.train.writer import read_metrics
from tests.conftest import ROOT


def _matching_config(data_root, **train):
  c = s0_best.get_config()
  c.data.root = str(data_root)
  c.data.synthetic.update(generate=True, n_train=48, n_test=16, image_size=16)
  c.data.image_size = 16
  c.data.num_threads = 1
  c.model.image.update(stem="small", num_filters=8)
  c.model.text.update(embed_dim=16, hidden_size=16)
  c.model.head.update(hidden=(16,), interaction_dim=16)
  c.train.update(batch_size=8, eval_batch_size=12, epochs=1, log_every=2, progress_bar=False,
                 **train)
  return c


def _multilabel_text_config(data_root, **train):
  """configs/tiny.py's text tower alone: the cheapest multi-label run."""
  c = tiny.get_config()
  c.data.root = str(data_root)
  c.model.mode = "text"
  c.train.update(epochs=1, **train)
  return c


def test_expected_f1_rule_is_saved_and_used_by_inference(tmp_path):
  config = _multilabel_text_config(tmp_path / "data", tune_thresholds="expected_f1")
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(config, workdir)
  saved = json.load(open(os.path.join(workdir, "thresholds.json")))
  assert saved["mode"] == saved["thresholds"] == "expected_f1"
  with np.load(os.path.join(workdir, "val_predictions.npz")) as z:
    probs, labels = z["probs"], z["labels"]
  assert saved["val_samples_f1"] == pytest.approx(
      metrics.samples_f1(labels, thresholds_lib.expected_f1_predictions(probs)))
  restored = inference.restore(workdir)
  assert restored.thresholds == "expected_f1"
  assert inference.restore(workdir, thresholds="0.4").thresholds == 0.4  # the flag overrides
  spec = loop.task_spec(config)
  val = spec.load_data(config, workdir).val
  out = str(tmp_path / "pred.csv")
  val_probs = restored.predict(val)
  spec.write_predictions(out, val, val_probs, restored.thresholds)
  want = thresholds_lib.expected_f1_predictions(val_probs)
  with open(out, newline="") as f:
    rows = list(csv.reader(f))[1:]
  assert [len(r[1].split()) for r in rows] == want.sum(axis=1).tolist()


def _run(args):
  proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=600, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_matching_train_evaluate_predict(tmp_path, loss):
  config = _matching_config(tmp_path / "data", loss=loss,
                            contrastive_weight=1.0 if loss == "ce" else 0.0)
  workdir = tmp_path / "run"
  result = loop.train_and_evaluate(config, str(workdir))
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
  matching.write_matching(unlabelled, [matching.MatchRecord(r.id, r.caption, r.image_id, None)
                                       for r in records])
  sub = tmp_path / "pred.csv"
  _run(["predict.py", "--workdir", str(workdir), "--csv", str(unlabelled), "--images",
        str(tmp_path / "data" / "val_images"), "--out", str(sub)])
  with open(sub, newline="") as f:
    got = list(csv.reader(f))
  assert got[0] == ["id", "label"] and [r[0] for r in got[1:]] == [r.id for r in records]
  preds = np.array([int(r[1]) for r in got[1:]])
  labels = np.array([r.label for r in records])
  assert set(preds) <= {0, 1}
  assert (preds == labels).mean() == pytest.approx(thr["val_accuracy"])


def test_matching_config_errors(tmp_path):
  spec = tasks.task_by_name("matching")
  with pytest.raises(ValueError, match="not a matching loss"):
    spec.check_config(_matching_config(tmp_path, loss="focal"))
  for mode in ("per_class", "expected_f1"):
    with pytest.raises(ValueError, match="one threshold"):
      spec.check_config(_matching_config(tmp_path, loss="ce", tune_thresholds=mode))
  with pytest.raises(ValueError, match=r"tune_thresholds='globl' is not one of"):
    tasks.task_by_name("multilabel").check_config(
        _multilabel_text_config(tmp_path, tune_thresholds="globl"))
  with pytest.raises(ValueError, match="select_metric"):
    spec.check_config(_matching_config(tmp_path, loss="ce", select_metric="val_samples_f1"))
  c = _matching_config(tmp_path, loss="ce", contrastive_weight=1.0)
  c.model.head.interaction_dim = 0
  with pytest.raises(ValueError, match="interaction_dim"):
    spec.check_config(c)
  with pytest.raises(ValueError, match="unknown task"):
    tasks.task_by_name("segmentation")


def test_two_stage_assembles_stage_one_towers_and_stage_two_head(tmp_path):
  config = tiny.get_config()
  config.data.root = str(tmp_path / "data")
  config.train.update(epochs=1, two_stage=True, head_epochs=2)
  workdir = str(tmp_path / "run")
  result = loop.train_and_evaluate(config, workdir)
  for sub in ("stage1_image", "stage1_text", "stage2_head"):
    assert os.path.exists(os.path.join(workdir, sub, "checkpoints", "best"))
  assert os.path.exists(os.path.join(workdir, "thresholds.json"))
  assert result["best_metric"] is not None

  def best_params(run_dir, cfg, model_fn=None):
    graphdefs, state = loop.build_state(cfg, vocab_size=len(json.load(open(
        os.path.join(workdir, "vocab.json")))["tokens"]), steps_per_epoch=1, total_steps=1,
        model_fn=model_fn)
    ckpt = ckpt_lib.Checkpointer(run_dir)
    state, _ = ckpt.restore(state, which=ckpt_lib.BEST)
    ckpt.close()
    return nnx.merge(graphdefs[0], state[0])

  from jaxmm.train import two_stage
  fused = best_params(workdir, config)
  for mode in ("image", "text"):
    alone = best_params(os.path.join(workdir, f"stage1_{mode}"),
                        two_stage._sub_config(config, **{"model.mode": mode}))
    a, b = nnx.state(getattr(fused, mode)), nnx.state(getattr(alone, mode))
    for x, y in zip(jax_leaves(a), jax_leaves(b)):
      np.testing.assert_array_equal(x, y)
  # The head is stage 2's, not the fused model's fresh one nor either stage-1 head.
  in_features = fused.image.out_features + fused.text.out_features
  head = best_params(os.path.join(workdir, "stage2_head"), config,
                     lambda c, n, v, r: two_stage.FeatureHead(in_features, c.model.head, n, rngs=r))
  for x, y in zip(jax_leaves(nnx.state(fused.head)), jax_leaves(nnx.state(head.head))):
    np.testing.assert_array_equal(x, y)
  # evaluate.py works on the assembled workdir like on any other.
  _run(["evaluate.py", "--workdir", workdir, "--out", str(tmp_path / "e.json")])


def jax_leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(state)]


def test_late_fusion_two_stage_refuses_the_matching_task(tmp_path):
  config = _matching_config(tmp_path / "data")
  config.model.name = "late_fusion"
  config.model.head.interaction_dim = 0
  config.train.update(two_stage=True, contrastive_weight=0.0)
  with pytest.raises(ValueError, match="needs task='multilabel'"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))


def test_fit_logit_mixing_recovers_known_weights():
  rng = np.random.default_rng(0)
  n = 20000
  logits = rng.normal(size=(n, 2, 3)) * 2
  true_mix = np.array([[2.0, 0.0, 1.0], [0.5, 1.5, 0.0]])
  true_bias = np.array([-1.0, 0.5, 0.0])
  p = 1 / (1 + np.exp(-((logits * true_mix).sum(1) + true_bias)))
  labels = (rng.random(p.shape) < p).astype(np.float32)
  from jaxmm.train import two_stage
  mix, bias = two_stage.fit_logit_mixing(logits, labels)
  np.testing.assert_allclose(mix, true_mix, atol=0.1)  # a useless branch gets weight ~0
  np.testing.assert_allclose(bias, true_bias, atol=0.1)


def test_late_fusion_two_stage_keeps_both_branches_and_fits_the_mixing_on_val(tmp_path):
  from jaxmm.models import fusion
  from jaxmm.train import two_stage
  config = tiny.get_config()
  config.data.root = str(tmp_path / "data")
  config.model.name = "late_fusion"
  config.train.update(epochs=1, two_stage=True)
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(config, workdir)
  assert not os.path.exists(os.path.join(workdir, "stage2_head"))  # no head training stage

  vocab_size = len(json.load(open(os.path.join(workdir, "vocab.json")))["tokens"])
  fused = two_stage._restore_model(config, workdir, vocab_size)
  assert isinstance(fused, fusion.LateFusionClassifier)
  for mode in ("image", "text"):  # each branch is its stage-1 model, head included
    alone = two_stage._restore_model(two_stage._sub_config(config, **{"model.mode": mode}),
                                     os.path.join(workdir, f"stage1_{mode}"), vocab_size)
    a, b = jax_leaves(nnx.state(getattr(fused, f"{mode}_only"))), jax_leaves(nnx.state(alone))
    assert len(a) == len(b)
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)
  assert fused.image is fused.image_only.image and fused.text is fused.text_only.text

  # The mixing is the logistic fit on the val split's branch logits, and the logits obey it.
  data = loop.task_spec(config).prepare(config.data, workdir, with_images=True)
  branch = two_stage.extract_features(fused, data.val, batch_size=12, num_threads=1,
                                      method="branch_logits")
  mix, bias = two_stage.fit_logit_mixing(branch, data.val.arrays["labels"])
  np.testing.assert_allclose(np.asarray(fused.mix[...]), mix, atol=1e-5)
  np.testing.assert_allclose(np.asarray(fused.bias[...]), bias, atol=1e-5)
  logits = two_stage.extract_features(fused, data.val, batch_size=12, num_threads=1,
                                      method="__call__")
  np.testing.assert_allclose(logits, (branch * mix).sum(1) + bias, rtol=1e-4, atol=1e-4)
  _run(["evaluate.py", "--workdir", workdir, "--out", str(tmp_path / "e.json")])


def test_fit_logit_mixing_stays_finite_when_a_branch_separates_a_class():
  from jaxmm.train import two_stage
  rng = np.random.default_rng(0)
  labels = (rng.random((200, 2)) < 0.3).astype(np.float32)
  labels[:, 1] = 0  # a class absent from val
  logits = np.where(labels > 0, 12.0, -12.0)[:, None, :] + rng.normal(size=(200, 1, 2))
  mix, bias = two_stage.fit_logit_mixing(logits, labels)
  assert np.isfinite(mix).all() and np.isfinite(bias).all()
  assert mix[0, 0] > 0 and np.abs(mix).max() < 10 and np.abs(bias).max() < 20
  z = (logits * mix).sum(1) + bias
  assert ((z[:, 0] > 0) == (labels[:, 0] > 0)).all() and (z[:, 1] < 0).all()


def test_train_py_stage_flag_trains_the_two_towers_in_parallel_processes(tmp_path):
  """--stage=text and --stage=image at once on one workdir; the plain run then only does stage 2."""
  from jaxmm import config as config_lib
  config = tiny.get_config()
  config.data.root = str(tmp_path / "data")
  config_lib.ensure_synthetic(config.data)  # made once, before two processes read it
  workdir = str(tmp_path / "run")
  args = ["train.py", "--config=configs/tiny.py", f"--workdir={workdir}",
          f"--config.data.root={config.data.root}", "--config.train.epochs=1",
          "--config.train.two_stage=True", "--config.model.name=late_fusion"]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  procs = [subprocess.Popen([sys.executable, *args, f"--stage={m}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for m in ("text", "image")]
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
  stage_metrics = {m: os.path.join(workdir, f"stage1_{m}", "metrics.jsonl")
                   for m in ("text", "image")}
  before = {m: open(path).read() for m, path in stage_metrics.items()}
  assert all(before.values())
  assert not os.path.exists(os.path.join(workdir, "thresholds.json"))  # stage 2 not run yet
  with open(os.path.join(workdir, "stage1_image", "vocab.json")) as f:  # fitted alone, same ids
    assert f.read() == open(os.path.join(workdir, "stage1_text", "vocab.json")).read()

  out = _run(args)
  assert "best val_samples_f1" in out.stdout
  assert os.path.exists(os.path.join(workdir, "thresholds.json"))
  for m, path in stage_metrics.items():  # complete stage-1 runs are reused, not trained again
    assert open(path).read() == before[m]
  bad = subprocess.run([sys.executable, "train.py", "--config=configs/tiny.py",
                        f"--workdir={tmp_path / 'x'}", "--stage=text"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
  assert bad.returncode != 0 and "--stage needs a two-stage config" in bad.stderr
