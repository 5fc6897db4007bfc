"""model.text.impl='cudnn': packing and layout checked on CPU against the fused layer, with jax's
reference implementation of the cuDNN op standing in for the GPU kernel."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.experimental import rnn

from jaxmm.models import cudnn_lstm
from jaxmm.models.text import LSTMTower


def _reference_lstm(
  x, h0, c0, weights, seq_lengths, *, input_size, hidden_size, num_layers, dropout, bidirectional
):
  w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(
    weights, input_size, hidden_size, num_layers, bidirectional
  )
  return rnn.lstm_ref(
    x,
    h0,
    c0,
    w_ih,
    w_hh,
    b_ih,
    b_hh,
    seq_lengths,
    input_size,
    hidden_size,
    num_layers,
    dropout,
    bidirectional,
  )


@pytest.mark.parametrize(
  "bidirectional,pooling,num_layers",
  [
    (True, "last", 2),  # the common case: bwd at position 0, fwd final state; stacked input
    (False, "max", 1),
  ],
)
def test_cudnn_impl_matches_fused(monkeypatch, bidirectional, pooling, num_layers):
  monkeypatch.setattr(cudnn_lstm, "_lstm", _reference_lstm)
  kw = dict(
    vocab_size=20,
    embed_dim=6,
    hidden_size=5,
    num_layers=num_layers,
    bidirectional=bidirectional,
    pooling=pooling,
  )
  fused = LSTMTower(**kw, rngs=nnx.Rngs(0))
  cudnn = LSTMTower(**kw, impl="cudnn", rngs=nnx.Rngs(0))  # same init: the impl owns no params
  rng = np.random.default_rng(0)
  length = jnp.asarray([7, 2, 1, 5], jnp.int32)
  tokens = jnp.asarray(
    np.where(np.arange(7)[None] < np.asarray(length)[:, None], rng.integers(1, 20, (4, 7)), 0),
    jnp.int32,
  )

  @nnx.jit
  def loss_and_grads(tower):
    def loss(tower):
      return jnp.sum(jnp.sin(tower.encode(tokens, length)))

    return nnx.value_and_grad(loss)(tower)

  (l_f, g_f), (l_c, g_c) = loss_and_grads(fused), loss_and_grads(cudnn)
  np.testing.assert_allclose(float(l_c), float(l_f), rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g_f), jax.tree.leaves(g_c)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5)


def test_cudnn_impl_refuses_cpu_and_unknown_impls():
  tower = LSTMTower(vocab_size=10, embed_dim=4, hidden_size=3, impl="cudnn", rngs=nnx.Rngs(0))
  if jax.default_backend() != "gpu":
    with pytest.raises(NotImplementedError, match="impl='fused'"):
      tower.encode(jnp.ones((2, 3), jnp.int32), jnp.asarray([3, 1], jnp.int32))
  with pytest.raises(ValueError, match="model.text.impl"):
    LSTMTower(vocab_size=10, embed_dim=4, hidden_size=3, impl="nope", rngs=nnx.Rngs(0))
