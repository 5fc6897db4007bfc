"""Rotation prediction (S0's image pretext task): which of K angles was the image turned by?"""

from __future__ import annotations

import jax
import numpy as np

from jaxmm.data import pretext as pretext_data
from jaxmm.models import pretext as pretext_models
from jaxmm.models import registry
from jaxmm.tasks.pretext import PretextTask
from jaxmm.train import losses


class RotationTask(PretextTask):
  name = "rotation"
  metric = "rotation_accuracy"
  target_key = "rotation"
  needs_images = True

  def num_outputs(self):
    return len(self.config.pretext.rotation_angles)

  def extra_map(self, vocab_size):
    p = self.config.pretext
    return pretext_data.Rotation(tuple(p.rotation_angles), fill=p.rotation_fill)

  def build_model(self, vocab_size, rngs, *, embedding_init=None):
    model = self.config.model
    return pretext_models.RotationClassifier(
      registry.build_image_tower(model.image, rngs=rngs, dtype=registry.compute_dtype(model)),
      max(self.num_outputs(), 2),
      hidden=tuple(model.head.hidden),
      dropout=model.head.dropout,
      rngs=rngs,
    )

  def loss(self, logits, batch):
    return losses.softmax_ce(logits, batch["rotation"])

  def probs(self, logits):
    return jax.nn.softmax(logits)

  def batch_counts(self, probs, batch, keep_B):
    hits = (np.argmax(probs, -1) == batch["rotation"])[keep_B].sum()
    return float(hits), float(keep_B.sum())
