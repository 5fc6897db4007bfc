"""The pretext tasks as TaskSpecs: `config.task` = 'rotation' | 'mlm' | 'autoencoder'.

Data: the images or captions of the dataset `pretext.data` names ('matching' = S0 layout,
'comp5329'), each image (rotation, autoencoder) or caption (mlm) once: S0 pairs repeat both.
Targets come from the task's grain transform (jaxmm.data.pretext), applied with a per-example RNG in
training and a fixed seed in evaluation. No thresholds; the autoencoder writes a PNG grid of val
reconstructions (RECONSTRUCTIONS_FILE) at the end. The towers transfer by sub-tree into a
downstream run (`init.image_from` / `init.text_from`, jaxmm.train.transfer).
"""

from __future__ import annotations

import logging
import os

import numpy as np

from jaxmm.data import pretext as pretext_data
from jaxmm.data.pipeline import PreparedSplit
from jaxmm.models import pretext as pretext_models
from jaxmm.train import pretext, tasks

RECONSTRUCTIONS_FILE = "reconstructions.png"
DATA = {"matching": "matching", "comp5329": "multilabel"}  # pretext.data -> the layout's task
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


class PretextTask(tasks.TaskSpec):
  tunes_thresholds = False
  pretext = True
  label_key = ""  # the targets are made by the transform, not read from the split

  def __init__(self, name: str, metric: str, *, needs_images: bool):
    self.name = name
    self.metric_names = (metric,)
    self.needs_images = needs_images
    self.lower_is_better = ("val_loss",) + (("val_mae",) if metric == "mae" else ())

  def _data_spec(self, config) -> tasks.TaskSpec:
    return tasks.task_by_name(self.layout(config))

  def layout(self, config):
    data = config.get("pretext", {}).get("data", "matching")
    if data not in DATA:
      raise ValueError(f"pretext.data={data!r}: use 'matching' (S0 layout) or 'comp5329'")
    return DATA[data]

  def load_data(self, config, workdir):
    data = self._data_spec(config).prepare(config.data, workdir, with_images=self.needs_images)
    key = _image_key if self.needs_images else _caption_key
    n = len(data.train)
    data.train, data.val = unique_rows(data.train, key), unique_rows(data.val, key)
    log.info("%s pretext: %d distinct %s of %d train examples", self.name, len(data.train),
             "images" if self.needs_images else "captions", n)
    return data

  def prepare(self, cfg_data, workdir, *, with_images):
    raise NotImplementedError("pretext tasks read their data with load_data(config, workdir)")

  def check_config(self, config):
    self.layout(config)  # validates pretext.data
    super().check_config(config)

  def num_outputs(self, config):
    if self.name == "rotation":
      return len(config.pretext.rotation_angles)
    return 0  # mlm: the vocabulary; autoencoder: the image

  def build_model(self, config, num_outputs, vocab_size, rngs, *, embedding_init=None):
    return pretext_models.build_pretext_model(self.name, config.model, vocab_size=vocab_size,
                                              num_classes=max(num_outputs, 2), rngs=rngs,
                                              embedding_init=embedding_init)

  def step_task(self, config, train_split=None):
    return pretext.pretext_task(self.name)

  def extra_map(self, config, vocab_size):
    return pretext_data.pretext_map(self.name, config.get("pretext"), vocab_size=vocab_size)

  def _evaluate(self, predict_step, model_state, split, config, vocab_size, num_samples=0):
    return pretext.evaluate_pretext(
        predict_step, model_state, split, task=self.name,
        extra_map=self.extra_map(config, vocab_size), batch_size=config.train.eval_batch_size,
        num_threads=config.data.num_threads, num_samples=num_samples)

  def evaluate(self, predict_step, model_state, split, config, *, vocab_size=None):
    return self._evaluate(predict_step, model_state, split, config, vocab_size)[0]

  def after_training(self, config, workdir, predict_step, best_model_state, val_split, *,
                     vocab_size=None):
    if self.name != "autoencoder" or val_split is None or not len(val_split):
      return
    _, samples = self._evaluate(predict_step, best_model_state(), val_split, config, vocab_size,
                                num_samples=16)
    path = pretext.save_reconstruction_grid(samples["image"], samples["output"],
                                            os.path.join(workdir, RECONSTRUCTIONS_FILE))
    log.info("autoencoder: val reconstructions (odd rows) in %s", path)

  def split_from_csv(self, config, encoder, csv_path, images_dir, *, labelled, skip_bad=False):
    # The pretext targets come from the transform: the CSV's labels are not needed.
    return self._data_spec(config).split_from_csv(config, encoder, csv_path, images_dir,
                                                  labelled=False, skip_bad=skip_bad)

  def csv_is_labelled(self, csv_path):
    return True

  def write_predictions(self, path, split, probs, thresholds):
    raise ValueError(f"prediction is not defined for the pretext task {self.name!r}")


for _spec in (PretextTask("rotation", "rotation_accuracy", needs_images=True),
              PretextTask("mlm", "mlm_accuracy", needs_images=False),
              PretextTask("autoencoder", "mae", needs_images=True)):
  tasks.TASKS[_spec.name] = _spec
