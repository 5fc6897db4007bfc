"""BERT encoder: shapes, padding invariance, dropout, bf16, checkpoint import and parity with
transformers' BertModel (built here with random weights)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxmm.models import bert
from tests.conftest import import_torchvision

VOCAB, HIDDEN, LAYERS, HEADS, INTER, MAX_POS = 100, 32, 2, 4, 37, 64
LENGTH_B = np.array([9, 3, 1, 6], np.int32)
T = 9


def _tokens(length_B=LENGTH_B, num_steps=T, seed=0):
  """(B, T) random real tokens, [PAD]=0 past each length."""
  rng = np.random.default_rng(seed)
  tokens_BxT = rng.integers(1, VOCAB, size=(len(length_B), num_steps)).astype(np.int32)
  tokens_BxT[np.arange(num_steps)[None, :] >= length_B[:, None]] = 0
  return tokens_BxT


def _encoder(**kwargs):
  kwargs = {"dropout": 0.1, "attention_dropout": 0.1, **kwargs}
  return bert.BertEncoder(
    VOCAB, HIDDEN, LAYERS, HEADS, INTER, max_position_embeddings=MAX_POS, rngs=nnx.Rngs(0), **kwargs
  )


@pytest.fixture(scope="module")
def encoder():
  enc = _encoder()
  enc.eval()
  return enc


def _run(enc, tokens_BxT, length_B=LENGTH_B, rngs=None):
  """(encode, sequence) under one jit: eager op-by-op dispatch is slower here than compiling."""

  @nnx.jit
  def both(enc, tokens, length, rngs):
    return enc.encode(tokens, length, rngs=rngs), enc.sequence(tokens, length, rngs=rngs)

  return both(enc, jnp.asarray(tokens_BxT), jnp.asarray(length_B), rngs)


def test_shapes_and_pooling(encoder):
  feats_BxD, states_BxTxD = _run(encoder, _tokens())
  assert feats_BxD.shape == (len(LENGTH_B), HIDDEN) and encoder.out_features == HIDDEN
  assert states_BxTxD.shape == (len(LENGTH_B), T, HIDDEN)
  assert feats_BxD.dtype == jnp.float32 and np.isfinite(np.asarray(states_BxTxD)).all()
  np.testing.assert_allclose(feats_BxD, states_BxTxD[:, 0], atol=1e-6)  # pooling="cls"
  encoder.pooling = "mean"
  mean_BxD = encoder.pool(states_BxTxD, jnp.asarray(LENGTH_B))
  encoder.pooling = "pooler"
  pooled_BxD = encoder.pool(states_BxTxD, jnp.asarray(LENGTH_B))
  encoder.pooling = "cls"
  np.testing.assert_allclose(mean_BxD[1], states_BxTxD[1, :3].mean(0), atol=1e-6)
  assert np.abs(np.asarray(pooled_BxD)).max() <= 1.0  # tanh
  with pytest.raises(ValueError, match="pooling"):
    _encoder(pooling="max")
  with pytest.raises(ValueError, match="max_position_embeddings"):
    encoder.sequence(jnp.zeros((1, MAX_POS + 1), jnp.int32), jnp.ones((1,), jnp.int32))


def test_padding_invariance(encoder):
  tokens_BxT = _tokens()
  feats_BxD, states_BxTxD = _run(encoder, tokens_BxT)
  # Different tokens past `length`, and a longer T: the real positions do not move.
  noisy_BxT = np.pad(tokens_BxT, ((0, 0), (0, 4)))
  pad_mask = np.arange(T + 4)[None, :] >= LENGTH_B[:, None]
  noisy_BxT[pad_mask] = np.random.default_rng(1).integers(1, VOCAB, size=pad_mask.sum())
  feats2_BxD, states2_BxTxD = _run(encoder, noisy_BxT)
  np.testing.assert_allclose(feats2_BxD, feats_BxD, atol=1e-5)
  real = np.arange(T)[None, :] < LENGTH_B[:, None]
  np.testing.assert_allclose(
    np.asarray(states2_BxTxD)[:, :T][real], np.asarray(states_BxTxD)[real], atol=1e-5
  )


def test_dropout_only_in_training():
  enc = _encoder(dropout=0.5, attention_dropout=0.5)
  tokens_BxT = _tokens()
  enc.eval()
  a, _ = _run(enc, tokens_BxT, rngs=nnx.Rngs(dropout=1))
  b, _ = _run(enc, tokens_BxT, rngs=nnx.Rngs(dropout=2))
  np.testing.assert_array_equal(a, b)
  enc.train()
  c, _ = _run(enc, tokens_BxT, rngs=nnx.Rngs(dropout=1))
  d, _ = _run(enc, tokens_BxT, rngs=nnx.Rngs(dropout=2))
  assert not np.allclose(c, a) and not np.allclose(c, d)


def test_bfloat16_compute_keeps_float32_params(encoder):
  enc16 = _encoder(dtype=jnp.bfloat16)
  nnx.update(enc16, nnx.state(encoder, nnx.Param))
  enc16.eval()
  params = jax.tree.leaves(nnx.state(enc16, nnx.Param))
  assert all(p.dtype == jnp.float32 for p in params)
  feats16_BxD, _ = _run(enc16, _tokens())
  feats_BxD, _ = _run(encoder, _tokens())
  assert feats16_BxD.dtype == jnp.float32
  np.testing.assert_allclose(feats16_BxD, feats_BxD, atol=0.1)  # LayerNorm'd: O(1) values


def _hf_state_dict(enc) -> dict[str, np.ndarray]:
  """Our params under BertModel's names and layouts (Linear weights are (out, in))."""
  out = {}
  for path, var in nnx.to_flat_state(nnx.state(enc, nnx.Param)):
    array = np.asarray(var[...])
    out[bert.hf_key(path)] = array.T if path[-1] == "kernel" else array
  return out


def test_state_dict_round_trip_and_clear_errors(encoder):
  state = _hf_state_dict(encoder)
  assert "encoder.layer.1.attention.self.query.weight" in state
  assert state["encoder.layer.0.intermediate.dense.weight"].shape == (INTER, HIDDEN)
  other = _encoder()
  other.eval()
  # A BertFor* checkpoint: `bert.` prefix, task heads beside it, gamma/beta LayerNorm names.
  wrapped = {f"bert.{k}": v for k, v in state.items()}
  wrapped["cls.predictions.bias"] = np.zeros(VOCAB, np.float32)
  wrapped["bert.embeddings.LayerNorm.gamma"] = wrapped.pop("bert.embeddings.LayerNorm.weight")
  report = bert.load_hf_state_dict(other, wrapped)
  assert report.ok and report.ignored == ["cls.predictions.bias"]
  assert len(report.loaded) == len(state)
  np.testing.assert_array_equal(_run(other, _tokens())[1], _run(encoder, _tokens())[1])

  broken = dict(state)
  del broken["pooler.dense.bias"]
  broken["encoder.layer.2.output.dense.weight"] = np.zeros((HIDDEN, INTER), np.float32)
  broken["embeddings.word_embeddings.weight"] = np.zeros((VOCAB + 1, HIDDEN), np.float32)
  before = np.asarray(other.word_embed.embedding[...])
  with pytest.raises(ValueError) as err:
    bert.load_hf_state_dict(other, broken)
  message = str(err.value)
  assert "missing from the file: pooler.dense.bias" in message
  assert "unexpected (not in the encoder): encoder.layer.2.output.dense.weight" in message
  assert f"embeddings.word_embeddings.weight is {(VOCAB + 1, HIDDEN)}" in message
  np.testing.assert_array_equal(other.word_embed.embedding[...], before)  # nothing changed
  report = bert.load_hf_state_dict(other, broken, strict=False)
  assert not report.ok and len(report.loaded) == len(state) - 2


def test_hf_config_kwargs_and_errors(tmp_path):
  config = {
    "vocab_size": 30522,
    "hidden_size": 312,
    "num_hidden_layers": 4,
    "num_attention_heads": 12,
    "intermediate_size": 1200,
    "hidden_act": "gelu",
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
  }  # TinyBERT's, no eps given
  kwargs = bert.hf_config_kwargs(config)
  abstract = nnx.eval_shape(lambda: bert.BertEncoder(**kwargs, rngs=nnx.Rngs(0)))
  tiny = nnx.eval_shape(lambda: bert.TinyBERT(rngs=nnx.Rngs(0)))
  shapes = lambda m: [
    (p, v.get_value().shape)  # noqa: E731
    for p, v in nnx.to_flat_state(nnx.state(m, nnx.Param))
  ]
  assert shapes(abstract) == shapes(tiny) and kwargs["layer_norm_eps"] == 1e-12
  n_params = sum(np.prod(s) for _, s in shapes(tiny))
  assert n_params == 14_350_248  # TinyBERT General 4L-312D's BertModel, pooler included
  with pytest.raises(ValueError, match="position_embedding_type"):
    bert.hf_config_kwargs({**config, "position_embedding_type": "relative_key"})
  with pytest.raises(FileNotFoundError, match="model.safetensors or pytorch_model.bin"):
    bert.hf_weights_file(tmp_path)


def import_transformers():
  """transformers (with torch), or skip the test."""
  pytest.importorskip("torch")
  import_torchvision()  # transformers imports it whenever it is installed
  return pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_bert():
  """transformers' BertConfig and BertModel, or skip."""
  transformers = import_transformers()
  return transformers.BertConfig, transformers.BertModel


@pytest.mark.parametrize("file_format", ["safetensors", "bin"])
def test_parity_with_transformers(hf_bert, tmp_path, file_format):
  import torch

  config_cls, model_cls = hf_bert
  config = config_cls(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    num_hidden_layers=LAYERS,
    num_attention_heads=HEADS,
    intermediate_size=INTER,
    max_position_embeddings=MAX_POS,
  )
  torch.manual_seed(0)
  reference = model_cls(config).eval()
  reference.save_pretrained(tmp_path)
  if file_format == "bin":  # the older torch pickle, as TinyBERT's own checkpoint is
    (tmp_path / "model.safetensors").unlink()
    torch.save(
      {f"bert.{k}": v for k, v in reference.state_dict().items()}, tmp_path / "pytorch_model.bin"
    )

  enc = bert.bert_from_hf(tmp_path, pooling="pooler", vocab_size=VOCAB)
  enc.eval()
  tokens_BxT = _tokens()
  mask_BxT = np.arange(T)[None, :] < LENGTH_B[:, None]
  with torch.no_grad():
    out = reference(
      input_ids=torch.from_numpy(tokens_BxT.astype(np.int64)),
      attention_mask=torch.from_numpy(mask_BxT.astype(np.int64)),
    )
  pooled_BxD, states_BxTxD = _run(enc, tokens_BxT)
  np.testing.assert_allclose(states_BxTxD, out.last_hidden_state.numpy(), atol=1e-4, rtol=0)
  np.testing.assert_allclose(pooled_BxD, out.pooler_output.numpy(), atol=1e-4, rtol=0)
  with pytest.raises(ValueError, match="vocab.txt"):
    bert.bert_from_hf(tmp_path, vocab_size=VOCAB + 1)
  # A tower of other sizes: the error says which sizes config.json has.
  wide = nnx.eval_shape(
    lambda: bert.BertEncoder(
      VOCAB, 2 * HIDDEN, LAYERS, HEADS, INTER, max_position_embeddings=MAX_POS, rngs=nnx.Rngs(0)
    )
  )
  with pytest.raises(
    ValueError,
    match=f"says hidden_size={HIDDEN} \\(the encoder has {2 * HIDDEN}\\): set them in model.text",
  ):
    bert.load_hf_checkpoint(wide, tmp_path)


def test_registry_builds_bert_and_checks_its_options():
  import ml_collections

  from jaxmm.models import registry

  cfg = ml_collections.ConfigDict(
    dict(
      name="bert",
      hidden_size=HIDDEN,
      num_layers=1,
      num_heads=HEADS,
      intermediate_size=INTER,
      max_position_embeddings=MAX_POS,
      pooling="mean",
      weights="",
    )
  )
  model_cfg = ml_collections.ConfigDict(dict(text=cfg, mode="text"))
  registry.check_model_config(model_cfg)
  tower = nnx.eval_shape(
    lambda: registry.build_text_tower(cfg, vocab_size=VOCAB, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
  )
  assert isinstance(tower, bert.BertEncoder) and tower.pooling == "mean"
  assert tower.sizes["vocab_size"] == VOCAB and len(tower.layers) == 1
  assert hasattr(tower, "sequence") and tower.out_features == HIDDEN  # attention fusion's needs
  cfg.embed_dim = 8  # an LSTM option left in the section
  with pytest.raises(ValueError, match=r"model\.text\.embed_dim: not an option"):
    registry.check_model_config(model_cfg)
  cfg.name = "transformer"
  with pytest.raises(KeyError, match="'bert'"):
    registry.check_model_config(model_cfg)


def test_registry_refuses_word_vectors_and_missing_files_for_bert(tmp_path):
  import ml_collections

  from jaxmm.models import registry

  def model_cfg(**text):
    base = dict(name="bert", hidden_size=HIDDEN, num_heads=HEADS, vocab="", weights="")
    return ml_collections.ConfigDict(dict(text={**base, **text}, mode="text"))

  registry.check_model_config(model_cfg(vocab=""))
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
  registry.check_model_config(model_cfg(vocab=str(vocab)))  # vocab is not a constructor option
  with pytest.raises(FileNotFoundError, match="model.text.vocab='missing.txt'"):
    registry.check_model_config(model_cfg(vocab="missing.txt"))
  with pytest.raises(ValueError, match="word_vectors.source=''"):
    registry.check_model_config(model_cfg(word_vectors=dict(source="glove", path="g.txt")))
  lstm = ml_collections.ConfigDict(
    dict(text=dict(name="lstm", embed_dim=4, weights="bert_dir"), mode="text")
  )
  with pytest.raises(ValueError, match="BERT tower only"):
    registry.check_model_config(lstm)
