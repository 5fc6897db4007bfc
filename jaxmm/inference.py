"""Restoring a trained workdir for evaluation and prediction (CPU or GPU, whatever wrote it)."""

from __future__ import annotations

import dataclasses
import json
import os

import ml_collections
import numpy as np

from jaxmm import config as config_lib
from jaxmm.data import datasets
from jaxmm.data.pipeline import PreparedSplit
from jaxmm.data.text import TextEncoder
from jaxmm.train import checkpoint as ckpt_lib
from jaxmm.train import evaluation, loop, steps
from jaxmm.train import thresholds as thresholds_lib


@dataclasses.dataclass
class Restored:
  config: ml_collections.ConfigDict
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
  path = os.path.join(workdir, config_lib.CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} a jaxmm workdir? Train first.")
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  override = (None if thresholds is None  # checked before the checkpoint is read
              else parse_thresholds(thresholds, loop.task_spec(config).name))
  encoder = TextEncoder.load(os.path.join(workdir, datasets.VOCAB_FILE))
  graphdefs, state = loop.build_state(config, vocab_size=len(encoder.vocab), steps_per_epoch=1,
                                      total_steps=1)
  ckpt = ckpt_lib.Checkpointer(workdir)
  if ckpt.latest_step(which) is None:
    which = ckpt_lib.LATEST
  state, meta = ckpt.restore(state, which=which)
  ckpt.close()
  chosen = config.train.threshold
  thr_path = os.path.join(workdir, loop.THRESHOLDS_FILE)
  if override is not None:
    chosen = override
  elif os.path.exists(thr_path):
    with open(thr_path) as f:
      chosen = json.load(f)["thresholds"]
  task = loop.build_task_for_inference(config)
  return Restored(config=config, encoder=encoder, model_state=steps.model_state_of(state),
                  predict_step=steps.make_predict_step(graphdefs[0], task), thresholds=chosen,
                  step=int(meta["step"]))


def split_from_csv(restored: Restored, csv_path: str, images_dir: str, *, labelled: bool,
                   skip_bad: bool = False) -> PreparedSplit:
  """Any CSV in the layout of the workdir's task as a split, with its vocabulary and image size."""
  return loop.task_spec(restored.config).split_from_csv(
      restored.config, restored.encoder, csv_path, images_dir, labelled=labelled,
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
