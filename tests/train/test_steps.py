"""The jitted train / predict steps: a real update, skipped non-finite updates, eval mode."""

from __future__ import annotations

import jax
import numpy as np
import optax
from flax import nnx

from jaxmm.models.fusion import ConcatFusionClassifier
from jaxmm.models.text import BagOfWordsTower
from jaxmm.train import steps


def _setup():
  model = ConcatFusionClassifier(None, BagOfWordsTower(20, 8, rngs=nnx.Rngs(0)), 18,
                                 hidden=(16,), dropout=0.5, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
  graphdefs, state = steps.split_state(model, optimizer)
  task = steps.multilabel_task("bce")
  rng = np.random.default_rng(0)
  batch = {"tokens": rng.integers(1, 20, (4, 6)).astype(np.int32),
           "length": np.array([6, 3, 1, 5], np.int32),
           "labels": (rng.random((4, 18)) < 0.2).astype(np.float32),
           "mask": np.ones(4, np.float32)}
  return graphdefs, state, task, batch


def _leaves(state):
  return [np.array(x, copy=True) for x in jax.tree.leaves(state)]  # donated buffers get reused


def test_train_step_updates_and_loss_decreases():
  graphdefs, state, task, batch = _setup()
  train_step = steps.make_train_step(graphdefs, task, seed=0)
  before = _leaves(state)
  losses = []
  for _ in range(20):
    state, m = train_step(state, batch)
    losses.append(float(m["loss"]))
    assert bool(m["finite"])
  assert any(not np.array_equal(a, b) for a, b in zip(before, _leaves(state)))
  assert losses[-1] < losses[0]


def test_non_finite_loss_skips_the_whole_update():
  graphdefs, state, task, batch = _setup()
  train_step = steps.make_train_step(graphdefs, task, seed=0)
  state, _ = train_step(state, batch)
  before = _leaves(state)
  bad = dict(batch, labels=np.full_like(batch["labels"], np.nan))
  state, m = train_step(state, bad)
  assert not bool(m["finite"])
  after = _leaves(state)
  assert all(np.array_equal(a, b) for a, b in zip(before, after))  # optimizer step count too


def test_predict_step_is_deterministic_eval_mode():
  graphdefs, state, task, batch = _setup()
  predict = steps.make_predict_step(graphdefs[0], task)
  p1, loss1 = predict(state[0], batch)
  p2, _ = predict(state[0], batch)
  np.testing.assert_array_equal(np.asarray(p1), np.asarray(p2))  # dropout off in eval
  assert p1.shape == (4, 18) and np.all((np.asarray(p1) > 0) & (np.asarray(p1) < 1))
  assert loss1.shape == (4,)
