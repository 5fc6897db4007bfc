"""A BERT encoder (TinyBERT's shape by default) and the import of Hugging Face BertModel weights.

    BertEncoder(vocab_size=30522, rngs=nnx.Rngs(0))     # TinyBERT: 4 layers, 312 wide, 12 heads
    tower = bert_from_hf("path/to/checkpoint_dir")       # config.json + model.safetensors / .bin

The network is HF's `BertModel`: word + position + token-type embeddings -> LayerNorm (eps 1e-12)
-> post-LN layers (self-attention, exact-erf GELU feed-forward) -> optional pooler (dense + tanh
of [CLS]). Padding keys are masked from `length`, so tokens past `length` change nothing at the
real positions. Single captions: every token type is 0, positions are 0..T-1 (T <= max positions).

`encode` returns the [CLS] state by default (`pooling="cls"`), not the pooler: the pooler is
trained only by next-sentence prediction in BERT and not at all in TinyBERT's general
distillation (which matches hidden states and attentions), and the classifier head on top is an
MLP that learns its own projection; `pooling="pooler"` and `pooling="mean"` are there to compare.

`dtype` (bfloat16 on a GPU) is the matmul operand dtype; params, LayerNorms, softmax, GELU and
the residual stream stay float32, as in jaxmm.models.text. Parity with transformers:
tests/models/test_bert.py. The checkpoint import is a converter, so this module reads files.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmm.models import import_weights
from jaxmm.models.text import length_mask

Array = jax.Array

POOLINGS = ("cls", "pooler", "mean")
_ACTIVATIONS = {
  "gelu": functools.partial(jax.nn.gelu, approximate=False),
  "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
  "relu": jax.nn.relu,
}


def _normal(stddev: float):
  return nnx.initializers.normal(stddev)


def _linear(d_in: int, d_out: int, dtype: Any, init_std: float, rngs: nnx.Rngs) -> nnx.Linear:
  # bf16 operands with a float32 result: the residual stream never rounds to bf16.
  return nnx.Linear(
    d_in,
    d_out,
    dtype=dtype,
    kernel_init=_normal(init_std),
    preferred_element_type=None if dtype is None else jnp.float32,
    rngs=rngs,
  )


class BertLayer(nnx.Module):
  """x = LN(x + attn(x)); x = LN(x + W2 act(W1 x)), dropout on both residual branches."""

  def __init__(
    self,
    hidden_size: int,
    num_heads: int,
    intermediate_size: int,
    *,
    dropout: float = 0.1,
    attention_dropout: float = 0.1,
    layer_norm_eps: float = 1e-12,
    activation: str = "gelu",
    init_std: float = 0.02,
    dtype: Any = None,
    rngs: nnx.Rngs,
  ):
    if hidden_size % num_heads:
      raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
    if activation not in _ACTIVATIONS:
      raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    self.num_heads = num_heads
    self.dtype = dtype
    self.activation = activation
    lin = functools.partial(_linear, dtype=dtype, init_std=init_std, rngs=rngs)
    self.query = lin(hidden_size, hidden_size)
    self.key = lin(hidden_size, hidden_size)
    self.value = lin(hidden_size, hidden_size)
    self.attn_out = lin(hidden_size, hidden_size)
    self.attn_norm = nnx.LayerNorm(hidden_size, epsilon=layer_norm_eps, rngs=rngs)
    self.ffn_in = lin(hidden_size, intermediate_size)
    self.ffn_out = lin(intermediate_size, hidden_size)
    self.ffn_norm = nnx.LayerNorm(hidden_size, epsilon=layer_norm_eps, rngs=rngs)
    self.dropout = nnx.Dropout(dropout)
    self.attention_dropout = nnx.Dropout(attention_dropout)

  def attention(self, x_BxTxD: Array, mask_BxT: Array, rngs: nnx.Rngs | None) -> Array:
    b, t, d = x_BxTxD.shape
    h = self.num_heads
    q, k, v = (f(x_BxTxD).reshape(b, t, h, d // h) for f in (self.query, self.key, self.value))
    cast = (lambda a: a) if self.dtype is None else (lambda a: a.astype(self.dtype))
    scores_BxHxTxT = jnp.einsum(
      "bqhe,bkhe->bhqk", cast(q), cast(k), preferred_element_type=jnp.float32
    ) / np.sqrt(d // h)
    # The most negative float, not -inf: exp() gives exactly 0 all the same, and a row with no
    # real key (length 0) would be uniform rather than NaN.
    scores_BxHxTxT = jnp.where(
      mask_BxT[:, None, None, :], scores_BxHxTxT, jnp.finfo(jnp.float32).min
    )
    probs = self.attention_dropout(jax.nn.softmax(scores_BxHxTxT, axis=-1), rngs=rngs)
    out = jnp.einsum("bhqk,bkhe->bqhe", cast(probs), cast(v), preferred_element_type=jnp.float32)
    return self.attn_out(out.reshape(b, t, d))

  def __call__(self, x_BxTxD: Array, mask_BxT: Array, *, rngs: nnx.Rngs | None = None) -> Array:
    attn = self.attention(x_BxTxD, mask_BxT, rngs)
    x_BxTxD = self.attn_norm(x_BxTxD + self.dropout(attn, rngs=rngs))
    ffn = self.ffn_out(_ACTIVATIONS[self.activation](self.ffn_in(x_BxTxD)))
    return self.ffn_norm(x_BxTxD + self.dropout(ffn, rngs=rngs))


class BertEncoder(nnx.Module):
  """`encode(tokens_BxT, length_B) -> (B, hidden_size)`; `sequence(...) -> (B, T, hidden_size)`.

  Defaults are TinyBERT's General 4L-312D. Token ids follow the checkpoint's vocab.txt
  (jaxmm.data.wordpiece): [PAD] = 0, each caption `[CLS] ... [SEP]`. The pooler always exists,
  so every checkpoint array has a home; it is used only with `pooling="pooler"`.
  """

  def __init__(
    self,
    vocab_size: int = 30522,
    hidden_size: int = 312,
    num_layers: int = 4,
    num_heads: int = 12,
    intermediate_size: int = 1200,
    *,
    max_position_embeddings: int = 512,
    type_vocab_size: int = 2,
    dropout: float = 0.1,
    attention_dropout: float = 0.1,
    layer_norm_eps: float = 1e-12,
    activation: str = "gelu",
    pooling: str = "cls",
    init_std: float = 0.02,
    embedding_init: np.ndarray | None = None,
    dtype: Any = None,
    rngs: nnx.Rngs,
  ):
    if pooling not in POOLINGS:
      raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    self.pooling = pooling
    # The sizes, to compare with a checkpoint's config.json when its arrays do not fit.
    self.sizes = dict(
      vocab_size=vocab_size,
      hidden_size=hidden_size,
      num_layers=num_layers,
      num_heads=num_heads,
      intermediate_size=intermediate_size,
      max_position_embeddings=max_position_embeddings,
      type_vocab_size=type_vocab_size,
    )
    self.max_position_embeddings = max_position_embeddings
    self.out_features = hidden_size
    if embedding_init is None:
      word_init = _normal(init_std)
    else:  # word vectors as the start (one row per vocab.txt token)
      matrix = np.asarray(embedding_init, np.float32)
      if matrix.shape != (vocab_size, hidden_size):
        raise ValueError(
          f"embedding_init has shape {matrix.shape}, expected {(vocab_size, hidden_size)}"
        )
      word_init = lambda key, shape, dtype: jnp.asarray(matrix, dtype)  # noqa: E731
    self.word_embed = nnx.Embed(vocab_size, hidden_size, embedding_init=word_init, rngs=rngs)
    self.position_embed = nnx.Embed(
      max_position_embeddings, hidden_size, embedding_init=_normal(init_std), rngs=rngs
    )
    self.token_type_embed = nnx.Embed(
      type_vocab_size, hidden_size, embedding_init=_normal(init_std), rngs=rngs
    )
    self.embed_norm = nnx.LayerNorm(hidden_size, epsilon=layer_norm_eps, rngs=rngs)
    self.dropout = nnx.Dropout(dropout)
    self.layers = nnx.List(
      [
        BertLayer(
          hidden_size,
          num_heads,
          intermediate_size,
          dropout=dropout,
          attention_dropout=attention_dropout,
          layer_norm_eps=layer_norm_eps,
          activation=activation,
          init_std=init_std,
          dtype=dtype,
          rngs=rngs,
        )
        for _ in range(num_layers)
      ]
    )
    self.pooler = _linear(hidden_size, hidden_size, dtype, init_std, rngs)

  def __call__(self, tokens_BxT: Array, length_B: Array, *, rngs: nnx.Rngs | None = None) -> Array:
    return self.encode(tokens_BxT, length_B, rngs=rngs)

  def sequence(self, tokens_BxT: Array, length_B: Array, *, rngs: nnx.Rngs | None = None) -> Array:
    """Last layer's states (B, T, D) float32, HF's `last_hidden_state`, for attention fusion and
    token-level heads. Positions past `length` are computed but carry no meaning."""
    num_steps = tokens_BxT.shape[1]
    if num_steps > self.max_position_embeddings:
      raise ValueError(
        f"{num_steps} tokens exceed max_position_embeddings "
        f"{self.max_position_embeddings}; lower the encoder's max_len"
      )
    x_BxTxD = (
      self.word_embed(tokens_BxT)
      + self.position_embed(jnp.arange(num_steps))[None]
      + self.token_type_embed(jnp.zeros_like(tokens_BxT))
    )
    x_BxTxD = self.dropout(self.embed_norm(x_BxTxD), rngs=rngs)
    mask_BxT = length_mask(length_B, num_steps)
    for layer in self.layers:
      x_BxTxD = layer(x_BxTxD, mask_BxT, rngs=rngs)
    return x_BxTxD

  def pool(self, states_BxTxD: Array, length_B: Array) -> Array:
    """(B, T, D) states -> (B, D) by `self.pooling`."""
    if self.pooling == "cls":
      return states_BxTxD[:, 0]
    if self.pooling == "pooler":
      return jnp.tanh(self.pooler(states_BxTxD[:, 0]))
    mask = length_mask(length_B, states_BxTxD.shape[1])[..., None].astype(states_BxTxD.dtype)
    return (states_BxTxD * mask).sum(1) / jnp.maximum(mask.sum(1), 1.0)

  def encode(self, tokens_BxT: Array, length_B: Array, *, rngs: nnx.Rngs | None = None) -> Array:
    return self.pool(self.sequence(tokens_BxT, length_B, rngs=rngs), length_B)


# Variants (sizes only; pass vocab_size, rngs and the rest).
TinyBERT = functools.partial(
  BertEncoder, hidden_size=312, num_layers=4, num_heads=12, intermediate_size=1200
)
BertBase = functools.partial(
  BertEncoder, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072
)


# ---------------------------------------------------------------------- Hugging Face checkpoints

HF_CONFIG = "config.json"
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
# Arrays of BertFor* checkpoints that are not part of the encoder: task heads (`cls.`: MLM / NSP),
# TinyBERT's distillation projections (`fit_dense`) and the position-id buffer.
_IGNORED_PREFIXES = ("cls.", "fit_dense", "qa_outputs.", "classifier.")
_IGNORED_KEYS = ("embeddings.position_ids",)
_EMBEDS = {
  "word_embed": "word_embeddings",
  "position_embed": "position_embeddings",
  "token_type_embed": "token_type_embeddings",
}
_LAYER = {
  "query": "attention.self.query",
  "key": "attention.self.key",
  "value": "attention.self.value",
  "attn_out": "attention.output.dense",
  "attn_norm": "attention.output.LayerNorm",
  "ffn_in": "intermediate.dense",
  "ffn_out": "output.dense",
  "ffn_norm": "output.LayerNorm",
}
_LEAF = {"kernel": "weight", "bias": "bias", "scale": "weight", "embedding": "weight"}


def hf_key(path: tuple) -> str:
  """Our variable path -> the BertModel key: ('layers', 1, 'query', 'kernel') ->
  'encoder.layer.1.attention.self.query.weight'."""
  parts = [str(p) for p in path]
  leaf = _LEAF[parts[-1]]
  if parts[0] in _EMBEDS:
    return f"embeddings.{_EMBEDS[parts[0]]}.{leaf}"
  if parts[0] == "embed_norm":
    return f"embeddings.LayerNorm.{leaf}"
  if parts[0] == "pooler":
    return f"pooler.dense.{leaf}"
  if parts[0] == "layers":
    return f"encoder.layer.{parts[1]}.{_LAYER[parts[2]]}.{leaf}"
  raise KeyError(f"no BertModel name for variable {'/'.join(parts)}")


def hf_config_kwargs(config: Mapping[str, Any] | str | os.PathLike) -> dict[str, Any]:
  """A HF BertConfig (dict, config.json, or a directory holding it) -> BertEncoder kwargs."""
  if not isinstance(config, Mapping):
    path = os.fspath(config)
    path = os.path.join(path, HF_CONFIG) if os.path.isdir(path) else path
    with open(path, encoding="utf-8") as f:
      config = json.load(f)
  if config.get("position_embedding_type", "absolute") != "absolute":
    raise ValueError(
      f"position_embedding_type {config['position_embedding_type']!r}: only "
      "'absolute' is implemented"
    )
  act = config.get("hidden_act", "gelu")
  if act not in _ACTIVATIONS:
    raise ValueError(f"hidden_act {act!r}: one of {sorted(_ACTIVATIONS)} is implemented")
  return dict(
    vocab_size=config["vocab_size"],
    hidden_size=config["hidden_size"],
    num_layers=config["num_hidden_layers"],
    num_heads=config["num_attention_heads"],
    intermediate_size=config["intermediate_size"],
    max_position_embeddings=config.get("max_position_embeddings", 512),
    type_vocab_size=config.get("type_vocab_size", 2),
    dropout=config.get("hidden_dropout_prob", 0.1),
    attention_dropout=config.get("attention_probs_dropout_prob", 0.1),
    layer_norm_eps=config.get("layer_norm_eps", 1e-12),
    activation=act,
    init_std=config.get("initializer_range", 0.02),
  )


@dataclasses.dataclass
class LoadReport:
  """How a checkpoint lined up with the encoder. `mismatched`: (key, file shape, needed shape)."""

  loaded: list[str] = dataclasses.field(default_factory=list)
  missing: list[str] = dataclasses.field(default_factory=list)
  unexpected: list[str] = dataclasses.field(default_factory=list)
  mismatched: list[tuple[str, tuple, tuple]] = dataclasses.field(default_factory=list)
  ignored: list[str] = dataclasses.field(default_factory=list)
  kept: list[str] = dataclasses.field(default_factory=list)  # optional, absent: init kept

  @property
  def ok(self) -> bool:
    return not (self.missing or self.unexpected or self.mismatched)

  def summary(self, limit: int = 10) -> str:
    first = (
      f"loaded {len(self.loaded)} arrays; ignored {len(self.ignored)} non-encoder "
      f"array(s) {self.ignored[:limit]}"
    )
    return "\n".join([first, *import_weights.problem_lines(self, "encoder", limit)])


def _strip_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """BertFor* checkpoints nest the encoder under `bert.`; the heads sit beside it."""
  if any(k.startswith("bert.") for k in state_dict):
    return {k[len("bert.") :] if k.startswith("bert.") else k: v for k, v in state_dict.items()}
  return dict(state_dict)


def _legacy_names(key: str) -> str:
  # Old TF-converted checkpoints name LayerNorm params gamma/beta (HF renames them on load too).
  return key.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
    "LayerNorm.beta", "LayerNorm.bias"
  )


def load_hf_state_dict(
  encoder: BertEncoder,
  state_dict: Mapping[str, Any],
  *,
  strict: bool = True,
  optional: tuple[str, ...] = (),
) -> LoadReport:
  """Copies a BertModel / BertFor* state dict (numpy arrays) into `encoder` in place.

  Linear weights (out, in) are transposed to our (in, out) kernels. strict: raise ValueError
  naming every missing / unexpected / mismatched key, changing nothing. optional: key prefixes
  the checkpoint may lack (e.g. 'pooler.' for an encoder that pools [CLS]): those variables keep
  their init and are listed in `report.kept`.
  """
  state_dict = {_legacy_names(k): v for k, v in _strip_prefix(state_dict).items()}
  report, updates, used = LoadReport(), [], set()
  for path, var in nnx.to_flat_state(nnx.state(encoder, nnx.Param)):
    key = hf_key(path)
    current = var.get_value()  # `var[...]` fails on an abstract (nnx.eval_shape) encoder
    linear = path[-1] == "kernel"
    want = tuple(current.shape[::-1]) if linear else tuple(current.shape)
    if key not in state_dict:
      (report.kept if key.startswith(optional) else report.missing).append(key)
      continue
    used.add(key)
    array = np.asarray(state_dict[key], np.float32)
    if array.shape != want:
      report.mismatched.append((key, array.shape, want))
      continue
    updates.append((path, var.replace(jnp.asarray(array.T if linear else array, current.dtype))))
    report.loaded.append(key)
  for key in state_dict:
    if key in used:
      continue
    if key.startswith(_IGNORED_PREFIXES) or key in _IGNORED_KEYS:
      report.ignored.append(key)
    else:
      report.unexpected.append(key)
  if strict and not report.ok:
    raise ValueError(f"the checkpoint does not fit the BERT encoder:\n{report.summary()}")
  if updates:
    nnx.update(encoder, nnx.from_flat_state(updates))
  return report


def hf_weights_file(path: str | os.PathLike) -> str:
  """A checkpoint directory -> its weights file (model.safetensors first); a file -> itself."""
  path = os.fspath(path)
  if not os.path.isdir(path):
    return path
  for name in HF_WEIGHTS:
    if os.path.isfile(os.path.join(path, name)):
      return os.path.join(path, name)
  raise FileNotFoundError(
    f"{path}: no {' or '.join(HF_WEIGHTS)} (sharded checkpoints are not "
    "read; save the model with save_pretrained(..., max_shard_size='10GB'))"
  )


def load_hf_checkpoint(
  encoder: BertEncoder,
  path: str | os.PathLike,
  *,
  strict: bool = True,
  optional: tuple[str, ...] = (),
) -> LoadReport:
  """Loads a HF checkpoint (directory or weights file) into `encoder`; errors name the file and
  the sizes where the checkpoint's config.json (beside a weights file, or in the directory)
  differs from the encoder."""
  weights = hf_weights_file(path)
  if not os.path.isfile(weights):
    raise FileNotFoundError(
      f"{weights}: no such BERT checkpoint (a .safetensors / .bin file or a "
      "directory holding one and its config.json)"
    )
  try:
    return load_hf_state_dict(
      encoder, import_weights.read_state_dict(weights), strict=strict, optional=optional
    )
  except ValueError as e:
    raise ValueError(f"{weights}: {e}{_size_hint(encoder, weights)}") from None


def _size_hint(encoder: BertEncoder, weights: str) -> str:
  """The sizes where the encoder and the checkpoint's config.json differ, as options to set."""
  config = os.path.join(os.path.dirname(os.path.abspath(weights)), HF_CONFIG)
  if not os.path.isfile(config):
    return ""
  try:
    theirs = hf_config_kwargs(config)
  except (ValueError, KeyError) as e:
    return f"\n{config}: {e!r}"
  diff = [
    f"{k}={theirs[k]} (the encoder has {v})"
    for k, v in encoder.sizes.items()
    if theirs[k] != v and k != "vocab_size"
  ]
  hints = [f"{config} says {', '.join(diff)}: set them in model.text"] if diff else []
  if theirs["vocab_size"] != encoder.sizes["vocab_size"]:
    hints.append(
      f"{config} says vocab_size={theirs['vocab_size']} but the text encoder has "
      f"{encoder.sizes['vocab_size']} tokens: use the checkpoint's vocab.txt "
      "(model.text.vocab) in a new workdir"
    )
  return "".join(f"\n{h}" for h in hints)


def bert_from_hf(
  path: str | os.PathLike,
  *,
  dtype: Any = None,
  pooling: str = "cls",
  vocab_size: int | None = None,
  **overrides,
) -> BertEncoder:
  """A BertEncoder shaped by `path/config.json` and holding the checkpoint's weights.

  vocab_size: the tokenizer's vocabulary size, checked against the checkpoint's. overrides:
  other BertEncoder kwargs (dropout, ...), applied over the config's.
  """
  kwargs = hf_config_kwargs(path)
  if vocab_size is not None and vocab_size != kwargs["vocab_size"]:
    raise ValueError(
      f"the tokenizer has {vocab_size} tokens but {os.fspath(path)}'s config.json "
      f"says vocab_size {kwargs['vocab_size']}: use the checkpoint's vocab.txt"
    )
  kwargs.update(overrides)
  # Abstract build: the strict load below replaces every array, so no random init is run.
  encoder = nnx.eval_shape(
    lambda: BertEncoder(**kwargs, pooling=pooling, dtype=dtype, rngs=nnx.Rngs(0))
  )
  load_hf_checkpoint(encoder, path, strict=True)
  return encoder
