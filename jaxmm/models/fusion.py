"""Fusion of an image tower and a text tower into one classifier.

The classifier holds the tower objects themselves (`.image`, `.text`), so a tower pretrained
elsewhere transfers by sub-tree, and `mode` switches to image-only or text-only ablations that use
the very same towers and head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmm.data.images import MEAN_RGB, STD_RGB

MODES = ("fused", "image", "text")


def normalize_images(images_BxHxWx3: jax.Array) -> jax.Array:
  """uint8 (or [0,255] float) images -> float32 normalised with ImageNet mean/std, on device."""
  x = images_BxHxWx3.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(MEAN_RGB)) / jnp.asarray(STD_RGB)


class MLPHead(nnx.Module):
  """Dense -> [norm] -> ReLU -> dropout, repeated, then a linear output layer."""

  def __init__(
    self,
    in_features: int,
    hidden: Sequence[int],
    out_features: int,
    *,
    dropout: float = 0.0,
    norm: str | None = None,
    dtype: Any = None,
    rngs: nnx.Rngs,
  ):
    if norm not in (None, "", "batch", "layer"):
      raise ValueError(f"norm must be None, 'batch' or 'layer', got {norm!r}")
    dims = [in_features, *hidden]
    self.layers = nnx.List(
      [nnx.Linear(a, b, dtype=dtype, rngs=rngs) for a, b in zip(dims, dims[1:])]
    )
    if norm == "batch":
      self.norms = nnx.List([nnx.BatchNorm(b, dtype=dtype, rngs=rngs) for b in hidden])
    elif norm == "layer":
      self.norms = nnx.List([nnx.LayerNorm(b, dtype=dtype, rngs=rngs) for b in hidden])
    else:
      self.norms = None
    self.dropout = nnx.Dropout(dropout)
    self.out = nnx.Linear(dims[-1], out_features, dtype=dtype, rngs=rngs)

  def __call__(self, x_BxD: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    for i, layer in enumerate(self.layers):
      x_BxD = layer(x_BxD)
      if self.norms is not None:
        x_BxD = self.norms[i](x_BxD)
      x_BxD = self.dropout(nnx.relu(x_BxD), rngs=rngs)
    return self.out(x_BxD).astype(jnp.float32)  # logits (and so the loss) in float32


def set_output_bias(model: nnx.Module, bias_L) -> int:
  """Sets the output-layer bias of every MLPHead in `model` with len(bias_L) outputs (a late
  fusion's two branches each have one) -> how many were set."""
  bias_L = jnp.asarray(bias_L, jnp.float32)
  heads = [
    m
    for _, m in nnx.iter_modules(model)
    if isinstance(m, MLPHead) and m.out.out_features == bias_L.shape[0]
  ]
  for head in heads:
    head.out.bias[...] = bias_L.astype(head.out.bias.dtype)
  return len(heads)


class ConcatFusionClassifier(nnx.Module):
  """logits = head([image.encode(image); text.encode(tokens, length)]).

  In 'image' or 'text' mode only that tower is built, so an ablation is a real unimodal model.
  dtype: the head's compute dtype (the towers get theirs from the registry); logits are float32.
  """

  def __init__(
    self,
    image_tower: nnx.Module | None,
    text_tower: nnx.Module | None,
    num_outputs: int,
    *,
    hidden: Sequence[int] = (512,),
    dropout: float = 0.0,
    feature_dropout: float = 0.0,
    norm: str | None = None,
    interaction_dim: int = 0,
    dtype: Any = None,
    rngs: nnx.Rngs,
  ):
    if image_tower is None and text_tower is None:
      raise ValueError("at least one tower is needed")
    self.image = image_tower
    self.text = text_tower
    in_features = (image_tower.out_features if image_tower is not None else 0) + (
      text_tower.out_features if text_tower is not None else 0
    )
    # interaction_dim > 0 (fused only): both towers are projected to that size and the head also
    # sees their product and distance, the multiplicative term a concat-MLP struggles to learn
    # (what decides whether a caption matches an image).
    interact = bool(interaction_dim) and image_tower is not None and text_tower is not None
    self.interaction = (
      nnx.Dict(
        image=nnx.Linear(image_tower.out_features, interaction_dim, rngs=rngs),
        text=nnx.Linear(text_tower.out_features, interaction_dim, rngs=rngs),
      )
      if interact
      else None
    )
    in_features += 2 * interaction_dim if interact else 0
    self.feature_dropout = nnx.Dropout(feature_dropout)
    self.head = MLPHead(
      in_features, hidden, num_outputs, dropout=dropout, norm=norm, dtype=dtype, rngs=rngs
    )

  def features(self, batch: dict[str, jax.Array], *, rngs: nnx.Rngs | None = None) -> jax.Array:
    """The concatenated tower features (B, D_image + D_text [+ 2 D_interaction]): the head input."""
    return self._features(batch, rngs)[0]

  def _features(self, batch, rngs):
    feats = []
    if self.image is not None:
      feats.append(self.image.encode(normalize_images(batch["image"]), rngs=rngs))
    if self.text is not None:
      feats.append(self.text.encode(batch["tokens"], batch["length"], rngs=rngs))
    pair = None
    if self.interaction is not None:
      pair = (self.interaction["image"](feats[0]), self.interaction["text"](feats[1]))
      feats += [pair[0] * pair[1], jnp.abs(pair[0] - pair[1])]
    return jnp.concatenate(feats, axis=-1), pair

  def __call__(
    self, batch: dict[str, jax.Array], *, rngs: nnx.Rngs | None = None, with_pair: bool = False
  ):
    """logits (B, num_outputs); with `with_pair`, also the projected (image_BxD, text_BxD) of the
    interaction layer (for an in-batch contrastive loss)."""
    feats, pair = self._features(batch, rngs)
    logits = self.head(self.feature_dropout(feats, rngs=rngs), rngs=rngs)
    return (logits, pair) if with_pair else logits


class LateFusionClassifier(nnx.Module):
  """logits = w_image * image_only(batch) + w_text * text_only(batch) + bias, per class.

  Two complete unimodal classifiers (each a tower plus its own head) whose logits are mixed by a
  per-class linear layer. Trained in two stages (`train.two_stage`), each branch learns alone for
  as long as it needs, so the fast-learning text tower cannot drown out the slow image tower; the
  mixing weights are then fitted on val logits (jaxmm.recipes.two_stage). `.image` / `.text` are the
  branches' towers, so pretrained weights and tower transfer work as for concat fusion.
  """

  def __init__(
    self, image_only: ConcatFusionClassifier, text_only: ConcatFusionClassifier, num_outputs: int
  ):
    self.image_only = image_only
    self.text_only = text_only
    # Equal weights until fitted: the mean of the two unimodal logits.
    self.mix = nnx.Param(jnp.full((2, num_outputs), 0.5, jnp.float32))
    self.bias = nnx.Param(jnp.zeros((num_outputs,), jnp.float32))

  @property
  def image(self) -> nnx.Module:
    return self.image_only.image

  @property
  def text(self) -> nnx.Module:
    return self.text_only.text

  def branch_logits(
    self, batch: dict[str, jax.Array], *, rngs: nnx.Rngs | None = None
  ) -> jax.Array:
    """The two unimodal logits stacked, (B, 2, num_outputs): image first."""
    return jnp.stack([self.image_only(batch, rngs=rngs), self.text_only(batch, rngs=rngs)], 1)

  def __call__(self, batch: dict[str, jax.Array], *, rngs: nnx.Rngs | None = None) -> jax.Array:
    return (self.branch_logits(batch, rngs=rngs) * self.mix[...]).sum(1) + self.bias[...]
