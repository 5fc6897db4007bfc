"""The jitted train / predict steps: a real update, skipped non-finite updates, eval mode."""

from __future__ import annotations

import jax
import numpy as np
import optax
from flax import nnx

from jaxmm import config as config_lib
from jaxmm import tasks
from jaxmm.models.fusion import ConcatFusionClassifier
from jaxmm.models.text import BagOfWordsTower
from jaxmm.train import state as state_lib
from jaxmm.train import steps


def _setup():
  model = ConcatFusionClassifier(
    None, BagOfWordsTower(20, 8, rngs=nnx.Rngs(0)), 18, hidden=(16,), dropout=0.5, rngs=nnx.Rngs(0)
  )
  state = state_lib.from_model(model, optax.adam(1e-2))
  task = tasks.make(config_lib.default_config())
  rng = np.random.default_rng(0)
  batch = {
    "tokens": rng.integers(1, 20, (4, 6)).astype(np.int32),
    "length": np.array([6, 3, 1, 5], np.int32),
    "labels": (rng.random((4, 18)) < 0.2).astype(np.float32),
    "mask": np.ones(4, np.float32),
  }
  return state, task, batch


def _leaves(state):
  return [np.array(x, copy=True) for x in jax.tree.leaves(state)]  # donated buffers get reused


def test_train_step_updates_and_loss_decreases():
  state, task, batch = _setup()
  train_step = steps.make_train_step(task, seed=0)
  before = _leaves(state)
  losses = []
  for _ in range(20):
    state, m = train_step(state, batch)
    losses.append(float(m["loss"]))
    assert bool(m["finite"])
  assert any(not np.array_equal(a, b) for a, b in zip(before, _leaves(state)))
  assert losses[-1] < losses[0]


def test_non_finite_loss_skips_the_whole_update():
  state, task, batch = _setup()
  train_step = steps.make_train_step(task, seed=0)
  state, _ = train_step(state, batch)
  before = _leaves(state)
  bad = dict(batch, labels=np.full_like(batch["labels"], np.nan))
  state, m = train_step(state, bad)
  assert not bool(m["finite"])
  after = _leaves(state)
  assert all(np.array_equal(a, b) for a, b in zip(before, after))  # optimizer step count too


def test_predict_step_is_deterministic_eval_mode():
  state, task, batch = _setup()
  predict = steps.make_predict_step(state.model_def, task)
  p1, loss1 = predict(state.model, batch)
  p2, _ = predict(state.model, batch)
  np.testing.assert_array_equal(np.asarray(p1), np.asarray(p2))  # dropout off in eval
  assert p1.shape == (4, 18) and np.all((np.asarray(p1) > 0) & (np.asarray(p1) < 1))
  assert loss1.shape == (4,)


def _fused_setup(dtype: str):
  from configs import tiny
  from jaxmm.models import registry
  from jaxmm.train import optim

  c = tiny.get_config()
  c.model.dtype = dtype
  # One basic block after the ImageNet stem (conv, BN, max-pool): every layer kind, compiled fast.
  c.model.image.update(stem="imagenet", stage_sizes=(1,))
  model = registry.build_model(c.model, num_outputs=18, vocab_size=30, rngs=nnx.Rngs(0))
  tx = optim.make_optimizer(c.optim, steps_per_epoch=10, total_steps=100)
  state = state_lib.from_model(model, tx)
  rng = np.random.default_rng(0)
  batch = {
    "image": rng.integers(0, 256, (8, 16, 16, 3), np.uint8),
    "tokens": rng.integers(1, 30, (8, 12)).astype(np.int32),
    "length": rng.integers(1, 13, 8).astype(np.int32),
    "labels": (rng.random((8, 18)) < 0.2).astype(np.float32),
  }
  return state, batch


def test_bfloat16_step_keeps_float32_params_and_matches_float32_loss():
  results = {}
  for dtype in ("float32", "bfloat16"):
    state, batch = _fused_setup(dtype)
    train_step = steps.make_train_step(tasks.make(config_lib.default_config()), seed=0)
    losses = []
    for _ in range(3):
      state, m = train_step(state, batch)
      losses.append(float(m["loss"]))
    floats = [x for x in jax.tree.leaves(state) if np.issubdtype(x.dtype, np.floating)]
    assert floats and all(x.dtype == np.float32 for x in floats), dtype  # params + Adam moments
    results[dtype] = (losses, m)
  (f32, _), (bf16, m) = results["float32"], results["bfloat16"]
  assert m["loss"].dtype == np.float32 and np.isfinite(bf16).all()
  np.testing.assert_allclose(bf16, f32, rtol=2e-2)  # bf16 has 8 mantissa bits
  assert bf16 != f32  # the switch really changed the computation


def test_unknown_dtype_is_rejected():
  import pytest

  with pytest.raises(ValueError, match="model.dtype"):
    _fused_setup("float16")
