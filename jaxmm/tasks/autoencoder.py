"""Image reconstruction (S0's autoencoder pretext task): MAE against the input in [0, 1]; at the
end of a run, a PNG grid of val images and their reconstructions."""

from __future__ import annotations

import logging
import os

import numpy as np
from PIL import Image

from jaxmm import workdir as workdir_lib
from jaxmm.models import pretext as pretext_models
from jaxmm.models import registry
from jaxmm.tasks.pretext import PretextTask
from jaxmm.train import losses

log = logging.getLogger("jaxmm")


class AutoencoderTask(PretextTask):
  name = "autoencoder"
  metric = "mae"
  target_key = "image"
  needs_images = True
  lower_is_better = ("val_loss", "val_mae")

  def num_outputs(self):
    return 0  # the image

  def build_model(self, vocab_size, rngs, *, embedding_init=None):
    model = self.config.model
    return pretext_models.ReconstructionModel(
      registry.build_image_tower(model.image, rngs=rngs, dtype=registry.compute_dtype(model))
    )

  def loss(self, recon, batch):
    return losses.mae(recon, pretext_models.to_unit(batch["image"]))

  def probs(self, recon):
    return recon

  def metrics_from(self, mean_loss, hits, count):
    return {"val_mae": mean_loss}

  def after_training(self, workdir, predict_step, best_model_state, val_split, *, vocab_size=None):
    if val_split is None or not len(val_split):
      return
    _, samples = self.evaluate_with_samples(
      predict_step, best_model_state(), val_split, vocab_size=vocab_size, num_samples=16
    )
    path = save_reconstruction_grid(
      samples["image"],
      samples["output"],
      workdir_lib.path(workdir, workdir_lib.RECONSTRUCTIONS_FILE),
    )
    log.info("autoencoder: val reconstructions (odd rows) in %s", path)


def save_reconstruction_grid(
  images_NxHxWx3: np.ndarray, recons_NxHxWx3: np.ndarray, path: str, *, columns: int = 8
) -> str:
  """PNG with the originals (uint8) and their reconstructions ([0, 1] floats) in alternating rows
  of `columns` images; returns the path."""
  images = np.asarray(images_NxHxWx3, np.uint8)
  recons = np.clip(np.rint(np.asarray(recons_NxHxWx3, np.float32) * 255.0), 0, 255).astype(np.uint8)
  if images.shape != recons.shape or images.ndim != 4 or len(images) == 0:
    raise ValueError(
      f"need N >= 1 images and reconstructions of one shape; got {images.shape} and {recons.shape}"
    )
  n, h, w, c = images.shape
  rows = -(-n // columns)
  grid = np.full((rows * 2 * h, min(n, columns) * w, c), 255, np.uint8)
  for i in range(n):
    r, col = divmod(i, columns)
    grid[2 * r * h : (2 * r + 1) * h, col * w : (col + 1) * w] = images[i]
    grid[(2 * r + 1) * h : (2 * r + 2) * h, col * w : (col + 1) * w] = recons[i]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(grid).save(path)
  return path
