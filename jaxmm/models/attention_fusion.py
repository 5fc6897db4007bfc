"""S2's attention fusion: image tokens attend over image + text tokens, then pooled into a head.

The image tower's feature map (B, h, w, C) gives h*w image tokens, the text tower's per-token
states (B, T, D) give T text tokens (padding masked out); both are projected to `dim` and tagged
with a learned modality embedding. Each layer is a post-norm transformer block whose queries are
the image tokens and whose keys/values are all tokens ("image queries"), so the image
representation is rewritten in the light of the caption. The head sees [mean of the attended
image tokens; masked mean of the text tokens].
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmm.models.fusion import MLPHead, normalize_images
from jaxmm.models.text import length_mask


class CrossAttention(nnx.Module):
  """Multi-head attention of queries (B, Q, D) over keys/values (B, K, D) with a key mask."""

  def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs):
    if dim % num_heads:
      raise ValueError(f"attention dim {dim} is not divisible by num_heads {num_heads}")
    self.num_heads = num_heads
    self.q = nnx.Linear(dim, dim, rngs=rngs)
    self.k = nnx.Linear(dim, dim, rngs=rngs)
    self.v = nnx.Linear(dim, dim, rngs=rngs)
    self.out = nnx.Linear(dim, dim, rngs=rngs)

  def __call__(self, q_BxQxD: jax.Array, kv_BxKxD: jax.Array, mask_BxK: jax.Array) -> jax.Array:
    b, nq, d = q_BxQxD.shape
    nk, h = kv_BxKxD.shape[1], self.num_heads

    def heads(x, n):
      return x.reshape(b, n, h, d // h)

    q, k, v = heads(self.q(q_BxQxD), nq), heads(self.k(kv_BxKxD), nk), heads(self.v(kv_BxKxD), nk)
    scores_BxHxQxK = jnp.einsum("bqhe,bkhe->bhqk", q, k) / jnp.sqrt(d // h).astype(q.dtype)
    scores_BxHxQxK = jnp.where(mask_BxK[:, None, None, :], scores_BxHxQxK, -jnp.inf)
    weights = jax.nn.softmax(scores_BxHxQxK.astype(jnp.float32), axis=-1).astype(v.dtype)
    return self.out(jnp.einsum("bhqk,bkhe->bqhe", weights, v).reshape(b, nq, d))


class FusionBlock(nnx.Module):
  """x = LN(x + attn(x, tokens)); x = LN(x + FFN(x)), with dropout on both residual branches."""

  def __init__(
    self, dim: int, num_heads: int, *, ffn_mult: int = 2, dropout: float = 0.0, rngs: nnx.Rngs
  ):
    self.attn = CrossAttention(dim, num_heads, rngs=rngs)
    self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
    self.ffn_in = nnx.Linear(dim, ffn_mult * dim, rngs=rngs)
    self.ffn_out = nnx.Linear(ffn_mult * dim, dim, rngs=rngs)
    self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
    self.dropout = nnx.Dropout(dropout)

  def __call__(self, x_BxQxD, tokens_BxKxD, mask_BxK, *, rngs: nnx.Rngs | None = None):
    x_BxQxD = self.norm1(
      x_BxQxD + self.dropout(self.attn(x_BxQxD, tokens_BxKxD, mask_BxK), rngs=rngs)
    )
    ffn = self.ffn_out(nnx.gelu(self.ffn_in(x_BxQxD)))
    return self.norm2(x_BxQxD + self.dropout(ffn, rngs=rngs))


class AttentionFusionClassifier(nnx.Module):
  """logits = head([mean_q attended image tokens; mean_t text tokens]), both towers required.

  The image tower needs `feature_map(images) -> (B, h, w, C)` (ResNet, DenseNet, EfficientNet)
  or `latent_map` (the conv autoencoder); the text tower needs `sequence(tokens, length) ->
  states_BxTxD` (LSTM, GRU-attention, bag-of-words and BERT towers).
  """

  def __init__(
    self,
    image_tower: nnx.Module,
    text_tower: nnx.Module,
    num_outputs: int,
    *,
    dim: int = 256,
    num_heads: int = 4,
    num_layers: int = 1,
    attention_dropout: float = 0.1,
    hidden: Sequence[int] = (256,),
    dropout: float = 0.0,
    norm: str | None = None,
    rngs: nnx.Rngs,
  ):
    if image_tower is None or text_tower is None:
      raise ValueError(
        "attention fusion needs both towers (model.mode='fused'); use "
        "model.name='concat_fusion' for the image-only / text-only ablations"
      )
    if not hasattr(text_tower, "sequence"):
      raise ValueError(
        f"text tower {type(text_tower).__name__} has no per-token outputs; "
        "attention fusion needs 'lstm', 'gru_attention', 'bow' or 'bert'"
      )
    self.image = image_tower
    self.text = text_tower
    # Both tower kinds report their map's channel count as out_features (pooling keeps it).
    self.image_proj = nnx.Linear(image_tower.out_features, dim, rngs=rngs)
    self.text_proj = nnx.Linear(text_tower.out_features, dim, rngs=rngs)
    self.modality = nnx.Param(jax.random.normal(rngs.params(), (2, dim)) * 0.02)
    self.blocks = nnx.List(
      [FusionBlock(dim, num_heads, dropout=attention_dropout, rngs=rngs) for _ in range(num_layers)]
    )
    self.norm = nnx.LayerNorm(2 * dim, rngs=rngs)
    self.head = MLPHead(2 * dim, hidden, num_outputs, dropout=dropout, norm=norm, rngs=rngs)

  def _image_map(self, images):
    tower = self.image
    fn = tower.feature_map if hasattr(tower, "feature_map") else tower.latent_map
    return fn(normalize_images(images))

  def features(self, batch: dict[str, jax.Array], *, rngs: nnx.Rngs | None = None) -> jax.Array:
    maps_BxhxwxC = self._image_map(batch["image"]).astype(jnp.float32)
    b, hh, ww, c = maps_BxhxwxC.shape
    img_BxNxD = self.image_proj(maps_BxhxwxC.reshape(b, hh * ww, c)) + self.modality[0]
    states_BxTxE = self.text.sequence(batch["tokens"], batch["length"], rngs=rngs)
    mask_BxT = length_mask(batch["length"], batch["tokens"].shape[1])
    txt_BxTxD = self.text_proj(states_BxTxE.astype(jnp.float32)) + self.modality[1]
    tokens = jnp.concatenate([img_BxNxD, txt_BxTxD], axis=1)
    mask = jnp.concatenate([jnp.ones((b, hh * ww), bool), mask_BxT], axis=1)
    x_BxNxD = img_BxNxD
    for block in self.blocks:
      x_BxNxD = block(x_BxNxD, tokens, mask, rngs=rngs)
    m = mask_BxT[..., None].astype(txt_BxTxD.dtype)
    txt_BxD = (txt_BxTxD * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
    return self.norm(jnp.concatenate([x_BxNxD.mean(1), txt_BxD], axis=-1))

  def __call__(self, batch: dict[str, jax.Array], *, rngs: nnx.Rngs | None = None) -> jax.Array:
    return self.head(self.features(batch, rngs=rngs), rngs=rngs)
