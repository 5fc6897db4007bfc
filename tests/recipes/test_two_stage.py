"""Two-stage training (jaxmm.recipes.two_stage): S1's towers-then-head recipe, the late-fusion
mixing fitted on val, and train.py's --stage flag that trains the two towers in parallel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
from flax import nnx

from jaxmm import config as config_lib
from jaxmm import tasks
from jaxmm.configs import tiny
from jaxmm.models import fusion
from jaxmm.recipes import late_fusion, train_and_evaluate, two_stage
from jaxmm.train import state as state_lib
from tests.conftest import ROOT
from tests.tasks.test_tasks import _matching_config, _run


def _leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(state)]


def _vocab_size(workdir):
  with open(os.path.join(workdir, "vocab.json")) as f:
    return len(json.load(f)["tokens"])


def _restored(config, run_dir, vocab_size):
  """The best model of the run of `config` in `run_dir`."""
  built = state_lib.build(config, tasks.make(config), vocab_size=vocab_size)
  return two_stage._restore_model(built, run_dir)


def test_two_stage_assembles_stage_one_towers_and_stage_two_head(tmp_path):
  config = tiny.get_config()
  config.data.root = config.data.synthetic.root = str(tmp_path / "data")
  config.train.update(epochs=1, two_stage=True, head_epochs=2, report=False)
  workdir = str(tmp_path / "run")
  result = train_and_evaluate(config, workdir)
  for sub in ("stage1_image", "stage1_text", "stage2_head"):
    assert os.path.exists(os.path.join(workdir, sub, "checkpoints", "best"))
  assert os.path.exists(os.path.join(workdir, "thresholds.json"))
  assert result["best_metric"] is not None

  vocab_size = _vocab_size(workdir)
  fused = _restored(config, workdir, vocab_size)
  for mode in ("image", "text"):
    alone = _restored(
      two_stage.sub_config(config, **{"model.mode": mode}),
      os.path.join(workdir, f"stage1_{mode}"),
      vocab_size,
    )
    a, b = nnx.state(getattr(fused, mode)), nnx.state(getattr(alone, mode))
    for x, y in zip(_leaves(a), _leaves(b)):
      np.testing.assert_array_equal(x, y)
  # The head is stage 2's, not the fused model's fresh one nor either stage-1 head.
  in_features = fused.image.out_features + fused.text.out_features
  head_state = state_lib.with_optimizer(
    two_stage.FeatureHead(in_features, config.model.head, 18, rngs=nnx.Rngs(0)), config
  )
  head = two_stage._restore_model(head_state, os.path.join(workdir, "stage2_head"))
  for x, y in zip(_leaves(nnx.state(fused.head)), _leaves(nnx.state(head.head))):
    np.testing.assert_array_equal(x, y)
  # evaluate.py works on the assembled workdir like on any other.
  _run(["evaluate.py", "--workdir", workdir, "--out", str(tmp_path / "e.json")])


def test_late_fusion_two_stage_refuses_the_matching_task(tmp_path):
  config = _matching_config(tmp_path / "data")
  config.model.name = "late_fusion"
  config.model.head.interaction_dim = 0
  config.train.update(two_stage=True, contrastive_weight=0.0)
  with pytest.raises(ValueError, match="needs task='multilabel'"):
    train_and_evaluate(config, str(tmp_path / "run"))


def test_fit_logit_mixing_recovers_known_weights():
  rng = np.random.default_rng(0)
  n = 20000
  logits = rng.normal(size=(n, 2, 3)) * 2
  true_mix = np.array([[2.0, 0.0, 1.0], [0.5, 1.5, 0.0]])
  true_bias = np.array([-1.0, 0.5, 0.0])
  p = 1 / (1 + np.exp(-((logits * true_mix).sum(1) + true_bias)))
  labels = (rng.random(p.shape) < p).astype(np.float32)
  mix, bias = late_fusion.fit_logit_mixing(logits, labels)
  np.testing.assert_allclose(mix, true_mix, atol=0.1)  # a useless branch gets weight ~0
  np.testing.assert_allclose(bias, true_bias, atol=0.1)


def test_fit_logit_mixing_stays_finite_when_a_branch_separates_a_class():
  rng = np.random.default_rng(0)
  labels = (rng.random((200, 2)) < 0.3).astype(np.float32)
  labels[:, 1] = 0  # a class absent from val
  logits = np.where(labels > 0, 12.0, -12.0)[:, None, :] + rng.normal(size=(200, 1, 2))
  mix, bias = late_fusion.fit_logit_mixing(logits, labels)
  assert np.isfinite(mix).all() and np.isfinite(bias).all()
  assert mix[0, 0] > 0 and np.abs(mix).max() < 10 and np.abs(bias).max() < 20
  z = (logits * mix).sum(1) + bias
  assert ((z[:, 0] > 0) == (labels[:, 0] > 0)).all() and (z[:, 1] < 0).all()


@pytest.fixture(scope="module")
def late_fusion_run(tmp_path_factory):
  """tiny's towers as late fusion in two stages, trained as train.py's --stage users do:
  `--stage=text` and `--stage=image` at once on one workdir, then the plain command (stage 2).
  One run serves the tests below: each stage-1 run costs a compile of its tower's programs."""
  root = tmp_path_factory.mktemp("late_fusion")
  config = tiny.get_config()
  config.data.root = config.data.synthetic.root = str(root / "data")
  config.model.name = "late_fusion"
  config.train.update(epochs=1, two_stage=True)
  config_lib.ensure_synthetic(config.data)  # made once, before two processes read it
  workdir = str(root / "run")
  args = [
    "train.py",
    "--config=configs/tiny.py",
    f"--workdir={workdir}",
    f"--config.data.root={config.data.root}",
    "--config.train.epochs=1",
    "--config.train.two_stage=True",
    "--config.model.name=late_fusion",
    "--config.train.report=False",
  ]
  # Module fixtures start before conftest's per-test cache isolation: name the same cache here.
  env = {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "JAXMM_CACHE": str(tmp_path_factory.getbasetemp() / "jaxmm_cache"),
  }
  procs = [
    subprocess.Popen(
      [sys.executable, *args, f"--stage={m}"],
      cwd=ROOT,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for m in ("text", "image")
  ]
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
  stage_metrics = {
    m: os.path.join(workdir, f"stage1_{m}", "metrics.jsonl") for m in ("text", "image")
  }
  after_stage1 = types.SimpleNamespace(
    metrics={m: open(path).read() for m, path in stage_metrics.items()},
    thresholds=os.path.exists(os.path.join(workdir, "thresholds.json")),
    vocabs=[
      open(os.path.join(workdir, f"stage1_{m}", "vocab.json")).read() for m in ("text", "image")
    ],
  )
  stage2 = subprocess.run(
    [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
  )
  assert stage2.returncode == 0, stage2.stderr[-3000:]
  return types.SimpleNamespace(
    config=config,
    workdir=workdir,
    args=args,
    env=env,
    stage_metrics=stage_metrics,
    after_stage1=after_stage1,
    stage2_stdout=stage2.stdout,
  )


def test_train_py_stage_flag_trains_the_two_towers_in_parallel_processes(late_fusion_run, tmp_path):
  """--stage=text and --stage=image at once on one workdir; the plain run then only does stage 2."""
  run = late_fusion_run
  assert all(run.after_stage1.metrics.values())
  assert not run.after_stage1.thresholds  # stage 2 had not run yet
  assert run.after_stage1.vocabs[0] == run.after_stage1.vocabs[1]  # fitted apart, same ids
  assert "best val_samples_f1" in run.stage2_stdout
  assert os.path.exists(os.path.join(run.workdir, "thresholds.json"))
  for m, path in run.stage_metrics.items():  # complete stage-1 runs are reused, not trained again
    assert open(path).read() == run.after_stage1.metrics[m]
  bad = subprocess.run(
    [
      sys.executable,
      "train.py",
      "--config=configs/tiny.py",
      f"--workdir={tmp_path / 'x'}",
      "--stage=text",
    ],
    cwd=ROOT,
    env=run.env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert bad.returncode != 0 and "--stage needs a two-stage config" in bad.stderr


def test_late_fusion_two_stage_keeps_both_branches_and_fits_the_mixing_on_val(
  late_fusion_run, tmp_path
):
  config, workdir = late_fusion_run.config, late_fusion_run.workdir
  assert not os.path.exists(os.path.join(workdir, "stage2_head"))  # no head training stage
  vocab_size = _vocab_size(workdir)
  fused = _restored(config, workdir, vocab_size)
  assert isinstance(fused, fusion.LateFusionClassifier)
  for mode in ("image", "text"):  # each branch is its stage-1 model, head included
    alone = _restored(
      two_stage.sub_config(config, **{"model.mode": mode}),
      os.path.join(workdir, f"stage1_{mode}"),
      vocab_size,
    )
    a, b = _leaves(nnx.state(getattr(fused, f"{mode}_only"))), _leaves(nnx.state(alone))
    assert len(a) == len(b)
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)
  assert fused.image is fused.image_only.image and fused.text is fused.text_only.text

  # The mixing is the logistic fit on the val split's branch logits, and the logits obey it.
  data = tasks.make(config).load_data(workdir, with_images=True)
  branch = two_stage.extract_features(
    fused, data.val, batch_size=12, num_threads=1, method="branch_logits"
  )
  mix, bias = late_fusion.fit_logit_mixing(branch, data.val.arrays["labels"])
  np.testing.assert_allclose(np.asarray(fused.mix[...]), mix, atol=1e-5)
  np.testing.assert_allclose(np.asarray(fused.bias[...]), bias, atol=1e-5)
  logits = two_stage.extract_features(
    fused, data.val, batch_size=12, num_threads=1, method="__call__"
  )
  np.testing.assert_allclose(logits, (branch * mix).sum(1) + bias, rtol=1e-4, atol=1e-4)
  _run(["evaluate.py", "--workdir", workdir, "--out", str(tmp_path / "e.json")])
