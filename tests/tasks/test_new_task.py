"""A task defined outside jaxmm trains end to end once it has a TASKS entry: the loop, the recipe
and inference ask the task and know nothing else of it (what a new jaxmm/tasks/ file would hold)."""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from jaxmm import inference, tasks
from jaxmm.configs import tiny
from jaxmm.data import datasets
from jaxmm.recipes import train_and_evaluate
from jaxmm.tasks.base import Task
from jaxmm.train import losses
from jaxmm.train import metrics as metrics_lib
from jaxmm.train import thresholds as thresholds_lib
from jaxmm.train.writer import read_metrics


class PersonTask(Task):
  """Is there a person in the pair? COMP5329's first label as a binary task."""

  name = "person"
  metric_names = ("accuracy", "f1")
  label_key = target_key = "labels"

  def load_data(self, workdir, *, with_images=None):
    return datasets.prepare_comp5329(
      self.config.data, workdir, with_images=self._with_images(with_images)
    )

  def num_outputs(self):
    return 1

  def loss(self, logits, batch):
    return losses.binary_bce(logits, batch["labels"][:, 0])

  def probs(self, logits):
    return jax.nn.sigmoid(logits[:, 0])

  def report(self, probs, labels, thresholds):
    m = metrics_lib.binary_metrics(labels[:, 0], np.asarray(probs) > float(thresholds))
    return {"accuracy": m["accuracy"], "f1": m["f1"]}

  def tune_thresholds(self, probs, labels):
    return thresholds_lib.tune_binary_threshold(probs, labels[:, 0])


def test_a_new_task_is_one_class_and_one_registry_entry(tmp_path, monkeypatch):
  monkeypatch.setitem(tasks.TASKS, "person", PersonTask)
  config = tiny.get_config()
  config.data.root = config.data.synthetic.root = str(tmp_path / "data")
  config.task = "person"
  config.model.mode = "text"
  config.train.update(epochs=1, report=False, select_metric="val_accuracy")
  workdir = str(tmp_path / "run")
  result = train_and_evaluate(config, workdir)
  evals = [r for r in read_metrics(os.path.join(workdir, "metrics.jsonl")) if "val_f1" in r]
  assert len(evals) == 1 and 0.0 <= evals[0]["val_accuracy"] <= 1.0
  assert result["best_metric"] == evals[0]["val_accuracy"]
  thresholds = json.load(open(os.path.join(workdir, "thresholds.json")))
  assert 0.0 < thresholds["thresholds"] < 1.0
  restored = inference.restore(workdir)
  val = restored.task.load_data(workdir).val
  probs = restored.predict(val)
  assert probs.shape == (len(val),) and ((probs >= 0) & (probs <= 1)).all()
