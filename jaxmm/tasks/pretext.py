"""What the pretext tasks (rotation, mlm, autoencoder) share: their data and their evaluation.

Data: the images or captions of the dataset `pretext.data` names ('matching' = S0 layout,
'comp5329'), each image (rotation, autoencoder) or caption (mlm) once: S0 pairs repeat both.
Targets come from the task's grain transform (jaxmm.data.pretext), applied with a per-example RNG
in training and a fixed seed in evaluation. No thresholds and no predictions; the towers transfer
by sub-tree into a downstream run (`init.image_from` / `init.text_from`, jaxmm.train.transfer).
"""

from __future__ import annotations

import logging

import jax
import numpy as np

from jaxmm.data import pipeline
from jaxmm.data.pipeline import PreparedSplit
from jaxmm.tasks.base import Task
from jaxmm.tasks.matching import MatchingTask
from jaxmm.tasks.multilabel import MultilabelTask

# pretext.data -> the task whose layout, data preparation and CSV reading the pretext task uses
DATA_TASKS = {"matching": MatchingTask, "comp5329": MultilabelTask}
log = logging.getLogger("jaxmm")


def unique_rows(split: PreparedSplit | None, key_of) -> PreparedSplit | None:
  """The first example of each distinct `key_of(split, i)`, in order."""
  if split is None:
    return None
  seen, keep = set(), []
  for i in range(len(split)):
    k = key_of(split, i)
    if k not in seen:
      seen.add(k)
      keep.append(i)
  return split.take(keep)


def _image_key(split, i):
  return int(split.image_index[i])


def _caption_key(split, i):
  return split.arrays["tokens"][i].tobytes()


class PretextTask(Task):
  tunes_thresholds = False
  predicts = False
  label_key = ""  # the targets are made by the transform, not read from the split
  needs_images: bool
  metric: str  # the task's own val metric (without 'val_')

  def __init__(self, config):
    super().__init__(config)
    self.metric_names = (self.metric,)

  @property
  def data_task(self) -> Task:
    data = self.config.pretext.data
    if data not in DATA_TASKS:
      raise ValueError(f"pretext.data={data!r}: use 'matching' (S0 layout) or 'comp5329'")
    return DATA_TASKS[data](self.config)

  @property
  def layout(self):
    return self.data_task.layout

  def check_config(self):
    self.data_task  # noqa: B018 -- validates pretext.data
    super().check_config()

  def load_data(self, workdir, *, with_images=None):
    data = self.data_task.load_data(workdir, with_images=self.needs_images)
    key = _image_key if self.needs_images else _caption_key
    n = len(data.train)
    data.train, data.val = unique_rows(data.train, key), unique_rows(data.val, key)
    log.info(
      "%s pretext: %d distinct %s of %d train examples",
      self.name,
      len(data.train),
      "images" if self.needs_images else "captions",
      n,
    )
    return data

  def batch_counts(self, output, batch, keep_B) -> tuple[float, float]:
    """(hits, count) of the task's accuracy in one eval batch; (0, 0) when it has none."""
    return 0.0, 0.0

  def metrics_from(self, mean_loss: float, hits: float, count: float) -> dict[str, float]:
    return {f"val_{self.metric}": hits / max(count, 1.0)}

  def evaluate_with_samples(
    self, predict_step, model_state, split, *, vocab_size, num_samples: int = 0
  ) -> tuple[dict, dict]:
    """-> (metrics, samples): val_loss and the task's metric over `split` with the fixed-seed
    eval transform; samples: the first `num_samples` inputs and outputs (`image`, `output`)."""
    ds = pipeline.eval_dataset(
      split, batch_size=self.config.train.eval_batch_size, extra_map=self.extra_map(vocab_size)
    )
    loss_sum = hits = count = 0.0
    n = 0
    samples: dict[str, list] = {"image": [], "output": []}
    for batch in pipeline.iterate(ds, num_threads=self.config.data.num_threads):
      out, loss_B = jax.device_get(predict_step(model_state, batch))
      keep = np.asarray(batch["mask"]) > 0
      loss_sum += float(np.asarray(loss_B)[keep].sum())
      n += int(keep.sum())
      h, c = self.batch_counts(out, batch, keep)
      hits, count = hits + h, count + c
      have = len(samples["image"])
      if have < num_samples and "image" in batch:
        take = np.flatnonzero(keep)[: num_samples - have]
        samples["image"].extend(batch["image"][take])
        samples["output"].extend(np.asarray(out)[take])
    mean_loss = loss_sum / max(n, 1)
    metrics = {"val_loss": mean_loss, **self.metrics_from(mean_loss, hits, count)}
    return metrics, {k: np.stack(v) if v else np.zeros((0,)) for k, v in samples.items()}

  def evaluate(self, predict_step, model_state, split, *, vocab_size=None):
    return self.evaluate_with_samples(predict_step, model_state, split, vocab_size=vocab_size)[0]

  def split_from_csv(self, encoder, csv_path, images_dir, *, labelled, skip_bad=False, rows=None):
    # The pretext targets come from the transform: the CSV's labels are not needed.
    return self.data_task.split_from_csv(
      encoder, csv_path, images_dir, labelled=False, skip_bad=skip_bad, rows=rows
    )

  def csv_is_labelled(self, csv_path):
    return True

  def default_images_dir(self, csv_path):
    return self.data_task.default_images_dir(csv_path)
