"""Several hosts: configs/demo.py (shrunk) trained by 2 processes x 2 CPU devices into one workdir
ends where 1 process x 4 devices does; process 0 alone writes the workdir's files; after a kill -9
of both processes the same commands resume the run, and a SIGTERM to one process stops both at
the same step.

The processes are real `train.py` runs joined by jax.distributed (gloo collectives on the CPU).
"""

from __future__ import annotations

import glob
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from jaxmm.train.writer import read_metrics
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

# The demo at test size: 192 synthetic 16 px images, a ResNet of one block, 10 steps an
# epoch, a checkpoint every 4 steps. Dropout stays on: equal runs need equal global batches.
CONFIG = """
from jaxmm.configs import demo


def get_config():
  c = demo.get_config()
  c.data.synthetic.update(n_train=192, n_test=32, image_size=16)
  c.data.update(image_size=16, max_len=8, val_size=32)
  c.model.image.update(stem="imagenet", num_filters=8, stage_sizes=(1,))
  c.model.text.update(embed_dim=16, hidden_size=16)
  c.model.head.hidden = (32,)
  c.train.update(batch_size=16, eval_batch_size=16, epochs=2, log_every=4, ckpt_every_steps=4,
                 progress_bar=False, report=False)
  return c
"""
TOTAL_STEPS = 20
WALL_CLOCK = ("elapsed_s",)


@pytest.fixture
def procs():
  """Processes a test started; any still running when it ends (a failed assert) are killed."""
  started: list[subprocess.Popen] = []
  yield started
  for p in started:
    if p.poll() is None:
      p.kill()
      p.wait()


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(procs, tmp_path, name: str, *, processes: int, devices: int) -> list[subprocess.Popen]:
  """`train.py` as `processes` processes of `devices` CPU devices each, into tmp_path/name."""
  env = {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
    "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} "
    f"--xla_force_host_platform_device_count={devices}".strip(),
  }
  data = tmp_path / f"data_{name}"
  cmd = [
    sys.executable,
    "train.py",
    f"--config={tmp_path / 'config.py'}",
    f"--workdir={tmp_path / name}",
    f"--config.data.root={data}",
    f"--config.data.synthetic.root={data}",
  ]
  if processes > 1:
    cmd += [
      "--config.train.distributed=True",
      f"--config.train.coordinator_address=127.0.0.1:{_free_port()}",
      f"--config.train.num_processes={processes}",
    ]
  started = []
  for i in range(processes):
    # Output to files, not pipes: nobody reads a pipe while we poll, and a full one blocks.
    out, err = (open(tmp_path / f"{name}.p{i}.{s}", "a") for s in ("out", "err"))
    flags = [f"--config.train.process_id={i}"] if processes > 1 else []
    started.append(subprocess.Popen(cmd + flags, cwd=ROOT, stdout=out, stderr=err, env=env))
  procs.extend(started)
  return started


def _log(tmp_path, name: str, i: int = 0, stream: str = "err") -> str:
  return (tmp_path / f"{name}.p{i}.{stream}").read_text()


def _finish(run, tmp_path, name: str, timeout: float = 300) -> None:
  for i, p in enumerate(run):
    assert p.wait(timeout) == 0, _log(tmp_path, name, i)[-3000:]


def _wait_for(cond, run, tmp_path, name: str, what: str, timeout: float = 300) -> None:
  t0 = time.time()
  while not cond():
    for i, p in enumerate(run):
      if p.poll() is not None:
        log = _log(tmp_path, name, i)[-3000:]
        pytest.fail(f"process {i} ended (rc {p.returncode}) before {what}:\n{log}")
    assert time.time() - t0 < timeout, f"timed out waiting for {what}"
    time.sleep(0.005)


def _steps(workdir) -> list[int]:
  d = os.path.join(workdir, "checkpoints", "latest")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _without_wall_clock(rows):
  return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in rows]


def test_two_hosts_train_like_one_and_resume_after_kill(tmp_path, procs):
  (tmp_path / "config.py").write_text(CONFIG)
  one = _start(procs, tmp_path, "one", processes=1, devices=4)  # the reference, beside
  two = _start(procs, tmp_path, "two", processes=2, devices=2)
  workdir = tmp_path / "two"

  # 1. kill -9 of both processes once a checkpoint is written, well before the end.
  _wait_for(lambda: _steps(workdir), two, tmp_path, "two", "a checkpoint")
  for p in two:
    p.send_signal(signal.SIGKILL)
  assert [p.wait(60) for p in two] == [-signal.SIGKILL] * 2
  killed = max(_steps(workdir))
  assert killed < TOTAL_STEPS and not (workdir / "thresholds.json").exists()

  # 2. The same commands resume; SIGTERM to process 1 alone once the run is past the kill: both
  # save the same step, say so and exit with 0.
  two = _start(procs, tmp_path, "two", processes=2, devices=2)
  _wait_for(lambda: max(_steps(workdir)) > killed, two, tmp_path, "two", "a step past the kill")
  two[1].send_signal(signal.SIGTERM)
  _finish(two, tmp_path, "two")
  for i in range(2):
    assert f"resumed from step {killed}" in _log(tmp_path, "two", i)
  said = {_log(tmp_path, "two", i, "out").splitlines()[-1].split(";")[0] for i in range(2)}
  assert len(said) == 1 and said.pop().startswith("stopped by signal 15 at step "), said
  stopped = max(_steps(workdir))
  assert killed < stopped <= TOTAL_STEPS
  assert not (workdir / "thresholds.json").exists()  # not finished: nothing final written

  # 3. The same commands finish the run.
  two = _start(procs, tmp_path, "two", processes=2, devices=2)
  _finish(two, tmp_path, "two")
  _finish(one, tmp_path, "one")
  assert f"resumed from step {stopped}" in _log(tmp_path, "two")
  best = [_log(tmp_path, "two", i, "out").splitlines()[-1] for i in range(2)]
  assert best[0] == best[1] and best[0].startswith("best val_samples_f1"), best

  # One writer: every row once, in the order of the one-process run, with its values.
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == len(set(lines))
  got, want = (
    read_metrics(str(workdir / "metrics.jsonl")),
    read_metrics(str(tmp_path / "one" / "metrics.jsonl")),
  )
  assert [r["step"] for r in got] == [r["step"] for r in want]
  assert [r["step"] for r in got if "val_loss" in r] == [10, 20]
  for g, w in zip(_without_wall_clock(got), _without_wall_clock(want)):
    assert g.keys() == w.keys()
    for k, v in w.items():
      assert v is None or abs(g[k] - v) < 1e-3, (k, g, w)
  # Three runs of process 0 (killed, stopped, finished): three event files; process 1 opened none.
  assert len(glob.glob(str(workdir / "tensorboard" / "events.*"))) == 3
  assert (workdir / "thresholds.json").exists() and (workdir / "vocab.json").exists()
