"""orbax checkpoints: exact round trip of model + optimizer, latest vs best, damaged saves."""

from __future__ import annotations

import os

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from jaxmm.train import checkpoint as ckpt_lib


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
  return (nnx.state(model), nnx.state(optimizer))


def _equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(
    np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb)
  )


def test_round_trip_exact_and_meta(tmp_path):
  saved = _state(0)
  ck = ckpt_lib.Checkpointer(str(tmp_path))
  ck.save(7, saved, {"epoch": 1, "batch_in_epoch": 3})
  restored, meta = ck.restore(_state(1))  # a different state of the same structure as target
  assert _equal(saved, restored)
  assert not _equal(_state(1), restored)
  assert meta == {"epoch": 1, "batch_in_epoch": 3}
  assert ck.latest_step() == 7 and ck.latest_step(ckpt_lib.BEST) is None


def test_save_returns_before_the_write_and_reads_wait_for_it(tmp_path):
  """Saves are asynchronous; the next train step donates (deletes) the saved buffers at once, and
  a restore or close right after a save gets the saved state."""
  ck = ckpt_lib.Checkpointer(str(tmp_path))
  saved = _state(0)
  want = jax.tree.map(np.asarray, saved)
  ck.save(1, saved, {"step": 1})
  assert not (tmp_path / "checkpoints" / "latest" / "1").exists()  # still in flight
  for x in jax.tree.leaves(saved):
    x.delete()  # what donating the state to the next train step does
  restored, meta = ck.restore(_state(1))
  assert meta == {"step": 1} and _equal(want, restored)
  ck.save(2, restored, {"step": 2})
  ck.close()
  assert sorted(os.listdir(tmp_path / "checkpoints" / "latest")) == ["1", "2"]


def test_latest_keeps_two_and_best_is_separate(tmp_path):
  ck = ckpt_lib.Checkpointer(str(tmp_path))
  for step in (1, 2, 3):
    ck.save(step, _state(step), {"step": step})
  ck.save(2, _state(2), {"step": 2}, which=ckpt_lib.BEST)
  ck.wait()  # saves are written in the background
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


def _damage(step_dir) -> None:
  """Overwrites every array file of a finished save (a bad disk, a careless hand)."""
  for dirpath, _, files in os.walk(os.path.join(step_dir, "state")):
    for name in files:
      if os.path.basename(dirpath) == "d":
        with open(os.path.join(dirpath, name), "wb") as f:
          f.write(b"garbage")


def test_damaged_latest_falls_back_to_the_step_before(tmp_path, caplog):
  ck = ckpt_lib.Checkpointer(str(tmp_path))
  for step in (4, 6):
    ck.save(step, _state(step), {"step": step})
  ck.wait()
  _damage(tmp_path / "checkpoints" / "latest" / "6")
  with caplog.at_level("WARNING", logger="jaxmm"):
    restored, meta = ck.restore(_state(0))
  assert meta["step"] == 4 and _equal(restored, _state(4))
  assert "[6]" in caplog.text and "using step 4" in caplog.text
  # Training goes on from step 4: the next save at step 5 replaces the damaged step 6 (orbax alone
  # would skip a save below its latest step, silently).
  ck.save(5, _state(5), {"step": 5})
  assert ck.latest_step() == 5 and ck.restore(_state(0))[1] == {"step": 5}


def test_nothing_restorable_says_so(tmp_path):
  ck = ckpt_lib.Checkpointer(str(tmp_path))
  ck.save(1, _state(1), {"step": 1})
  other = {"w": np.zeros((2, 2), np.float32)}  # a state of another model
  with pytest.raises(
    RuntimeError,
    match=r"(?s)no 'latest' checkpoint in .* could be restored "
    r"\(tried steps \[1\].*use a new --workdir",
  ):
    ck.restore(other)


def test_training_run_removes_interrupted_saves(tmp_path):
  ck = ckpt_lib.Checkpointer(str(tmp_path))
  ck.save(4, _state(4), {"step": 4})
  ck.close()
  tmp = tmp_path / "checkpoints" / "latest" / "5.orbax-checkpoint-tmp-123"
  tmp.mkdir()
  ckpt_lib.Checkpointer(str(tmp_path)).close()  # a reader leaves it: it may be a save in flight
  assert tmp.exists()
  ckpt_lib.Checkpointer(str(tmp_path), cleanup_tmp=True).close()
  assert not tmp.exists() and ckpt_lib.Checkpointer(str(tmp_path)).latest_step() == 4


def test_fresh_state_placed_like_restored_compiles_the_same_program(tmp_path):
  ck = ckpt_lib.Checkpointer(str(tmp_path))
  ck.save(1, _state(0), {})
  restored, _ = ck.restore(_state(1))
  step = jax.jit(lambda s: jax.tree.map(lambda x: x * 2, s))
  want = step.lower(restored).as_text()
  assert step.lower(ckpt_lib.place_like_restored(_state(0))).as_text() == want
  assert step.lower(_state(0)).as_text() != want  # why: a resumed run would compile again


def test_read_only_creates_nothing_and_cannot_save(tmp_path):
  reader = ckpt_lib.Checkpointer(str(tmp_path), read_only=True)
  assert reader.latest_step() is None and reader.restore_meta() is None
  with pytest.raises(FileNotFoundError, match="train first"):
    reader.restore(_state(0))
  assert not (tmp_path / "checkpoints").exists()  # orbax's create=True would have made it
  ck = ckpt_lib.Checkpointer(str(tmp_path))
  ck.save(3, _state(3), {"step": 3})
  ck.close()
  before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
  reader = ckpt_lib.Checkpointer(str(tmp_path), read_only=True)
  restored, meta = reader.restore(_state(0))
  assert meta["step"] == 3 and _equal(restored, _state(3))
  with pytest.raises(RuntimeError, match="read-only"):
    reader.save(4, _state(4), {"step": 4})
  reader.close()
  assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_nothing_restorable_names_the_step_folders_in_one_line(tmp_path):
  ck = ckpt_lib.Checkpointer(str(tmp_path))
  ck.save(2, _state(2), {"step": 2})
  ck.wait()
  _damage(tmp_path / "checkpoints" / "latest" / "2")
  with pytest.raises(ckpt_lib.CheckpointDamagedError) as e:
    ck.restore(_state(0))
  assert e.value.folders == [str(tmp_path / "checkpoints" / "latest" / "2")]
  assert "\n" not in str(e.value) and "from a backup" in str(e.value)


def test_a_step_deleted_while_read_is_no_damage(tmp_path, caplog):
  """evaluate.py beside a training run: the run may delete the step being read (it keeps newer
  ones); the reader lists the steps anew and reads the newest, with no word of damage."""
  import shutil

  trainer = ckpt_lib.Checkpointer(str(tmp_path))
  for step in (4, 6):
    trainer.save(step, _state(step), {"step": step})
  trainer.wait()
  reader = ckpt_lib.Checkpointer(str(tmp_path), read_only=True)
  mgr = reader._managers[ckpt_lib.LATEST]
  restore, calls = mgr.restore, []

  def training_meanwhile(step, **kw):
    calls.append(step)
    if len(calls) == 1:  # the run saves step 8 and drops step 6 while it is being read
      shutil.rmtree(tmp_path / "checkpoints" / "latest" / str(step))
      trainer.save(8, _state(8), {"step": 8})
      trainer.wait()
    return restore(step, **kw)

  mgr.restore = training_meanwhile
  with caplog.at_level("WARNING", logger="jaxmm"):
    restored, meta = reader.restore(_state(0))
  assert calls == [6, 8] and meta["step"] == 8 and _equal(restored, _state(8))
  assert "could not be restored" not in caplog.text
