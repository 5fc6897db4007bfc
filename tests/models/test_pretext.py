"""Pretext models: output shapes, towers at `.image` / `.text`, per-position text outputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxmm.models import pretext, text
from jaxmm.models.autoencoder import ConvAutoencoder
from jaxmm.models.resnet import BasicBlock, ResNet

VOCAB, T = 30, 6
LENGTH = np.array([6, 2, 4], np.int32)
# Jitted: eager op-by-op dispatch compiles every small op on its own and is far slower on CPU.
_call = nnx.jit(lambda m, b: m(b))
_seq = nnx.jit(lambda m, t, n: m.sequence(t, n))
_enc = nnx.jit(lambda m, t, n: m.encode(t, n))


def _tokens(seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(3, VOCAB, (len(LENGTH), T)).astype(np.int32)
  tokens[np.arange(T)[None] >= LENGTH[:, None]] = 0
  return tokens


def test_lstm_sequence_agrees_with_its_pooled_encoding():
  tower = text.LSTMTower(VOCAB, 4, 3, num_layers=2, rngs=nnx.Rngs(0))
  tokens = _tokens()
  seq = np.asarray(_seq(tower, tokens, LENGTH))
  enc = np.asarray(_enc(tower, tokens, LENGTH))
  assert seq.shape == (len(LENGTH), T, tower.out_features)
  rows = np.arange(len(LENGTH))
  np.testing.assert_allclose(enc[:, :3], seq[rows, LENGTH - 1, :3], atol=1e-6)  # fwd: last token
  np.testing.assert_allclose(enc[:, 3:], seq[:, 0, 3:], atol=1e-6)  # bwd: first token
  # Real positions do not see the padding: more padding leaves them unchanged.
  longer = np.asarray(_seq(tower, np.pad(tokens, ((0, 0), (0, 3))), LENGTH))
  for b, n in enumerate(LENGTH):
    np.testing.assert_allclose(longer[b, :n], seq[b, :n], atol=1e-6)


def test_gru_sequence_is_what_attention_pools():
  tower = text.GRUAttentionTower(VOCAB, 4, 3, rngs=nnx.Rngs(0))
  tokens = _tokens()
  seq = np.asarray(_seq(tower, tokens, LENGTH))
  feats, weights = nnx.jit(lambda m, t, n: m.attend(t, n))(tower, tokens, LENGTH)
  np.testing.assert_allclose(np.einsum("bt,btd->bd", np.asarray(weights), seq), feats, atol=1e-6)


def test_masked_token_model_logits_and_subtree():
  model = pretext.MaskedTokenModel(
    text.LSTMTower(VOCAB, 4, 3, rngs=nnx.Rngs(0)), VOCAB, rngs=nnx.Rngs(1)
  )
  logits = _call(model, {"tokens": _tokens(), "length": LENGTH})
  assert logits.shape == (len(LENGTH), T, VOCAB)
  assert "text" in nnx.state(model) and "embed" in nnx.state(model)["text"]
  with pytest.raises(ValueError, match="no per-position outputs"):
    pretext.MaskedTokenModel(
      text.EmbeddingMLPTower(VOCAB, 4, max_len=T, hidden=(8,), rngs=nnx.Rngs(0)),
      VOCAB,
      rngs=nnx.Rngs(0),
    )


def _filled(ctor, seed=0):
  """`ctor()` built abstractly and filled with numpy noise: a real conv init compiles a random
  kernel per parameter shape, seconds on CPU."""
  graphdef, state = nnx.split(nnx.eval_shape(ctor))
  rng = np.random.default_rng(seed)
  state = jax.tree_util.tree_map_with_path(
    lambda path, s: (
      jnp.ones(s.shape, s.dtype)
      if "'var'" in jax.tree_util.keystr(path)
      else jnp.asarray(0.1 * rng.standard_normal(s.shape), s.dtype)
    ),
    state,
  )
  return nnx.merge(graphdef, state)


def test_rotation_and_reconstruction_models():
  images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3)).astype(np.uint8)
  rot = _filled(
    lambda: pretext.RotationClassifier(
      ResNet(stage_sizes=(1,), block=BasicBlock, num_filters=4, stem="small", rngs=nnx.Rngs(0)),
      5,
      hidden=(8,),
      rngs=nnx.Rngs(0),
    )
  )
  assert _call(rot, {"image": images}).shape == (2, 5) and isinstance(rot.image, ResNet)
  ae = _filled(lambda: pretext.ReconstructionModel(ConvAutoencoder((4, 8), 8, rngs=nnx.Rngs(0))))
  recon = np.asarray(_call(ae, {"image": images}))
  assert recon.shape == (2, 16, 16, 3) and recon.min() >= 0.0 and recon.max() <= 1.0
  with pytest.raises(ValueError, match="sigmoid"):
    pretext.ReconstructionModel(ConvAutoencoder((4,), 8, output="linear", rngs=nnx.Rngs(0)))
