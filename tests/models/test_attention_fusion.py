"""Attention fusion (S2): shapes, padding invariance, image queries really see the text."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxmm.models import attention_fusion, resnet, text
from jaxmm.models.autoencoder import ConvAutoencoder


def _model(text_name="gru_attention", num_outputs=18, image="autoencoder"):
  # A one-layer autoencoder encoder keeps these eager tests fast; one test uses the ResNet's map.
  image = (
    resnet.ResNet18(stem="small", num_filters=8, rngs=nnx.Rngs(0))
    if image == "resnet"
    else ConvAutoencoder(channels=(8,), latent_dim=8, rngs=nnx.Rngs(0))
  )
  towers = {
    "gru_attention": lambda: text.GRUAttentionTower(30, 8, 6, rngs=nnx.Rngs(1)),
    "lstm": lambda: text.LSTMTower(30, 8, 6, num_layers=2, rngs=nnx.Rngs(1)),
    "bow": lambda: text.BagOfWordsTower(30, 8, rngs=nnx.Rngs(1)),
  }
  model = attention_fusion.AttentionFusionClassifier(
    image,
    towers[text_name](),
    num_outputs,
    dim=16,
    num_heads=4,
    num_layers=2,
    hidden=(12,),
    rngs=nnx.Rngs(2),
  )
  model.eval()
  return model


def _batch(tokens, length):
  rng = np.random.default_rng(0)
  return {
    "image": rng.integers(0, 255, (len(length), 16, 16, 3)).astype(np.uint8),
    "tokens": np.asarray(tokens, np.int32),
    "length": np.asarray(length, np.int32),
  }


@pytest.mark.parametrize("text_name", ["gru_attention", "lstm", "bow"])
def test_shapes_and_padding_invariance(text_name):
  model = _model(text_name)
  tokens = np.array([[3, 4, 5, 0, 0], [6, 7, 8, 9, 10]])
  out = model(_batch(tokens, [3, 5]))
  assert out.shape == (2, 18) and bool(jnp.isfinite(out).all())
  # Whatever sits in the padding, and however much of it, changes nothing.
  garbage = np.array([[3, 4, 5, 29, 17, 2, 2], [6, 7, 8, 9, 10, 11, 12]])
  np.testing.assert_allclose(model(_batch(garbage, [3, 5])), out, atol=1e-5)


def test_image_tokens_attend_to_the_text():
  model = _model(image="resnet")
  a = model(_batch([[3, 4, 5]], [3]))
  b = model(_batch([[9, 4, 5]], [3]))
  assert float(jnp.abs(a - b).max()) > 1e-6


def test_text_sequence_outputs_match_pooled_encoding():
  # The LSTM tower's per-token states are what its 'max' pooling pools.
  tower = text.LSTMTower(30, 8, 6, pooling="max", rngs=nnx.Rngs(0))
  tokens, length = np.array([[3, 4, 5, 0], [6, 7, 8, 9]]), np.array([3, 4])
  states = tower.sequence(tokens, length)
  mask = text.length_mask(length, 4)
  assert states.shape == (2, 4, 12)
  pooled = jnp.where(mask[..., None], states, -jnp.inf).max(1)
  np.testing.assert_allclose(pooled, tower.encode(tokens, length), atol=1e-6)


def test_needs_both_towers_and_token_outputs():
  image = resnet.ResNet18(stem="small", num_filters=8, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="both towers"):
    attention_fusion.AttentionFusionClassifier(image, None, 18, rngs=nnx.Rngs(0))
  mlp = text.EmbeddingMLPTower(30, 4, max_len=5, hidden=(8,), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="per-token"):
    attention_fusion.AttentionFusionClassifier(image, mlp, 18, rngs=nnx.Rngs(0))
