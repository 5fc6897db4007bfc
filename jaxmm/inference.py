"""Restoring a trained workdir for evaluation and prediction (CPU or GPU, whatever wrote it)."""

from __future__ import annotations

import dataclasses
import json
import os

import ml_collections
import numpy as np

from jaxmm import tasks
from jaxmm import workdir as workdir_lib
from jaxmm.data.pipeline import PreparedSplit
from jaxmm.data.text import TextEncoder
from jaxmm.train import checkpoint as ckpt_lib
from jaxmm.train import evaluation, steps
from jaxmm.train import state as state_lib
from jaxmm.train import thresholds as thresholds_lib


@dataclasses.dataclass
class Restored:
  config: ml_collections.ConfigDict
  task: tasks.Task
  encoder: TextEncoder
  model_state: object
  predict_step: object
  thresholds: float | list[float] | str  # str: thresholds.EXPECTED_F1
  step: int

  def predict(self, split: PreparedSplit) -> np.ndarray:
    probs, _ = evaluation.predict_split(self.predict_step, self.model_state, split,
                                        batch_size=self.config.train.eval_batch_size,
                                        num_threads=self.config.data.num_threads)
    return probs


def parse_thresholds(value: str, task: str):
  """A --thresholds flag: one number for every label, or 'expected_f1' (multi-label only)."""
  if value == thresholds_lib.EXPECTED_F1:
    if task != "multilabel":
      raise ValueError(f"--thresholds={value!r} needs a multi-label workdir; this one is "
                       f"{task!r}: pass a number")
    return value
  try:
    thr = float(value)
  except ValueError:
    thr = None
  if thr is None or not 0.0 <= thr < 1.0:
    raise ValueError(f"--thresholds={value!r}: expected a number in [0, 1) or "
                     f"{thresholds_lib.EXPECTED_F1!r}")
  return thr


def restore(workdir: str, *, which: str = ckpt_lib.BEST, thresholds: str | None = None
            ) -> Restored:
  """Loads config.json, vocab.json, thresholds.json and the `best` (else `latest`) checkpoint.

  `thresholds` (a --thresholds flag's text) replaces those of thresholds.json: see
  parse_thresholds.
  """
  config = workdir_lib.read_config(workdir)
  task = tasks.make(config)
  override = (None if thresholds is None  # checked before the checkpoint is read
              else parse_thresholds(thresholds, task.name))
  encoder = TextEncoder.load(workdir_lib.path(workdir, workdir_lib.VOCAB_FILE))
  state = state_lib.build(config, task, vocab_size=len(encoder.vocab))
  checkpointer = ckpt_lib.Checkpointer(workdir)
  if checkpointer.latest_step(which) is None:
    which = ckpt_lib.LATEST
  state, meta = state_lib.restore(state, checkpointer, which=which)
  checkpointer.close()
  chosen = config.train.threshold
  thr_path = workdir_lib.path(workdir, workdir_lib.THRESHOLDS_FILE)
  if override is not None:
    chosen = override
  elif os.path.exists(thr_path):
    with open(thr_path) as f:
      chosen = json.load(f)["thresholds"]
  return Restored(config=config, task=task, encoder=encoder, model_state=state.model,
                  predict_step=steps.make_predict_step(state.model_def, task), thresholds=chosen,
                  step=int(meta["step"]))


def split_from_csv(restored: Restored, csv_path: str, images_dir: str, *, labelled: bool,
                   skip_bad: bool = False) -> PreparedSplit:
  """Any CSV in the layout of the workdir's task as a split, with its vocabulary and image size."""
  return restored.task.split_from_csv(restored.encoder, csv_path, images_dir, labelled=labelled,
                                      skip_bad=skip_bad)


def parse_rows(spec: str, n: int, *, source: str = "the CSV") -> np.ndarray:
  """Indices picked by a 'START:END' row range (Python slice rules, either end optional) of `n`."""
  parts = spec.split(":")
  try:
    if len(parts) != 2:
      raise ValueError
    start, end = (int(p) if p.strip() else None for p in parts)
  except ValueError:
    raise ValueError(f"--rows={spec!r}: expected START:END, e.g. 10000:12000 or 10000:") from None
  rows = np.arange(n)[slice(start, end)]
  if not len(rows):
    raise ValueError(f"--rows={spec!r} selects no row of {source} ({n} records)")
  return rows
