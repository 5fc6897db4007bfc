"""Pretext tasks for the train / predict steps, their validation metrics, and the autoencoder's PNG.

What a loop needs for `config.task` in ('rotation', 'mlm', 'autoencoder'):
  model     = jaxmm.models.pretext.build_pretext_model(task, config.model, vocab_size=...,
                                                       num_classes=extra_map.num_classes, rngs=...)
  extra_map = jaxmm.data.pretext.pretext_map(task, config.pretext, vocab_size=...)  # None for AE
  task_obj  = pretext_task(task)                       # for steps.make_train/predict_step
  batches   = pipeline.train_dataset(..., extra_map=extra_map)
  metrics   = evaluate_pretext(predict_step, model_state, val_split, task=task,
                               extra_map=extra_map, batch_size=...)
  metric, mode = SELECT_METRIC[task]                    # early stopping / best checkpoint
  save_reconstruction_grid(...)                         # autoencoder, with evaluate's samples
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxmm.data import pipeline
from jaxmm.train import losses
from jaxmm.train.steps import Task

# The validation metric that picks the best checkpoint, and whether higher is better.
SELECT_METRIC = {"rotation": ("val_rotation_accuracy", "max"),
                 "mlm": ("val_mlm_accuracy", "max"),
                 "autoencoder": ("val_mae", "min")}


def _unit_images(batch) -> jax.Array:
  return batch["image"].astype(jnp.float32) / 255.0


def pretext_task(name: str) -> Task:
  """The Task (loss on the model output and the batch, and what predict_step returns) of `name`.

  rotation: softmax CE against `rotation`, returns probabilities (B, K); mlm: CE at the masked
  positions (`mlm_targets`, `mlm_mask`), returns predicted ids (B, T) rather than (B, T, V)
  probabilities; autoencoder: MAE against the input image in [0, 1], returns the reconstruction.
  """
  if name == "rotation":
    return Task("rotation", lambda logits, b: losses.softmax_ce(logits, b["rotation"]),
                jax.nn.softmax, "rotation")
  if name == "mlm":
    return Task("mlm", lambda logits, b: losses.masked_token_ce(logits, b["mlm_targets"],
                                                                b["mlm_mask"]),
                lambda logits: jnp.argmax(logits, axis=-1).astype(jnp.int32), "mlm_targets")
  if name == "autoencoder":
    return Task("autoencoder", lambda recon, b: losses.mae(recon, _unit_images(b)), lambda x: x,
                "image")
  raise ValueError(f"unknown pretext task {name!r}; expected one of {sorted(SELECT_METRIC)}")


def evaluate_pretext(predict_step, model_state, split: pipeline.PreparedSplit, *, task: str,
                     extra_map, batch_size: int,
                     num_threads: int = 2, num_samples: int = 0
                     ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """Runs `predict_step` (steps.make_predict_step(graphdef, pretext_task(task))) over `split`
  with the task's fixed-seed eval transform -> (metrics, samples).

  metrics: val_loss and val_rotation_accuracy | val_mlm_accuracy (over masked tokens) | val_mae.
  samples: the first `num_samples` inputs and outputs (`image`, `output`), e.g. for a PNG grid.
  """
  ds = pipeline.eval_dataset(split, batch_size=batch_size, extra_map=extra_map)
  loss_sum = hits = count = 0.0
  n = 0
  samples: dict[str, list] = {"image": [], "output": []}
  for batch in pipeline.iterate(ds, num_threads=num_threads):
    out, loss_B = jax.device_get(predict_step(model_state, batch))
    keep = np.asarray(batch["mask"]) > 0
    loss_sum += float(np.asarray(loss_B)[keep].sum())
    n += int(keep.sum())
    if task == "rotation":
      hits += float((np.argmax(out, -1) == batch["rotation"])[keep].sum())
      count += float(keep.sum())
    elif task == "mlm":
      masked = (batch["mlm_mask"] > 0) & keep[:, None]
      hits += float(((out == batch["mlm_targets"]) & masked).sum())
      count += float(masked.sum())
    have = len(samples["image"])
    if have < num_samples and "image" in batch:
      take = np.flatnonzero(keep)[:num_samples - have]
      samples["image"].extend(batch["image"][take])
      samples["output"].extend(np.asarray(out)[take])
  metrics = {"val_loss": loss_sum / max(n, 1)}
  if task == "rotation":
    metrics["val_rotation_accuracy"] = hits / max(count, 1.0)
  elif task == "mlm":
    metrics["val_mlm_accuracy"] = hits / max(count, 1.0)
  else:
    metrics["val_mae"] = metrics["val_loss"]
  return metrics, {k: np.stack(v) if v else np.zeros((0,)) for k, v in samples.items()}


def save_reconstruction_grid(images_NxHxWx3: np.ndarray, recons_NxHxWx3: np.ndarray, path: str,
                             *, columns: int = 8) -> str:
  """PNG with the originals (uint8) and their reconstructions ([0, 1] floats) in alternating rows
  of `columns` images; returns the path."""
  images = np.asarray(images_NxHxWx3, np.uint8)
  recons = np.clip(np.rint(np.asarray(recons_NxHxWx3, np.float32) * 255.0), 0, 255).astype(
      np.uint8)
  if images.shape != recons.shape or images.ndim != 4 or len(images) == 0:
    raise ValueError(f"need N >= 1 images and reconstructions of one shape; got {images.shape} "
                     f"and {recons.shape}")
  n, h, w, c = images.shape
  rows = -(-n // columns)
  grid = np.full((rows * 2 * h, min(n, columns) * w, c), 255, np.uint8)
  for i in range(n):
    r, col = divmod(i, columns)
    grid[2 * r * h:(2 * r + 1) * h, col * w:(col + 1) * w] = images[i]
    grid[(2 * r + 1) * h:(2 * r + 2) * h, col * w:(col + 1) * w] = recons[i]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(grid).save(path)
  return path
