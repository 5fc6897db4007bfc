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
  from jaxmm.configs import tiny
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


def test_train_step_augments_images_on_the_device():
  """The step's augmentation is wired in: a constant image's crops and flips are that image (the
  same losses as without), a random image's are not; keys come from the seed and step only."""
  from jaxmm.data.pipeline import AugmentConfig

  aug = AugmentConfig(crop=True, hflip=True, vflip=True, where="device")
  task = tasks.make(config_lib.default_config())

  def losses(batch, augment, steps_=2):
    state, _ = _fused_setup("float32")
    step = steps.make_train_step(task, seed=0, augment=augment)
    out = []
    for _ in range(steps_):
      state, m = step(state, batch)
      out.append(float(m["loss"]))
    return out

  _, batch = _fused_setup("float32")
  batch["index"] = np.arange(8, dtype=np.int32)
  const = dict(batch, image=np.full_like(batch["image"], 90))
  np.testing.assert_allclose(losses(const, aug), losses(const, None), rtol=1e-6)
  augmented = losses(batch, aug)
  assert augmented != losses(batch, None)
  assert augmented == losses(batch, aug)  # a fresh run draws the same augmentation


def test_a_run_augmenting_on_the_device_resumes_exactly(tmp_path):
  """Stopped mid-epoch and resumed, a run with its augmentation in the step ends with the
  parameters of a straight run: the draws are a function of (seed, step, example) only."""
  import os

  import jax

  from jaxmm import workdir as workdir_lib
  from jaxmm.configs import tiny
  from jaxmm.data.text import TextEncoder
  from jaxmm.recipes import train_and_evaluate
  from jaxmm.train import checkpoint as ckpt_lib

  config = tiny.get_config()
  config.data.root = config.data.synthetic.root = str(tmp_path / "data")
  config.data.val_size = 0  # no evaluation: nothing else to compile
  config.model.mode = "image"
  config.data.augment.update(crop=True, hflip=True, color_jitter=0.2, where="device")
  config.train.update(report=False, epochs=2)

  def final_arrays(workdir, max_steps=None):
    config.train.max_steps = max_steps
    train_and_evaluate(config, workdir)
    vocab = TextEncoder.load(os.path.join(workdir, workdir_lib.VOCAB_FILE)).vocab
    ckpt = ckpt_lib.Checkpointer(workdir)
    like = state_lib.build(config, tasks.make(config), vocab_size=len(vocab)).arrays
    arrays, meta = ckpt.restore(like)
    ckpt.close()
    return meta["step"], [np.asarray(x) for x in jax.tree.leaves(arrays)]

  straight_step, straight = final_arrays(str(tmp_path / "straight"))
  assert final_arrays(str(tmp_path / "run"), max_steps=3)[0] == 3  # stops mid-epoch 1
  resumed_step, resumed = final_arrays(str(tmp_path / "run"))
  assert resumed_step == straight_step == 10  # 2 epochs of 80 // 16 steps
  for a, b in zip(resumed, straight, strict=True):
    np.testing.assert_array_equal(a, b)
