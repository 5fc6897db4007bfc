"""The tasks jaxmm trains, by `config.task`: one module each, one entry each in TASKS.

A new task is one file here (a Task subclass, jaxmm.tasks.base) and one line in TASKS.
"""

from __future__ import annotations

from jaxmm.tasks.autoencoder import AutoencoderTask
from jaxmm.tasks.base import Task
from jaxmm.tasks.matching import MatchingTask
from jaxmm.tasks.mlm import MaskedTokenTask
from jaxmm.tasks.multilabel import MultilabelTask
from jaxmm.tasks.rotation import RotationTask

TASKS: dict[str, type[Task]] = {
  "multilabel": MultilabelTask,
  "matching": MatchingTask,
  "rotation": RotationTask,
  "mlm": MaskedTokenTask,
  "autoencoder": AutoencoderTask,
}


def make(config) -> Task:
  """The task `config.task` names, for this config."""
  name = config.task
  if name not in TASKS:
    raise ValueError(f"config.task={name!r} is not a task; known: {sorted(TASKS)}")
  return TASKS[name](config)


__all__ = ["TASKS", "Task", "make"]
