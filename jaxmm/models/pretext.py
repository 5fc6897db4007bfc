"""Pretext-task models. Each holds its tower as `.image` or `.text`, the attribute names of
`ConcatFusionClassifier`, so a pretrained tower transfers by sub-tree (jaxmm.train.transfer).

All take the batch dict, like the classifier:
  RotationClassifier(batch)  -> logits_BxK over the rotation classes (`batch['rotation']`);
  MaskedTokenModel(batch)    -> logits_BxTxV over the vocabulary at every position;
  ReconstructionModel(batch) -> the reconstruction of `batch['image']` in [0, 1], (B, H, W, 3).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmm.models.fusion import MLPHead, normalize_images


class RotationClassifier(nnx.Module):
  """image tower -> MLP head -> K rotation logits."""

  def __init__(
    self,
    image_tower: nnx.Module,
    num_classes: int,
    *,
    hidden: Sequence[int] = (),
    dropout: float = 0.0,
    rngs: nnx.Rngs,
  ):
    self.image = image_tower
    self.head = MLPHead(
      image_tower.out_features, tuple(hidden), num_classes, dropout=dropout, rngs=rngs
    )

  def __call__(self, batch: dict[str, jax.Array], *, rngs: nnx.Rngs | None = None) -> jax.Array:
    feats = self.image.encode(normalize_images(batch["image"]), rngs=rngs)
    return self.head(feats, rngs=rngs)


class MaskedTokenModel(nnx.Module):
  """text tower's per-position outputs (`sequence`) -> linear -> vocabulary logits (B, T, V)."""

  def __init__(self, text_tower: nnx.Module, vocab_size: int, *, rngs: nnx.Rngs):
    if not hasattr(text_tower, "sequence"):
      raise ValueError(
        f"{type(text_tower).__name__} has no per-position outputs (`sequence`); "
        "masked-token pretraining needs a recurrent tower ('lstm', "
        "'gru_attention')"
      )
    self.text = text_tower
    self.head = nnx.Linear(text_tower.out_features, vocab_size, rngs=rngs)

  def __call__(self, batch: dict[str, jax.Array], *, rngs: nnx.Rngs | None = None) -> jax.Array:
    return self.head(self.text.sequence(batch["tokens"], batch["length"], rngs=rngs))


class ReconstructionModel(nnx.Module):
  """A ConvAutoencoder (output='sigmoid') on uint8 images scaled to [0, 1]."""

  def __init__(self, autoencoder: nnx.Module):
    if getattr(autoencoder, "output", None) != "sigmoid":
      raise ValueError(
        "reconstruction pretraining compares with images in [0, 1]: build the "
        "autoencoder with output='sigmoid'"
      )
    self.image = autoencoder

  def __call__(self, batch: dict[str, jax.Array], *, rngs: nnx.Rngs | None = None) -> jax.Array:
    return self.image.reconstruct(to_unit(batch["image"]), rngs=rngs)


def to_unit(images_BxHxWx3: jax.Array) -> jax.Array:
  """uint8 images -> float32 in [0, 1]: the autoencoder's input and target."""
  return images_BxHxWx3.astype(jnp.float32) / 255.0
