"""The (Bi-)LSTM layer through cuDNN (`jax.experimental.rnn.lstm`): `model.text.impl='cudnn'`.

Same parameters as the fused layer (w_ih (D, E, 4H), w_hh (D, H, 4H), bias (D, 4H), gates i, f, g,
o): they are packed into cuDNN's flat weight vector at each call, so checkpoints move freely
between impls. cuDNN has two biases per direction; ours is its b_ih, with b_hh = 0. The output is
put in the fused layer's scan-order layout (T, D, B, H), whose last step holds both final states.

jax lowers the cuDNN RNN for CUDA only (and in float32/tf32: its bf16 path is not implemented), so
this impl runs on an NVIDIA GPU; elsewhere it raises. On CPU the tests swap `_lstm` for jax's
reference implementation of the same op (`rnn.lstm_ref`), which checks the packing and the layout;
its GPU speed beside the fused layer: `benchmarks/gpu_throughput.py` (part 3).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import rnn

IMPLS = ("fused", "cudnn")


def _lstm(x_BxTxE, h0, c0, weights, seq_lengths, **kwargs):
  """cuDNN LSTM; a seam the CPU tests replace with jax's reference implementation."""
  if jax.default_backend() != "gpu":
    raise NotImplementedError(
      "model.text.impl='cudnn' needs an NVIDIA GPU: jax.experimental.rnn lowers for CUDA only. "
      "Use model.text.impl='fused' (the default) on this machine."
    )
  return rnn.lstm(x_BxTxE, h0, c0, weights, seq_lengths, **kwargs)


def pack_weights(w_ih_DxExG: jax.Array, w_hh_DxHxG: jax.Array, b_DxG: jax.Array) -> jax.Array:
  """-> cuDNN's flat weights: W_ih, W_hh (each (4H, in), torch layout) of every direction, then
  b_ih, b_hh of every direction (jax.experimental.rnn's documented order)."""
  num_dirs = w_hh_DxHxG.shape[0]
  mats = [m for d in range(num_dirs) for m in (w_ih_DxExG[d].T, w_hh_DxHxG[d].T)]
  biases = [b for d in range(num_dirs) for b in (b_DxG[d], jnp.zeros_like(b_DxG[d]))]
  return jnp.concatenate([m.ravel() for m in mats] + biases)


def cudnn_lstm_layer(
  x_TxBxE: jax.Array,
  w_ih_DxExG: jax.Array,
  w_hh_DxHxG: jax.Array,
  b_DxG: jax.Array,
  mask_TxB: jax.Array,
) -> jax.Array:
  """Drop-in for `fused_lstm_layer` -> h of every scan step (T, D, B, H), float32.

  Step s holds the fwd state at position s and the bwd state at position T-1-s (zeros on
  padding); step T-1 holds the final states of both directions, as in the fused layer.
  """
  num_dirs, hidden, _ = w_hh_DxHxG.shape
  batch, in_features = x_TxBxE.shape[1], x_TxBxE.shape[2]
  length_B = mask_TxB.sum(0).astype(jnp.int32)
  zeros = jnp.zeros((num_dirs, batch, hidden), jnp.float32)
  y_BxTxDH, h_n, _ = _lstm(
    x_TxBxE.transpose(1, 0, 2).astype(jnp.float32),
    zeros,
    zeros,
    pack_weights(w_ih_DxExG, w_hh_DxHxG, b_DxG).astype(jnp.float32),
    length_B,
    input_size=in_features,
    hidden_size=hidden,
    num_layers=1,
    dropout=0.0,
    bidirectional=num_dirs == 2,
  )
  y_TxBxDH = y_BxTxDH.transpose(1, 0, 2)
  dirs = [y_TxBxDH[..., :hidden]]
  if num_dirs == 2:  # position order -> scan order: the bwd direction visits position T-1-s at s
    dirs.append(jnp.flip(y_TxBxDH[..., hidden:], 0))
  ys_TxDxBxH = jnp.stack(dirs, axis=1)
  # cuDNN zeroes the fwd output past each length; the fused layer's last step holds the final
  # state there (what 'last' pooling reads).
  return ys_TxDxBxH.at[-1, 0].set(h_n[0])
