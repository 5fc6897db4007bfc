"""The training loop under stress (jaxmm/train/loop.py): kills, signals, damaged saves, NaN losses.

The resume test drives real `train.py` processes; the others call `train_and_evaluate` directly.
All use configs/tiny.py (16 px, 2 epochs of 4 steps); the NaN test trains the text tower only,
which compiles in a fraction of the time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxmm import config as config_lib
from jaxmm import tasks
from jaxmm import workdir as workdir_lib
from jaxmm.configs import tiny
from jaxmm.data import datasets
from jaxmm.data.text import TextEncoder
from jaxmm.recipes import train_and_evaluate
from jaxmm.train import checkpoint as ckpt_lib
from jaxmm.train import state as state_lib
from jaxmm.train import steps
from jaxmm.train.writer import read_metrics
from tests.conftest import ROOT

WALL_CLOCK = ("elapsed_s",)  # the only fields allowed to differ between runs
# Checkpoints every 2 steps and rows every 3: most checkpoints fall between two log rows and
# must carry the unlogged step metrics. (Other settings as tiny.py: the compiled train step is
# shared with the end-to-end test through the session's XLA cache.)
# No report: matplotlib's import and the plots cost each process seconds.
OVERRIDES = (
  "--config.train.ckpt_every_steps=2",
  "--config.train.log_every=3",
  "--config.train.report=False",
)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
  """The tiny synthetic set and its image cache, made once before any process starts."""
  config = tiny.get_config()
  config.data.root = config.data.synthetic.root = str(tmp_path_factory.mktemp("loop") / "data")
  # conftest's JAXMM_CACHE is not set yet for a module fixture: name the same folder here.
  config.data.cache_dir = str(tmp_path_factory.getbasetemp() / "jaxmm_cache")
  config_lib.ensure_synthetic(config.data)
  datasets.prepare_comp5329(config.data, None)
  return config.data.root


@pytest.fixture
def procs():
  """Processes a test started; any still running when it ends (a failed assert) are killed."""
  started: list[subprocess.Popen] = []
  yield started
  for p in started:
    if p.poll() is None:
      p.kill()
      p.wait()


def _start(procs, workdir, data_root) -> subprocess.Popen:
  os.makedirs(workdir, exist_ok=True)
  cmd = [
    sys.executable,
    "train.py",
    "--config",
    "configs/tiny.py",
    "--workdir",
    str(workdir),
    f"--config.data.root={data_root}",
    *OVERRIDES,
  ]
  # Output to files, not pipes: nobody reads a pipe while we poll, and a full one blocks the run.
  out, err = (open(os.path.join(workdir, f"std{s}.log"), "a") for s in ("out", "err"))
  procs.append(
    subprocess.Popen(
      cmd, cwd=ROOT, stdout=out, stderr=err, env={**os.environ, "JAX_PLATFORMS": "cpu"}
    )
  )
  return procs[-1]


def _log(workdir, stream="err") -> str:
  with open(os.path.join(workdir, f"std{stream}.log")) as f:
    return f.read()


def _finish(proc, workdir, timeout=300) -> None:
  assert proc.wait(timeout) == 0, _log(workdir)[-3000:]


def _latest_dir(workdir) -> str:
  return os.path.join(workdir, "checkpoints", "latest")


def _steps(workdir) -> list[int]:
  d = _latest_dir(workdir)
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _saving(workdir, step) -> bool:
  d = _latest_dir(workdir)
  tmp = f"{step}.orbax-checkpoint-tmp"
  return os.path.isdir(d) and any(n.startswith(tmp) for n in os.listdir(d))


def _poll(cond, proc, workdir, what, timeout=300) -> None:
  t0 = time.time()
  while not cond():
    if proc.poll() is not None:
      pytest.fail(f"the run ended (rc {proc.returncode}) before {what}:\n{_log(workdir)[-3000:]}")
    if time.time() - t0 > timeout:
      proc.kill()
      pytest.fail(f"timed out waiting for {what}")
    time.sleep(0.005)


def _without_wall_clock(rows):
  return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in rows]


def test_killed_and_signalled_runs_resume_to_the_uninterrupted_metrics(tmp_path, data_root, procs):
  """SIGKILL during a save, resume, SIGTERM mid-epoch, resume: the metrics equal a straight
  run's."""
  ref_dir, run_dir = tmp_path / "reference", tmp_path / "run"
  reference = _start(procs, ref_dir, data_root)  # runs beside the interrupted ones
  run = _start(procs, run_dir, data_root)

  # 1. SIGKILL while orbax writes step 4 (the end of epoch 1), or just after if the poll missed it.
  _poll(
    lambda: _saving(run_dir, 4) or max(_steps(run_dir), default=0) >= 4,
    run,
    run_dir,
    "the save of step 4",
  )
  run.send_signal(signal.SIGKILL)
  assert run.wait(60) == -signal.SIGKILL
  killed = _steps(run_dir)
  assert killed and max(killed) < 8, killed  # stopped mid-run, with a checkpoint to go back to
  # What a kill in mid-save leaves (made by hand too, in case the kill landed between saves):
  # orbax's temporary folder, half written, and a cut-off line at the end of metrics.jsonl.
  partial = os.path.join(_latest_dir(run_dir), f"{max(killed) + 1}.orbax-checkpoint-tmp-1")
  shutil.copytree(os.path.join(_latest_dir(run_dir), str(max(killed))), partial)
  shutil.rmtree(os.path.join(partial, "state"))
  with open(run_dir / "metrics.jsonl", "a") as f:
    f.write('{"step": 99, "train_lo')

  # 2. Resume; SIGTERM once it is past the kill: the run saves, says so, and exits with 0.
  run = _start(procs, run_dir, data_root)
  _poll(lambda: max(_steps(run_dir), default=0) >= 6, run, run_dir, "step 6")
  run.send_signal(signal.SIGTERM)
  _finish(run, run_dir)
  out, err = _log(run_dir, "out"), _log(run_dir)
  assert "resumed from step" in err and not os.path.exists(partial)
  stopped = int(out.split("stopped by signal 15 at step ")[1].split(";")[0])
  assert 6 <= stopped <= 8, out  # in epoch 2 (8 if the signal landed during the last step)
  assert f"signal 15: saved checkpoint at step {stopped}" in err
  assert max(_steps(run_dir)) == stopped
  assert not os.path.exists(run_dir / "thresholds.json")  # not finished: nothing final written

  # 3. The same command finishes the run.
  run = _start(procs, run_dir, data_root)
  _finish(run, run_dir)
  _finish(reference, ref_dir)
  got = read_metrics(str(run_dir / "metrics.jsonl"))
  want = read_metrics(str(ref_dir / "metrics.jsonl"))
  assert [r["step"] for r in want if "val_loss" in r] == [4, 8]
  assert _without_wall_clock(got) == _without_wall_clock(want)
  assert json.loads((run_dir / "thresholds.json").read_text()) == json.loads(
    (ref_dir / "thresholds.json").read_text()
  )


def _tiny(tmp_path, data_root, **train):
  config = tiny.get_config()
  config.data.root = data_root
  config.train.update(report=False, **train)
  return config, str(tmp_path / "run")


def test_nan_loss_skips_updates_and_stops_cleanly(tmp_path, data_root):
  # Adam moves every weight by ~lr on its first step; with lr=1e30 the loss turns NaN within a
  # few steps and stays so (the skipped updates leave the same weights).
  config, workdir = _tiny(tmp_path, data_root, log_every=1, ckpt_every_steps=1, max_bad_steps=3)
  config.model.mode = "text"
  config.data.val_size = 0  # no evaluation: nothing else to compile
  config.optim.update(lr=1e30, schedule="constant")
  with pytest.raises(FloatingPointError) as e:
    train_and_evaluate(config, workdir)
  rows = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  last = rows[-1]["step"]
  assert str(e.value).startswith(
    f"3 consecutive steps had a non-finite loss or gradient (last at step {last}); the updates "
    "were skipped and the last good checkpoint is kept. Lower optim.lr"
  )
  # One row per step: the skipped ones are counted, and their loss is null (not a number).
  assert [r["step"] for r in rows] == list(range(1, last + 1)) and last < 10
  assert [r["nonfinite_steps"] for r in rows] == [0] * (last - 3) + [1, 1, 1]
  assert all(r["train_loss"] > 0 for r in rows[:-3])
  assert all(r["train_loss"] is None for r in rows[-3:])

  # The latest checkpoint (the step before the stop) restores, holds no NaN, and equals the one
  # before it: a skipped step changes nothing, optimizer state included.
  ckpt = ckpt_lib.Checkpointer(workdir)
  assert ckpt.latest_step() == last - 1
  vocab = TextEncoder.load(os.path.join(workdir, workdir_lib.VOCAB_FILE)).vocab
  like = state_lib.build(config, tasks.make(config), vocab_size=len(vocab)).arrays
  latest, meta = ckpt.restore(like)
  before, _ = ckpt.restore(like, step=last - 2)
  ckpt.close()
  assert meta["step"] == last - 1
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(latest))
  for a, b in zip(jax.tree.leaves(latest), jax.tree.leaves(before), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_refuses_workdir_of_another_config(tmp_path, data_root):
  config, workdir = _tiny(tmp_path, data_root)
  workdir_lib.write_config(config, workdir)
  os.makedirs(os.path.join(workdir, "checkpoints", "latest", "4"))  # a run that saved step 4
  config.model.text.hidden_size = 24
  with pytest.raises(
    ValueError,
    match=r"holds a run of a different config .*"
    r"model\.text\.hidden_size: 16 -> 24",
  ):
    train_and_evaluate(config, workdir)


def test_a_run_that_failed_before_its_first_checkpoint_takes_the_corrected_config(
  tmp_path, data_root
):
  # A mistyped model name fails before anything is written; a bad data.root after config.json
  # was written, but before any checkpoint: the corrected command must still run there.
  config, workdir = _tiny(tmp_path, data_root, max_steps=1)
  config.model.name = "fusion_xl"
  with pytest.raises(ValueError, match="fusion_xl"):
    train_and_evaluate(config, workdir)
  assert not os.path.exists(workdir)
  config.model.name = "concat_fusion"
  config.data.root = str(tmp_path / "no-such-data")
  with pytest.raises(FileNotFoundError, match="no-such-data"):
    train_and_evaluate(config, workdir)
  config.data.root = data_root
  config.model.mode = "text"  # compiles fast
  assert train_and_evaluate(config, workdir)["step"] == 1


def test_a_dominating_l2_term_is_named_at_the_first_log(tmp_path, data_root, caplog):
  config, workdir = _tiny(tmp_path, data_root, max_steps=2, log_every=1)
  config.model.mode = "text"
  config.data.val_size = 0
  config.optim.l2 = 100.0
  with caplog.at_level("WARNING", logger="jaxmm"):
    train_and_evaluate(config, workdir)
  warned = [r.getMessage() for r in caplog.records if "optim.l2=100" in r.getMessage()]
  assert len(warned) == 1 and "shrink the weights" in warned[0]


def test_a_signal_during_the_last_step_still_evaluates_it(tmp_path, data_root, monkeypatch):
  """SIGTERM during the last step: the run still evaluates and saves that step before it stops,
  since the resumed run has no step left that would evaluate it."""
  config, workdir = _tiny(tmp_path, data_root, tune_thresholds="")
  config.model.mode = "text"  # compiles fast
  make_train_step = steps.make_train_step

  def signalling_train_step(*args, **kwargs):
    step = make_train_step(*args, **kwargs)
    calls = []

    def train_step(state, batch):
      calls.append(1)
      if len(calls) == 8:  # tiny.py's last step
        signal.raise_signal(signal.SIGTERM)
      return step(state, batch)

    return train_step

  monkeypatch.setattr(steps, "make_train_step", signalling_train_step)
  first = train_and_evaluate(config, workdir)
  assert first["stopped_by_signal"] == signal.SIGTERM and first["step"] == 8
  rows = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  assert [r["step"] for r in rows if "val_loss" in r] == [4, 8]
  monkeypatch.undo()
  assert train_and_evaluate(config, workdir)["stopped_by_signal"] is None  # the resumed run
  assert read_metrics(os.path.join(workdir, "metrics.jsonl")) == rows


def test_the_cpu_kernels_are_saved_and_a_resumed_auto_run_keeps_them(tmp_path, data_root):
  """train.cpu_kernels reaches the checkpoints; 'auto' on resume compiles what the run began
  with (exact resume), not a fresh timing's choice."""
  config, workdir = _tiny(tmp_path, data_root, ckpt_every_steps=1, max_steps=2)
  config.model.mode = "text"
  config.data.val_size = 0
  config.train.cpu_kernels = "eigen"
  train_and_evaluate(config, workdir)
  ckpt = ckpt_lib.Checkpointer(workdir)
  assert ckpt.restore_meta()["cpu_kernels"] == "eigen"
  ckpt.close()
  config.train.update(cpu_kernels="auto", max_steps=3)  # a tiny step alone would keep 'ynnpack'
  train_and_evaluate(config, workdir)
  ckpt = ckpt_lib.Checkpointer(workdir)
  assert ckpt.latest_step() == 3 and ckpt.restore_meta()["cpu_kernels"] == "eigen"
  ckpt.close()
  config.train.cpu_kernels = "mkl"
  with pytest.raises(ValueError, match="train.cpu_kernels='mkl'"):
    train_and_evaluate(config, str(tmp_path / "bad"))


def test_a_checkpoint_from_before_the_kernel_choice_resumes_on_xlas_default(
  tmp_path, data_root, monkeypatch
):
  """A checkpoint whose meta has no cpu_kernels was trained with XLA's default kernels: an 'auto'
  run resumes on those, untimed, and saves the choice from then on."""
  from jaxmm.train import cpu_kernels, loop

  config, workdir = _tiny(tmp_path, data_root, ckpt_every_steps=1, max_steps=2)
  config.model.mode = "text"
  config.data.val_size = 0
  to_meta = loop.Progress.to_meta
  monkeypatch.setattr(  # what a version without the kernel choice saved
    loop.Progress,
    "to_meta",
    lambda self: {k: v for k, v in to_meta(self).items() if k != "cpu_kernels"},
  )
  train_and_evaluate(config, workdir)
  ckpt = ckpt_lib.Checkpointer(workdir)
  assert "cpu_kernels" not in ckpt.restore_meta()
  ckpt.close()
  monkeypatch.undo()

  def no_timing(*args, **kwargs):
    raise AssertionError("a resumed run timed the kernels anew")

  monkeypatch.setattr(cpu_kernels, "choose", no_timing)
  config.train.update(cpu_kernels="auto", max_steps=3)
  train_and_evaluate(config, workdir)
  ckpt = ckpt_lib.Checkpointer(workdir)
  assert ckpt.latest_step() == 3 and ckpt.restore_meta()["cpu_kernels"] == "ynnpack"
  ckpt.close()
