"""orbax checkpoints: exact round trip of model + optimizer, latest vs best, damaged saves."""

from __future__ import annotations

import os

import jax
import numpy as np
import optax
from flax import nnx

from jaxmm.train import checkpoint as ckpt_lib
from jaxmm.train import steps


class _Net(nnx.Module):

  def __init__(self, rngs):
    self.lin = nnx.Linear(3, 4, rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)

  def __call__(self, x):
    return self.bn(self.lin(x))


def _state(seed):
  model = _Net(nnx.Rngs(seed))
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
  x = jax.random.normal(jax.random.key(seed), (8, 3))
  grads = nnx.grad(lambda m: (m(x) ** 2).mean())(model)
  optimizer.update(model, grads)  # non-trivial optimizer state and batch stats
  return steps.split_state(model, optimizer)[1]


def _equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y))
                                    for x, y in zip(la, lb))


def test_round_trip_exact_and_meta(tmp_path):
  saved = _state(0)
  ck = ckpt_lib.Checkpointer(str(tmp_path))
  ck.save(7, saved, {"epoch": 1, "batch_in_epoch": 3})
  restored, meta = ck.restore(_state(1))  # a different state of the same structure as target
  assert _equal(saved, restored)
  assert not _equal(_state(1), restored)
  assert meta == {"epoch": 1, "batch_in_epoch": 3}
  assert ck.latest_step() == 7 and ck.latest_step(ckpt_lib.BEST) is None


def test_latest_keeps_two_and_best_is_separate(tmp_path):
  ck = ckpt_lib.Checkpointer(str(tmp_path))
  for step in (1, 2, 3):
    ck.save(step, _state(step), {"step": step})
  ck.save(2, _state(2), {"step": 2}, which=ckpt_lib.BEST)
  assert sorted(os.listdir(tmp_path / "checkpoints" / "latest")) == ["2", "3"]
  best, meta = ck.restore(_state(0), which=ckpt_lib.BEST)
  assert meta["step"] == 2 and _equal(best, _state(2))
  # Saving the same step again replaces it instead of failing.
  ck.save(3, _state(5), {"step": 3, "again": True})
  assert ck.restore_meta()["again"] is True


def test_unfinished_save_does_not_hide_last_good_checkpoint(tmp_path):
  ck = ckpt_lib.Checkpointer(str(tmp_path))
  ck.save(4, _state(4), {"step": 4})
  ck.close()
  # What a SIGKILL in the middle of orbax's write leaves: a temporary folder, never renamed.
  tmp = tmp_path / "checkpoints" / "latest" / "5.orbax-checkpoint-tmp-123"
  tmp.mkdir()
  (tmp / "garbage").write_text("partial")
  ck2 = ckpt_lib.Checkpointer(str(tmp_path))
  assert ck2.latest_step() == 4
  restored, meta = ck2.restore(_state(0))
  assert meta["step"] == 4 and _equal(restored, _state(4))


def test_missing_checkpoint_error_names_directory(tmp_path):
  ck = ckpt_lib.Checkpointer(str(tmp_path))
  try:
    ck.restore(_state(0))
  except FileNotFoundError as e:
    assert "latest" in str(e) and "train first" in str(e)
  else:
    raise AssertionError("expected FileNotFoundError")
