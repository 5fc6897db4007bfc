"""Text towers: `encode(tokens_BxT int32, length_B int32, *, rngs=None) -> feats_BxD`.

Token id 0 is `<pad>`, lengths are >= 1, and every tower is padding-invariant: extra pad tokens,
a longer T, or any tokens past `length` leave `encode()` unchanged.

The recurrent layers run both directions in ONE time-major `lax.scan`:
  * the input projections of all steps are matmuls outside the scan (one per direction), so the
    scan body is the (D,B,H) x (D,H,G) recurrent matmul plus elementwise gates;
  * step s feeds position s to the fwd direction and position T-1-s to the bwd one; the carry
    only moves on real tokens, so the bwd carry stays at zero through the padding and starts at
    the last real token: a reversal within each length with no gather. The fwd carry freezes
    past the length, so the last step holds the state at the last real token, as
    `nnx.RNN(..., seq_lengths=...)` gives;
  * the LSTM has a hand-written VJP (`fused_lstm_layer`): the backward scan carries (dh, dc), the
    per-step buffers are reused in place (projection -> gates -> dz), and the weight gradients are
    one matmul over all steps, not T small ones accumulated by autodiff. CPU figures in
    benchmarks/text_towers.py.

`dtype` (e.g. bfloat16 on a GPU) is the matmul operand dtype: params, the recurrent state, the gates
and every accumulation stay float32 (`_mm`), so a long sequence does not drift in bf16.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmm.models import cudnn_lstm

Array = jax.Array

# scan unroll factor for the recurrent towers; chosen by benchmarks/text_towers.py.
DEFAULT_UNROLL = 1


# ----------------------------------------------------------------------------------------- helpers


def make_embed(
  vocab_size: int, embed_dim: int, embedding_init: np.ndarray | None, *, rngs: nnx.Rngs
) -> nnx.Embed:
  """`nnx.Embed(vocab_size, embed_dim)`, initialised from a (vocab, dim) matrix when given."""
  if embedding_init is None:
    return nnx.Embed(vocab_size, embed_dim, rngs=rngs)
  matrix = np.asarray(embedding_init, dtype=np.float32)
  if matrix.shape != (vocab_size, embed_dim):
    raise ValueError(f"embedding_init has shape {matrix.shape}, expected {(vocab_size, embed_dim)}")
  return nnx.Embed(
    vocab_size,
    embed_dim,
    embedding_init=lambda key, shape, dtype: jnp.asarray(matrix, dtype),
    rngs=rngs,
  )


def _mm(spec: str, a: Array, b: Array, dtype: Any = None) -> Array:
  """einsum in the compute dtype with a float32 result (bf16 operands, f32 accumulation)."""
  if dtype is None or jnp.dtype(dtype) == jnp.float32:
    return jnp.einsum(spec, a, b)
  return jnp.einsum(spec, a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


def length_mask(length_B: Array, num_steps: int) -> Array:
  """(B,) lengths -> (B, T) bool, True on real tokens."""
  return jnp.arange(num_steps)[None, :] < length_B[:, None]


def _step_masks(mask_TxB: Array, num_dirs: int) -> Array:
  """(T, D, B, 1) bool: is scan step s a real token for direction d.

  The forward direction visits position s at step s, the backward one position T-1-s, so for it
  the padding comes first and its carry stays at its initial zeros until the last real token:
  that is exactly a reversal within each sequence's length, without any gather.
  """
  masks = [mask_TxB, jnp.flip(mask_TxB, 0)][:num_dirs]
  return jnp.stack(masks, axis=1)[..., None]


def _scan_to_positions(ys_TxDxBxF: Array) -> Array:
  """Scan-order outputs -> position order, directions concatenated: (T, B, D*F)."""
  outs = [ys_TxDxBxF[:, 0]]
  if ys_TxDxBxF.shape[1] == 2:
    outs.append(jnp.flip(ys_TxDxBxF[:, 1], 0))
  return jnp.concatenate(outs, axis=-1)


def _pool_steps(
  ys_TxDxBxH: Array, step_mask_TxDxBx1: Array, length_B: Array, pooling: str
) -> Array:
  """Pools scan-order outputs -> (B, D*H). Mean and max ignore order, so no un-flip is needed."""
  num_steps, num_dirs, batch, hidden = ys_TxDxBxH.shape
  if pooling == "last":
    # fwd: frozen past the length = state at the last real token; bwd: state at position 0.
    pooled_DxBxH = ys_TxDxBxH[-1]
  elif pooling == "mean":
    summed = jnp.where(step_mask_TxDxBx1, ys_TxDxBxH, 0.0).sum(0)
    pooled_DxBxH = summed / length_B[None, :, None].astype(ys_TxDxBxH.dtype)
  elif pooling == "max":
    pooled_DxBxH = jnp.where(step_mask_TxDxBx1, ys_TxDxBxH, -jnp.inf).max(0)
  else:
    raise ValueError(f"unknown pooling {pooling!r}; expected 'last', 'mean' or 'max'")
  return pooled_DxBxH.transpose(1, 0, 2).reshape(batch, num_dirs * hidden)


# ------------------------------------------------------------------------------------ LSTM core


def _direction_inputs(x_TxBxF: Array, num_dirs: int) -> list[Array]:
  """Per-direction inputs in scan order: x for fwd, x reversed in time for bwd."""
  return [x_TxBxF, jnp.flip(x_TxBxF, 0)][:num_dirs]


def _lstm_cell(z_DxBxG: Array, c_DxBxH: Array, h_DxBxH: Array, m_DxBx1: Array):
  """Gates from pre-activations z; the state only moves where m (real token) is True."""
  hidden = c_DxBxH.shape[-1]
  i = jax.nn.sigmoid(z_DxBxG[..., :hidden])
  f = jax.nn.sigmoid(z_DxBxG[..., hidden : 2 * hidden])
  g = jnp.tanh(z_DxBxG[..., 2 * hidden : 3 * hidden])
  o = jax.nn.sigmoid(z_DxBxG[..., 3 * hidden :])
  c_new = f * c_DxBxH + i * g
  h_out = jnp.where(m_DxBx1, o * jnp.tanh(c_new), h_DxBxH)
  c_out = jnp.where(m_DxBx1, c_new, c_DxBxH)
  return h_out, c_out, jnp.concatenate([i, f, g, o], axis=-1)


def _input_projections(x_TxBxE: Array, w_ih_DxExG: Array, dtype: Any = None) -> list[Array]:
  """Input projection of all steps, hoisted out of the scan: one (T*B, E) x (E, G) matmul per
  direction, in scan order. Reversing x (E wide) rather than the projection (G wide) is cheaper."""
  num_dirs = w_ih_DxExG.shape[0]
  return [
    _mm("tbe,eg->tbg", x_d, w_ih_DxExG[d], dtype)
    for d, x_d in enumerate(_direction_inputs(x_TxBxE, num_dirs))
  ]


def _lstm_layer_forward(x_TxBxE, w_ih_DxExG, w_hh_DxHxG, b_DxG, mask_TxB, unroll, dtype=None):
  """Runs the layer -> (h, c) of every scan step (T, D, B, H) and the gate activations.

  The gates of step s overwrite the projected inputs of step s in place (a (T, B, G) buffer per
  direction carried through the loop): no second buffer to allocate and zero-fill.
  """
  num_steps, batch, _ = x_TxBxE.shape
  num_dirs, hidden, _ = w_hh_DxHxG.shape
  b_Dx1xG = b_DxG[:, None, :]

  def step(carry, inputs):
    h_DxBxH, c_DxBxH, bufs = carry
    s, m_DxBx1 = inputs
    proj = jnp.stack([jax.lax.dynamic_index_in_dim(buf, s, 0, keepdims=False) for buf in bufs])
    z = proj + b_Dx1xG + _mm("dbh,dhg->dbg", h_DxBxH, w_hh_DxHxG, dtype)
    h_out, c_out, acts = _lstm_cell(z, c_DxBxH, h_DxBxH, m_DxBx1)
    bufs = tuple(
      jax.lax.dynamic_update_index_in_dim(buf, acts[d], s, 0) for d, buf in enumerate(bufs)
    )
    return (h_out, c_out, bufs), (h_out, c_out)

  zeros = jnp.zeros((num_dirs, batch, hidden), jnp.float32)
  init = (zeros, zeros, tuple(_input_projections(x_TxBxE, w_ih_DxExG, dtype)))
  xs = (jnp.arange(num_steps), _step_masks(mask_TxB, num_dirs))
  (_, _, gates), (ys, cs) = jax.lax.scan(step, init, xs, unroll=unroll)
  return ys, cs, gates


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def fused_lstm_layer(
  x_TxBxE: Array,
  w_ih_DxExG: Array,
  w_hh_DxHxG: Array,
  b_DxG: Array,
  mask_TxB: Array,
  unroll: int = DEFAULT_UNROLL,
  dtype: Any = None,
) -> Array:
  """D LSTM directions in one scan (G = 4H, gate order i, f, g, o), hand-written VJP.

  x_TxBxE: time-major inputs; mask_TxB: bool, True on real tokens. Returns h of every scan step
  (T, D, B, H): the fwd direction at position s, the bwd direction at position T-1-s (zeros on
  padding); step T-1 holds the final states of both directions. `dtype`: matmul operand dtype
  (None = float32); the outputs are float32.
  """
  return _lstm_layer_forward(x_TxBxE, w_ih_DxExG, w_hh_DxHxG, b_DxG, mask_TxB, unroll, dtype)[0]


def _fused_lstm_fwd(x_TxBxE, w_ih_DxExG, w_hh_DxHxG, b_DxG, mask_TxB, unroll, dtype):
  ys, cs, gates = _lstm_layer_forward(
    x_TxBxE, w_ih_DxExG, w_hh_DxHxG, b_DxG, mask_TxB, unroll, dtype
  )
  return ys, (x_TxBxE, w_ih_DxExG, w_hh_DxHxG, mask_TxB, ys, cs, gates)


def _fused_lstm_bwd(unroll, dtype, saved, dys_TxDxBxH):
  x_TxBxE, w_ih_DxExG, w_hh_DxHxG, mask_TxB, ys, cs, gates = saved
  num_dirs, hidden, _ = w_hh_DxHxG.shape
  step_mask = _step_masks(mask_TxB, num_dirs).astype(ys.dtype)
  zeros = jnp.zeros_like(ys[0])

  def step(carry, inputs):
    dh, dc, bufs = carry
    s, dy, m, c_out = inputs
    a = jnp.stack([jax.lax.dynamic_index_in_dim(buf, s, 0, keepdims=False) for buf in bufs])
    i, f, g, o = (a[..., k * hidden : (k + 1) * hidden] for k in range(4))
    # c entering step s is the (frozen) c after step s-1; only real steps (m=1) use it, and for
    # them c_out is the new c.
    c_prev = jnp.where(
      s > 0, jax.lax.dynamic_index_in_dim(cs, jnp.maximum(s - 1, 0), 0, False), zeros
    )
    tc = jnp.tanh(c_out)
    dh = dh + dy
    dh_new, dc_in = m * dh, m * dc
    dc_new = dc_in + dh_new * o * (1.0 - tc * tc)
    dz = jnp.concatenate(
      [
        dc_new * g * i * (1.0 - i),
        dc_new * c_prev * f * (1.0 - f),
        dc_new * i * (1.0 - g * g),
        dh_new * tc * o * (1.0 - o),
      ],
      axis=-1,
    )
    # Frozen steps pass the cotangent straight through to the previous state.
    dh_prev = _mm("dbg,dhg->dbh", dz, w_hh_DxHxG, dtype) + (1.0 - m) * dh
    dc_prev = dc_new * f + (1.0 - m) * dc
    # dz of step s replaces the gates of step s, which nothing reads again.
    bufs = tuple(
      jax.lax.dynamic_update_index_in_dim(buf, dz[d], s, 0) for d, buf in enumerate(bufs)
    )
    return (dh_prev, dc_prev, bufs), None

  xs = (jnp.arange(ys.shape[0]), dys_TxDxBxH, step_mask, cs)
  (_, _, dzs), _ = jax.lax.scan(step, (zeros, zeros, gates), xs, reverse=True, unroll=unroll)
  # Weight gradients of each direction as ONE matmul over all steps, [x, h_prev]^T dz, instead of
  # T small ones accumulated in the loop carry (what autodiff of the scan does).
  in_features = x_TxBxE.shape[-1]
  dws = [
    _mm(
      "tbk,tbg->kg",
      jnp.concatenate(
        [x_d.astype(ys.dtype), jnp.concatenate([zeros[None, d], ys[:-1, d]])], axis=-1
      ),
      dz,
      dtype,
    )
    for x_d, dz, d in zip(_direction_inputs(x_TxBxE, num_dirs), dzs, range(num_dirs))
  ]
  dw_ih = jnp.stack([dw[:in_features] for dw in dws])
  dw_hh = jnp.stack([dw[in_features:] for dw in dws])
  db = jnp.stack([dz.sum((0, 1)) for dz in dzs])
  dx_dirs = [_mm("tbg,eg->tbe", dz, w_ih_DxExG[d], dtype) for d, dz in enumerate(dzs)]
  dx = dx_dirs[0] if num_dirs == 1 else dx_dirs[0] + jnp.flip(dx_dirs[1], 0)
  # Cotangents in the primals' dtypes (custom_vjp requires it).
  return (
    dx.astype(x_TxBxE.dtype),
    dw_ih.astype(w_ih_DxExG.dtype),
    dw_hh.astype(w_hh_DxHxG.dtype),
    db,
    None,
  )


fused_lstm_layer.defvjp(_fused_lstm_fwd, _fused_lstm_bwd)


def lstm_layer_autodiff(
  x_TxBxE, w_ih_DxExG, w_hh_DxHxG, b_DxG, mask_TxB, unroll: int = DEFAULT_UNROLL
) -> Array:
  """The same layer differentiated by JAX (reference for tests and benchmarks): projections
  hoisted, both directions in one scan, projected inputs fed as scan inputs."""
  num_dirs = w_hh_DxHxG.shape[0]
  batch, hidden = x_TxBxE.shape[1], w_hh_DxHxG.shape[1]

  def step(carry, inputs):
    h_DxBxH, c_DxBxH = carry
    *proj_d, m_DxBx1 = inputs
    z = jnp.stack(proj_d) + b_DxG[:, None, :] + jnp.einsum("dbh,dhg->dbg", h_DxBxH, w_hh_DxHxG)
    h_out, c_out, _ = _lstm_cell(z, c_DxBxH, h_DxBxH, m_DxBx1)
    return (h_out, c_out), h_out

  zeros = jnp.zeros((num_dirs, batch, hidden), x_TxBxE.dtype)
  xs = (*_input_projections(x_TxBxE, w_ih_DxExG), _step_masks(mask_TxB, num_dirs))
  return jax.lax.scan(step, (zeros, zeros), xs, unroll=unroll)[1]


# -------------------------------------------------------------------------------------- GRU core


def fused_gru_layer(
  x_TxBxE: Array,
  w_ih_DxExG: Array,
  b_ih_DxG: Array,
  w_hh_DxHxG: Array,
  b_hh_DxG: Array,
  mask_TxB: Array,
  unroll: int = DEFAULT_UNROLL,
  dtype: Any = None,
) -> Array:
  """D GRU directions in one scan (G = 3H, gate order r, z, n; torch's form, b_hn inside r*(.)).

  Same layout and semantics as `fused_lstm_layer`; plain autodiff.
  """
  num_dirs, hidden, _ = w_hh_DxHxG.shape
  batch = x_TxBxE.shape[1]
  projs = _input_projections(x_TxBxE, w_ih_DxExG, dtype)
  b_ih_Dx1xG, b_hh_Dx1xG = b_ih_DxG[:, None, :], b_hh_DxG[:, None, :]

  def step(h_DxBxH, inputs):
    *proj_d, m_DxBx1 = inputs
    xp = jnp.stack(proj_d) + b_ih_Dx1xG
    hp = _mm("dbh,dhg->dbg", h_DxBxH, w_hh_DxHxG, dtype) + b_hh_Dx1xG
    r = jax.nn.sigmoid(xp[..., :hidden] + hp[..., :hidden])
    z = jax.nn.sigmoid(xp[..., hidden : 2 * hidden] + hp[..., hidden : 2 * hidden])
    n = jnp.tanh(xp[..., 2 * hidden :] + r * hp[..., 2 * hidden :])
    h = jnp.where(m_DxBx1, (1.0 - z) * n + z * h_DxBxH, h_DxBxH)
    return h, h

  h0 = jnp.zeros((num_dirs, batch, hidden), jnp.float32)
  xs = (*projs, _step_masks(mask_TxB, num_dirs))
  return jax.lax.scan(step, h0, xs, unroll=unroll)[1]


# --------------------------------------------------------------------------------------- towers


def _dtype_key(dtype: Any) -> str | None:
  """A hashable static form of a dtype for custom_vjp's nondiff arguments."""
  return None if dtype is None else jnp.dtype(dtype).name


class _TextTower(nnx.Module):
  """Common call signature: `tower(tokens_BxT, length_B, *, rngs=None)` = `encode(...)`."""

  def __call__(self, tokens_BxT: Array, length_B: Array, *, rngs: nnx.Rngs | None = None) -> Array:
    return self.encode(tokens_BxT, length_B, rngs=rngs)


def _init_recurrent_params(
  in_features: int, hidden_size: int, num_dirs: int, num_gates: int, rngs: nnx.Rngs
) -> tuple[Array, Array]:
  """(D, E, G) input kernel (lecun normal) and (D, H, G) recurrent kernel, each (., H) gate
  block of each direction initialised on its own (orthogonal for the recurrent one), as flax's
  cells do."""

  def stacked(init, rows):
    keys = jax.random.split(rngs.params(), num_dirs * num_gates)
    blocks = [init(k, (rows, hidden_size), jnp.float32) for k in keys]
    return jnp.stack(
      [
        jnp.concatenate(blocks[d * num_gates : (d + 1) * num_gates], axis=-1)
        for d in range(num_dirs)
      ]
    )

  return (
    stacked(nnx.initializers.lecun_normal(), in_features),
    stacked(nnx.initializers.orthogonal(), hidden_size),
  )


def _check_impl(impl: str, allowed=cudnn_lstm.IMPLS) -> str:
  if impl not in allowed:
    raise ValueError(f"model.text.impl must be one of {allowed}, got {impl!r}")
  return impl


class BiLSTMLayer(nnx.Module):
  """One (bi)directional LSTM layer: `(x_TxBxE, mask_TxB) -> h_TxDxBxH` in scan order.

  Params: w_ih (D, E, 4H), w_hh (D, H, 4H), bias (D, 4H); gate order i, f, g, o.
  impl: 'fused' (one scan, hand-written VJP; any backend) or 'cudnn' (jaxmm.models.cudnn_lstm;
  NVIDIA GPUs, float32). Both read the same params.
  """

  def __init__(
    self,
    in_features: int,
    hidden_size: int,
    *,
    bidirectional: bool = True,
    unroll: int = DEFAULT_UNROLL,
    dtype: Any = None,
    impl: str = "fused",
    rngs: nnx.Rngs,
  ):
    num_dirs = 2 if bidirectional else 1
    self.unroll = unroll
    self.dtype = dtype
    self.impl = _check_impl(impl)
    w_ih, w_hh = _init_recurrent_params(in_features, hidden_size, num_dirs, 4, rngs)
    self.w_ih, self.w_hh = nnx.Param(w_ih), nnx.Param(w_hh)
    self.bias = nnx.Param(jnp.zeros((num_dirs, 4 * hidden_size), jnp.float32))

  def __call__(self, x_TxBxE: Array, mask_TxB: Array) -> Array:
    if self.impl == "cudnn":
      return cudnn_lstm.cudnn_lstm_layer(
        x_TxBxE, self.w_ih[...], self.w_hh[...], self.bias[...], mask_TxB
      )
    return fused_lstm_layer(
      x_TxBxE,
      self.w_ih[...],
      self.w_hh[...],
      self.bias[...],
      mask_TxB,
      self.unroll,
      _dtype_key(self.dtype),
    )


class LSTMTower(_TextTower):
  """Embedding -> stacked (Bi-)LSTM -> pooling. `encode(tokens_BxT, length_B) -> (B, D*H)`.

  pooling: 'last' = [fwd state at the last real token, bwd state at the first token] (as
  `nnx.Bidirectional` with `seq_lengths`); 'mean'/'max' over real tokens. Stacked layers take the
  concatenated per-token outputs of the layer below. Dropout (rate `dropout`) is applied to the
  input of every layer, embeddings included. dtype: matmul compute dtype (float32 features out).
  impl: 'fused' | 'cudnn', see BiLSTMLayer.
  """

  def __init__(
    self,
    vocab_size: int,
    embed_dim: int,
    hidden_size: int,
    *,
    num_layers: int = 1,
    bidirectional: bool = True,
    dropout: float = 0.0,
    pooling: str = "last",
    embedding_init: np.ndarray | None = None,
    unroll: int = DEFAULT_UNROLL,
    dtype: Any = None,
    impl: str = "fused",
    rngs: nnx.Rngs,
  ):
    if pooling not in ("last", "mean", "max"):
      raise ValueError(f"unknown pooling {pooling!r}; expected 'last', 'mean' or 'max'")
    self.num_dirs = 2 if bidirectional else 1
    self.pooling = pooling
    self.embed = make_embed(vocab_size, embed_dim, embedding_init, rngs=rngs)
    self.dropout = nnx.Dropout(dropout)
    self.layers = nnx.List(
      [
        BiLSTMLayer(
          embed_dim if k == 0 else hidden_size * self.num_dirs,
          hidden_size,
          bidirectional=bidirectional,
          unroll=unroll,
          dtype=dtype,
          impl=impl,
          rngs=rngs,
        )
        for k in range(num_layers)
      ]
    )
    self.out_features = hidden_size * self.num_dirs

  def _run(self, tokens_BxT: Array, length_B: Array, rngs) -> tuple[Array, Array]:
    """-> (last layer's h in scan order (T, D, B, H), mask_TxB)."""
    mask_TxB = length_mask(length_B, tokens_BxT.shape[1]).T
    x_TxBxE = self.embed(tokens_BxT.T)  # time-major straight from the lookup
    ys = None
    for k, layer in enumerate(self.layers):
      if k > 0:
        x_TxBxE = _scan_to_positions(ys)
      ys = layer(self.dropout(x_TxBxE, rngs=rngs), mask_TxB)
    return ys, mask_TxB

  def encode(self, tokens_BxT: Array, length_B: Array, *, rngs: nnx.Rngs | None = None) -> Array:
    ys, mask_TxB = self._run(tokens_BxT, length_B, rngs)
    return _pool_steps(ys, _step_masks(mask_TxB, self.num_dirs), length_B, self.pooling)

  def sequence(self, tokens_BxT: Array, length_B: Array, *, rngs: nnx.Rngs | None = None) -> Array:
    """Per-position outputs of the last layer, (B, T, D*H): [fwd state, bwd state] at each real
    token, for token-level heads (masked-token prediction). Padding positions carry no meaning."""
    ys, _ = self._run(tokens_BxT, length_B, rngs)
    return _scan_to_positions(ys).transpose(1, 0, 2)


class GRUAttentionTower(_TextTower):
  """Embedding -> (Bi-)GRU -> additive attention pooling `softmax(v . tanh(W h + b))` over real
  tokens (padding scores are -inf, so its weights are exactly 0). `encode -> (B, D*H)`."""

  def __init__(
    self,
    vocab_size: int,
    embed_dim: int,
    hidden_size: int,
    *,
    bidirectional: bool = True,
    attention_dim: int | None = None,
    dropout: float = 0.0,
    embedding_init: np.ndarray | None = None,
    unroll: int = DEFAULT_UNROLL,
    dtype: Any = None,
    impl: str = "fused",
    rngs: nnx.Rngs,
  ):
    _check_impl(impl, ("fused",))  # no cuDNN GRU in jax
    num_dirs = 2 if bidirectional else 1
    self.unroll = unroll
    self.dtype = dtype
    self.out_features = hidden_size * num_dirs
    attention_dim = attention_dim or self.out_features
    self.embed = make_embed(vocab_size, embed_dim, embedding_init, rngs=rngs)
    self.dropout = nnx.Dropout(dropout)
    w_ih, w_hh = _init_recurrent_params(embed_dim, hidden_size, num_dirs, 3, rngs)
    self.w_ih, self.w_hh = nnx.Param(w_ih), nnx.Param(w_hh)
    self.b_ih = nnx.Param(jnp.zeros((num_dirs, 3 * hidden_size), jnp.float32))
    self.b_hh = nnx.Param(jnp.zeros((num_dirs, 3 * hidden_size), jnp.float32))
    self.attn_proj = nnx.Linear(self.out_features, attention_dim, dtype=dtype, rngs=rngs)
    self.attn_query = nnx.Linear(attention_dim, 1, use_bias=False, dtype=dtype, rngs=rngs)

  def sequence(self, tokens_BxT: Array, length_B: Array, *, rngs: nnx.Rngs | None = None) -> Array:
    """Per-position GRU outputs (B, T, D*H), [fwd, bwd] at each token (padding: no meaning)."""
    x_TxBxE = self.dropout(self.embed(tokens_BxT.T), rngs=rngs)
    mask_TxB = length_mask(length_B, tokens_BxT.shape[1]).T
    ys = fused_gru_layer(
      x_TxBxE,
      self.w_ih[...],
      self.b_ih[...],
      self.w_hh[...],
      self.b_hh[...],
      mask_TxB,
      self.unroll,
      _dtype_key(self.dtype),
    )
    return _scan_to_positions(ys).transpose(1, 0, 2)

  def attend(
    self, tokens_BxT: Array, length_B: Array, *, rngs: nnx.Rngs | None = None
  ) -> tuple[Array, Array]:
    """-> (feats_BxD, attention weights_BxT); the weights are exactly 0 on padding."""
    mask_BxT = length_mask(length_B, tokens_BxT.shape[1])
    # Attention scores a token by its fwd and bwd states together, so in position order.
    h_BxTxD = self.sequence(tokens_BxT, length_B, rngs=rngs)
    scores_BxT = self.attn_query(jnp.tanh(self.attn_proj(h_BxTxD)))[..., 0].astype(jnp.float32)
    weights_BxT = jax.nn.softmax(jnp.where(mask_BxT, scores_BxT, -jnp.inf), axis=-1)
    return jnp.einsum("bt,btd->bd", weights_BxT, h_BxTxD), weights_BxT

  def encode(self, tokens_BxT: Array, length_B: Array, *, rngs: nnx.Rngs | None = None) -> Array:
    return self.attend(tokens_BxT, length_B, rngs=rngs)[0]


class EmbeddingMLPTower(_TextTower):
  """S0's MLP: embed `max_len` tokens (padding zeroed), flatten, ReLU MLP. `-> (B, hidden[-1])`.

  Sequences are cut or zero-padded to `max_len`, so tokens past `max_len` are ignored.
  """

  def __init__(
    self,
    vocab_size: int,
    embed_dim: int = 32,
    max_len: int = 32,
    hidden: Sequence[int] = (1024, 512),
    *,
    dropout: float = 0.0,
    embedding_init: np.ndarray | None = None,
    dtype: Any = None,
    rngs: nnx.Rngs,
  ):
    self.max_len = max_len
    self.embed = make_embed(vocab_size, embed_dim, embedding_init, rngs=rngs)
    sizes = [max_len * embed_dim, *hidden]
    self.linears = nnx.List(
      [nnx.Linear(a, b, dtype=dtype, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])]
    )
    self.dropout = nnx.Dropout(dropout)
    self.out_features = sizes[-1]

  def encode(self, tokens_BxT: Array, length_B: Array, *, rngs: nnx.Rngs | None = None) -> Array:
    batch, num_steps = tokens_BxT.shape
    if num_steps >= self.max_len:
      tokens_BxL = tokens_BxT[:, : self.max_len]
    else:
      tokens_BxL = jnp.pad(tokens_BxT, ((0, 0), (0, self.max_len - num_steps)))
    mask_BxL = length_mask(length_B, self.max_len)
    x_BxLxE = jnp.where(mask_BxL[..., None], self.embed(tokens_BxL), 0.0)
    x = x_BxLxE.reshape(batch, -1)
    for linear in self.linears:
      x = self.dropout(jax.nn.relu(linear(x)), rngs=rngs)
    return x.astype(jnp.float32)


class BagOfWordsTower(_TextTower):
  """Mean of the embeddings of the real tokens. `-> (B, embed_dim)`."""

  def __init__(
    self,
    vocab_size: int,
    embed_dim: int,
    *,
    embedding_init: np.ndarray | None = None,
    dtype: Any = None,
    rngs: nnx.Rngs,
  ):
    del dtype  # no matmul: the mean stays float32
    self.embed = make_embed(vocab_size, embed_dim, embedding_init, rngs=rngs)
    self.out_features = embed_dim

  def encode(self, tokens_BxT: Array, length_B: Array, *, rngs: nnx.Rngs | None = None) -> Array:
    del rngs  # no dropout; kept for the common tower signature
    mask_BxT = length_mask(length_B, tokens_BxT.shape[1])
    x_BxTxE = jnp.where(mask_BxT[..., None], self.embed(tokens_BxT), 0.0)
    return x_BxTxE.sum(1) / length_B[:, None].astype(x_BxTxE.dtype)

  def sequence(self, tokens_BxT: Array, length_B: Array, *, rngs: nnx.Rngs | None = None) -> Array:
    """The token embeddings themselves, (B, T, E) (padding: no meaning)."""
    del rngs, length_B
    return self.embed(tokens_BxT)


TEXT_TOWERS: dict[str, Callable[..., Any]] = {
  "lstm": LSTMTower,
  "gru_attention": GRUAttentionTower,
  "mlp": EmbeddingMLPTower,
  "bow": BagOfWordsTower,
}


def text_tower_class(name: str) -> Callable[..., Any]:
  """The class of a text tower in the registry: 'lstm', 'gru_attention', 'mlp', 'bow'."""
  if name not in TEXT_TOWERS:
    raise KeyError(f"unknown text tower {name!r}; known: {sorted(TEXT_TOWERS)}")
  return TEXT_TOWERS[name]


def text_tower_by_name(name: str, **kwargs) -> nnx.Module:
  """Builds a text tower from the registry: 'lstm', 'gru_attention', 'mlp', 'bow'."""
  return text_tower_class(name)(**kwargs)
