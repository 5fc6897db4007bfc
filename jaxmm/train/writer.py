"""One writer for metrics: JSON lines (`metrics.jsonl`) and TensorBoard events (tensorboardX)."""

from __future__ import annotations

import json
import math
import os

from tensorboardX import SummaryWriter

METRICS_FILE = "metrics.jsonl"


def _clean(v):
  v = float(v) if hasattr(v, "__float__") and not isinstance(v, (int, bool)) else v
  return None if isinstance(v, float) and not math.isfinite(v) else v


class MetricWriter:
  """Appends one JSON object per log/eval point; on resume, drops rows past the restored step so a
  resumed run's file equals an uninterrupted run's."""

  def __init__(self, workdir: str, *, resume_step: int | None = None, tensorboard: bool = True):
    self.path = os.path.join(workdir, METRICS_FILE)
    if resume_step is None:
      open(self.path, "w").close()
    elif os.path.exists(self.path):
      rows = read_metrics(self.path)
      with open(self.path, "w") as f:
        for row in rows:
          if row["step"] <= resume_step:
            f.write(json.dumps(row) + "\n")
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard")) if tensorboard else None

  def write(self, step: int, metrics: dict, **extra) -> dict:
    row = {"step": int(step), **extra, **{k: _clean(v) for k, v in metrics.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    if self._tb is not None:
      for k, v in row.items():
        if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
          self._tb.add_scalar(k, v, step)
    return row

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
