"""One writer for metrics: JSON lines (`metrics.jsonl`) and TensorBoard events (tensorboardX)."""

from __future__ import annotations

import json
import math
import os

from jaxmm.workdir import METRICS_FILE, TENSORBOARD_DIR


def _clean(v):
  v = float(v) if hasattr(v, "__float__") and not isinstance(v, (int, bool)) else v
  return None if isinstance(v, float) and not math.isfinite(v) else v


class MetricWriter:
  """Appends one JSON object per log/eval point. On resume it keeps the first `keep_rows` rows
  (the count the checkpoint recorded) or, without it, the rows up to `resume_step`, so a resumed
  run's file equals an uninterrupted run's.

  writes=False (the processes other than 0 of a run on several hosts) writes nothing but counts
  the rows alike, so every process's checkpoint meta agrees.
  """

  def __init__(
    self,
    workdir: str,
    *,
    resume_step: int | None = None,
    keep_rows: int | None = None,
    tensorboard: bool = True,
    writes: bool = True,
  ):
    self.path = os.path.join(workdir, METRICS_FILE)
    self.writes = writes
    rows: list[dict] = []
    if (resume_step is not None or keep_rows is not None) and os.path.exists(self.path):
      rows = read_metrics(self.path)
      rows = (
        rows[:keep_rows] if keep_rows is not None else [r for r in rows if r["step"] <= resume_step]
      )
    if writes:  # replace, not rewrite in place: a kill here must not lose the history
      with open(self.path + ".tmp", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
      os.replace(self.path + ".tmp", self.path)
    self.num_rows = len(rows)
    self._tb = None
    if tensorboard and writes:
      from tensorboardX import SummaryWriter  # here: it imports torch where torch is installed

      self._tb = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR))

  def write(self, step: int, metrics: dict, **extra) -> dict:
    row = {"step": int(step), **extra, **{k: _clean(v) for k, v in metrics.items()}}
    if self.writes:
      with open(self.path, "a") as f:
        f.write(json.dumps(row) + "\n")
    self.num_rows += 1
    if self._tb is not None:
      for k, v in row.items():
        if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
          self._tb.add_scalar(k, v, step)
    return row

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(path: str) -> list[dict]:
  """The rows of a metrics.jsonl; a cut-off last line (a kill in mid-write) is dropped."""
  with open(path) as f:
    lines = [(i, line) for i, line in enumerate(f, 1) if line.strip()]
  rows = []
  for i, line in lines:
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError as e:
      if i == lines[-1][0] and not line.endswith("\n"):
        break
      raise ValueError(f"{path}:{i}: not a JSON object ({e}); fix or delete this line") from None
  return rows
