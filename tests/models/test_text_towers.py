"""Text towers: shapes, exact padding invariance, parity with flax's RNNs, gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxmm.models import text

VOCAB, EMBED, HIDDEN = 40, 6, 5
LENGTH_B = np.array([1, 4, 7, 3], np.int32)
T = 7


def _tokens(length_B=LENGTH_B, num_steps=T, seed=0):
  """(B, T) random real tokens, padded with 0 past each length."""
  rng = np.random.default_rng(seed)
  tokens_BxT = rng.integers(1, VOCAB, size=(len(length_B), num_steps)).astype(np.int32)
  tokens_BxT[np.arange(num_steps)[None, :] >= length_B[:, None]] = 0
  return tokens_BxT


TOWERS = {
  "lstm_bi_last": lambda: text.LSTMTower(VOCAB, EMBED, HIDDEN, rngs=nnx.Rngs(0)),
  "lstm_uni_mean": lambda: text.LSTMTower(
    VOCAB, EMBED, HIDDEN, bidirectional=False, pooling="mean", rngs=nnx.Rngs(0)
  ),
  "lstm_2layer_max": lambda: text.LSTMTower(
    VOCAB, EMBED, HIDDEN, num_layers=2, pooling="max", rngs=nnx.Rngs(0)
  ),
  "gru_attention": lambda: text.GRUAttentionTower(
    VOCAB, EMBED, HIDDEN, attention_dim=4, rngs=nnx.Rngs(0)
  ),
  "gru_attention_uni": lambda: text.GRUAttentionTower(
    VOCAB, EMBED, HIDDEN, bidirectional=False, rngs=nnx.Rngs(0)
  ),
  "mlp": lambda: text.EmbeddingMLPTower(VOCAB, EMBED, max_len=T, hidden=(16, 8), rngs=nnx.Rngs(0)),
  "bow": lambda: text.BagOfWordsTower(VOCAB, EMBED, rngs=nnx.Rngs(0)),
}
EXPECTED_FEATURES = {
  "lstm_bi_last": 2 * HIDDEN,
  "lstm_uni_mean": HIDDEN,
  "lstm_2layer_max": 2 * HIDDEN,
  "gru_attention": 2 * HIDDEN,
  "gru_attention_uni": HIDDEN,
  "mlp": 8,
  "bow": EMBED,
}


@pytest.mark.parametrize("name", sorted(TOWERS))
def test_shape_and_padding_invariance(name):
  tower = TOWERS[name]()
  tower.eval()
  tokens_BxT = _tokens()
  feats_BxD = tower.encode(jnp.asarray(tokens_BxT), jnp.asarray(LENGTH_B))
  assert feats_BxD.shape == (len(LENGTH_B), EXPECTED_FEATURES[name])
  assert tower.out_features == EXPECTED_FEATURES[name]
  assert np.isfinite(np.asarray(feats_BxD)).all()
  np.testing.assert_allclose(tower(jnp.asarray(tokens_BxT), jnp.asarray(LENGTH_B)), feats_BxD)
  # More padding (a longer T) changes nothing.
  padded_BxT = np.pad(tokens_BxT, ((0, 0), (0, 5)))
  np.testing.assert_allclose(
    tower.encode(jnp.asarray(padded_BxT), jnp.asarray(LENGTH_B)), feats_BxD, atol=1e-5, rtol=1e-5
  )
  # Whatever sits past `length` is ignored, real tokens included.
  garbage_BxT = np.where(padded_BxT == 0, _tokens(np.full(4, 12), 12, seed=1), padded_BxT)
  np.testing.assert_allclose(
    tower.encode(jnp.asarray(garbage_BxT), jnp.asarray(LENGTH_B)), feats_BxD, atol=1e-5, rtol=1e-5
  )
  # The features do depend on the real tokens.
  changed_BxT = tokens_BxT.copy()
  changed_BxT[:, 0] = (changed_BxT[:, 0] % (VOCAB - 1)) + 1
  assert not np.allclose(tower.encode(jnp.asarray(changed_BxT), jnp.asarray(LENGTH_B)), feats_BxD)


def _copy_flax_lstm(layer: text.BiLSTMLayer, cells: list[nnx.LSTMCell]):
  """flax's LSTMCell keeps one Linear per gate (ii/if_/ig/io no bias, hi/hf/hg/ho with bias)."""
  cat = lambda mods, attr: jnp.concatenate([getattr(m, attr)[...] for m in mods], axis=-1)
  layer.w_ih[...] = jnp.stack([cat([c.ii, c.if_, c.ig, c.io], "kernel") for c in cells])
  layer.w_hh[...] = jnp.stack([cat([c.hi, c.hf, c.hg, c.ho], "kernel") for c in cells])
  layer.bias[...] = jnp.stack([cat([c.hi, c.hf, c.hg, c.ho], "bias") for c in cells])


def _flax_bilstm(in_features, seed):
  rngs = nnx.Rngs(seed)
  cell = lambda: nnx.LSTMCell(
    in_features, HIDDEN, bias_init=nnx.initializers.normal(0.5), rngs=rngs
  )
  return nnx.Bidirectional(nnx.RNN(cell()), nnx.RNN(cell()), return_carry=True)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_lstm_matches_flax_bidirectional_with_seq_lengths(num_layers):
  tower = text.LSTMTower(VOCAB, EMBED, HIDDEN, num_layers=num_layers, rngs=nnx.Rngs(0))
  refs = [_flax_bilstm(EMBED if k == 0 else 2 * HIDDEN, seed=10 + k) for k in range(num_layers)]
  for layer, ref in zip(tower.layers, refs):
    _copy_flax_lstm(layer, [ref.forward_rnn.cell, ref.backward_rnn.cell])
  tokens_BxT, length_B = jnp.asarray(_tokens()), jnp.asarray(LENGTH_B)

  x_BxTxE = tower.embed(tokens_BxT)
  for ref in refs:
    (carry_f, carry_b), x_BxTxE = ref(x_BxTxE, seq_lengths=length_B)
  expected_BxD = jnp.concatenate([carry_f[1], carry_b[1]], axis=-1)  # (c, h): take h
  np.testing.assert_allclose(tower.encode(tokens_BxT, length_B), expected_BxD, atol=1e-5)

  # Mean pooling averages the per-token outputs, so it checks every position of both directions.
  tower.pooling = "mean"
  mask_BxTx1 = (np.arange(T)[None, :] < LENGTH_B[:, None])[..., None]
  expected_mean_BxD = (x_BxTxE * mask_BxTx1).sum(1) / LENGTH_B[:, None]
  np.testing.assert_allclose(tower.encode(tokens_BxT, length_B), expected_mean_BxD, atol=1e-5)


def test_gru_attention_matches_flax_gru_and_masks_padding():
  tower = text.GRUAttentionTower(VOCAB, EMBED, HIDDEN, rngs=nnx.Rngs(0))
  rngs = nnx.Rngs(3)
  cell = lambda: nnx.GRUCell(EMBED, HIDDEN, bias_init=nnx.initializers.normal(0.5), rngs=rngs)
  ref = nnx.Bidirectional(nnx.RNN(cell()), nnx.RNN(cell()))
  cells = [ref.forward_rnn.cell, ref.backward_rnn.cell]
  # flax's GRU has no hidden-side bias (b_hn), so ours stays at its zero init.
  tower.w_ih[...] = jnp.stack([c.dense_i.kernel[...] for c in cells])
  tower.b_ih[...] = jnp.stack([c.dense_i.bias[...] for c in cells])
  tower.w_hh[...] = jnp.stack([c.dense_h.kernel[...] for c in cells])
  tokens_BxT, length_B = jnp.asarray(_tokens()), jnp.asarray(LENGTH_B)

  feats_BxD, weights_BxT = tower.attend(tokens_BxT, length_B)
  mask_BxT = np.arange(T)[None, :] < LENGTH_B[:, None]
  assert np.all(np.asarray(weights_BxT)[~mask_BxT] == 0.0)  # exactly zero, not just small
  np.testing.assert_allclose(weights_BxT.sum(-1), 1.0, atol=1e-6)

  h_BxTxD = ref(tower.embed(tokens_BxT), seq_lengths=length_B)
  scores_BxT = tower.attn_query(jnp.tanh(tower.attn_proj(h_BxTxD)))[..., 0]
  expected_w_BxT = jax.nn.softmax(jnp.where(mask_BxT, scores_BxT, -jnp.inf), axis=-1)
  np.testing.assert_allclose(weights_BxT, expected_w_BxT, atol=1e-5)
  expected_BxD = jnp.einsum(
    "bt,btd->bd", expected_w_BxT, jnp.where(mask_BxT[..., None], h_BxTxD, 0)
  )
  np.testing.assert_allclose(feats_BxD, expected_BxD, atol=1e-5)


def test_lstm_custom_vjp_matches_autodiff():
  num_dirs, batch, in_features = 2, len(LENGTH_B), 3
  keys = jax.random.split(jax.random.PRNGKey(0), 5)
  args = (
    jax.random.normal(keys[0], (T, batch, in_features)),
    jax.random.normal(keys[1], (num_dirs, in_features, 4 * HIDDEN)),
    0.5 * jax.random.normal(keys[2], (num_dirs, HIDDEN, 4 * HIDDEN)),
    jax.random.normal(keys[3], (num_dirs, 4 * HIDDEN)),
  )
  mask_TxB = text.length_mask(jnp.asarray(LENGTH_B), T).T
  cotangent = jax.random.normal(keys[4], (T, num_dirs, batch, HIDDEN))

  def loss(fn, *a):
    return jnp.sum(fn(*a, mask_TxB) * cotangent)

  grad = lambda fn: jax.jit(jax.grad(lambda *a: loss(fn, *a), argnums=(0, 1, 2, 3)))
  grads = grad(text.fused_lstm_layer)(*args)
  expected = grad(text.lstm_layer_autodiff)(*args)
  for got, want in zip(grads, expected):
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
  "name", ["lstm_2layer_max", "lstm_uni_mean", "gru_attention", "mlp", "bow"]
)
def test_gradients_are_finite_and_reach_every_param(name):
  tower = TOWERS[name]()
  tokens_BxT, length_B = jnp.asarray(_tokens()), jnp.asarray(LENGTH_B)

  def loss_fn(tower):
    return jnp.sum(tower.encode(tokens_BxT, length_B) ** 2)

  grads = nnx.grad(loss_fn)(tower)
  for path, g in jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(grads)):
    assert np.isfinite(np.asarray(g)).all(), path
    assert np.abs(np.asarray(g)).sum() > 0, path


def test_embedding_init_is_used():
  matrix = np.random.default_rng(0).normal(size=(VOCAB, EMBED)).astype(np.float32)
  for name in ("lstm", "gru_attention", "mlp", "bow"):
    kwargs = dict(vocab_size=VOCAB, embed_dim=EMBED, embedding_init=matrix, rngs=nnx.Rngs(0))
    if name in ("lstm", "gru_attention"):
      kwargs["hidden_size"] = HIDDEN
    tower = text.text_tower_by_name(name, **kwargs)
    np.testing.assert_array_equal(tower.embed.embedding[...], matrix)
  tokens_BxT = _tokens()
  feats_BxD = tower.encode(jnp.asarray(tokens_BxT), jnp.asarray(LENGTH_B))  # bow
  expected = [matrix[row[:n]].mean(0) for row, n in zip(tokens_BxT, LENGTH_B)]
  np.testing.assert_allclose(feats_BxD, np.stack(expected), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="shape"):
    text.BagOfWordsTower(VOCAB + 1, EMBED, embedding_init=matrix, rngs=nnx.Rngs(0))


def test_dropout_is_driven_by_call_rngs_and_mode():
  tower = text.EmbeddingMLPTower(
    VOCAB, EMBED, max_len=T, hidden=(16, 8), dropout=0.5, rngs=nnx.Rngs(0)
  )
  args = (jnp.asarray(_tokens()), jnp.asarray(LENGTH_B))
  tower.eval()
  eval_BxD = tower.encode(*args)
  tower.train()
  a = tower.encode(*args, rngs=nnx.Rngs(dropout=1))
  b = tower.encode(*args, rngs=nnx.Rngs(dropout=1))
  c = tower.encode(*args, rngs=nnx.Rngs(dropout=2))
  np.testing.assert_allclose(a, b)
  assert not np.allclose(a, c) and not np.allclose(a, eval_BxD)
  tower.eval()
  np.testing.assert_allclose(tower.encode(*args), eval_BxD)
  # The recurrent towers take the same call-time rngs (dropout on every layer's input).
  lstm = text.LSTMTower(VOCAB, EMBED, HIDDEN, dropout=0.5, rngs=nnx.Rngs(0))
  assert not np.allclose(
    lstm.encode(*args, rngs=nnx.Rngs(dropout=1)), lstm.encode(*args, rngs=nnx.Rngs(dropout=2))
  )


def test_registry_and_bad_arguments():
  assert isinstance(
    text.text_tower_by_name("bow", vocab_size=VOCAB, embed_dim=EMBED, rngs=nnx.Rngs(0)),
    text.BagOfWordsTower,
  )
  with pytest.raises(KeyError):
    text.text_tower_by_name("transformer")
  with pytest.raises(ValueError, match="pooling"):
    text.LSTMTower(VOCAB, EMBED, HIDDEN, pooling="first", rngs=nnx.Rngs(0))


def test_towers_jit_under_nnx_and_plain_jax_grad():
  tower = text.LSTMTower(VOCAB, EMBED, HIDDEN, num_layers=2, pooling="mean", rngs=nnx.Rngs(0))
  tokens_BxT, length_B = jnp.asarray(_tokens()), jnp.asarray(LENGTH_B)
  jitted = nnx.jit(lambda tower, t, n: tower.encode(t, n))(tower, tokens_BxT, length_B)
  np.testing.assert_allclose(jitted, tower.encode(tokens_BxT, length_B), atol=1e-6)
  # Unlike nnx.RNN, the towers hold no RNG state, so jax.grad over split/merge works.
  graphdef, params, rest = nnx.split(tower, nnx.Param, ...)
  loss = lambda p: jnp.sum(nnx.merge(graphdef, p, rest).encode(tokens_BxT, length_B))
  grads = jax.jit(jax.grad(loss))(params)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))
