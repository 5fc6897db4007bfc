"""The run's text encoder: word-level or WordPiece by the text tower, from a vocab.txt (given, or
beside the BERT weights) or fitted on the training captions, reused from the workdir."""

from __future__ import annotations

import json

import pytest
from ml_collections import config_dict

from jaxmm.data import encoders, text
from jaxmm.data import wordpiece as wp

CAPTIONS = ["A dog runs on the grass.", "Two dogs and a frisbee", "a man rides a skateboard"]
HF_VOCAB = [
  "[PAD]",
  "[unused0]",
  "[UNK]",
  "[CLS]",
  "[SEP]",
  "[MASK]",
  "[unused1]",
  "a",
  "dog",
  "##s",
  "man",
  "the",
  "on",
]


def _data(**kw):
  d = dict(
    max_len=12, min_freq=1, vocab_size=0, stem=False, remove_stopwords=False, lemmatize=False
  )
  d.update(kw)
  return config_dict.ConfigDict(d)


def _bert(**kw):
  return config_dict.ConfigDict({**dict(name="bert", vocab="", weights="", hidden_size=24), **kw})


@pytest.fixture
def checkpoint_dir(tmp_path):
  """A checkpoint folder as a user downloads it: weights, config.json and vocab.txt."""
  folder = tmp_path / "tiny_bert"
  folder.mkdir()
  (folder / "vocab.txt").write_text("\n".join(HF_VOCAB) + "\n", encoding="utf-8")
  (folder / "model.safetensors").write_bytes(b"")
  return folder


def test_fitted_wordpiece_vocab_covers_unseen_words_with_pieces():
  enc = wp.WordPieceEncoder.fit(CAPTIONS, max_len=16)
  tokens = enc.vocab.tokens
  assert tokens[:5] == wp.SPECIAL_TOKENS
  assert {"d", "##d", "dog", "dogs", "frisbee", "."} <= set(tokens)
  assert enc.first_word_id == 5 and enc.mask_id == 4
  assert enc.boundary_ids == (enc.vocab.cls_id, enc.vocab.sep_id)
  # An unseen word splits into a known word's prefix and characters, never [UNK].
  assert enc.tokenize("frisbees Dogman") == ["frisbee", "##s", "dog", "##m", "##a", "##n"]
  ids, length = enc.encode("a dog")
  assert (ids[0], ids[length - 1]) == (enc.vocab.cls_id, enc.vocab.sep_id)
  assert enc.tokenize("a ж") == ["a", "[UNK]"]  # a character no training word had


def test_fit_min_freq_and_max_size_cut_words_not_characters():
  enc = wp.WordPieceEncoder.fit(CAPTIONS, max_len=8, min_freq=2)
  assert "a" in enc.vocab and "dog" not in enc.vocab and "##g" in enc.vocab
  assert len(wp.WordPieceEncoder.fit(["x"], max_len=8).vocab) == 5 + 2  # specials, x, ##x
  full = wp.WordPieceEncoder.fit(CAPTIONS, max_len=8)
  capped = wp.WordPieceEncoder.fit(CAPTIONS, max_len=8, max_size=len(full.vocab) - 1)
  assert capped.vocab.tokens == full.vocab.tokens[:-1]  # the rarest word goes
  with pytest.raises(ValueError, match="data.vocab_size"):
    wp.WordPieceEncoder.fit(CAPTIONS, max_len=8, max_size=10)


def test_word_level_towers_keep_the_word_level_encoder(tmp_path):
  lstm = config_dict.ConfigDict(dict(name="lstm", embed_dim=8))
  enc = encoders.text_encoder_for(_data(), lstm, str(tmp_path), CAPTIONS)
  assert isinstance(enc, text.TextEncoder)
  assert (enc.mask_id, enc.boundary_ids, enc.first_word_id) == (text.MASK_ID, (), 3)
  assert isinstance(wp.load_text_encoder(tmp_path), text.TextEncoder)


def test_bert_fits_on_captions_saves_and_reuses_the_workdir_vocab(tmp_path):
  enc = encoders.text_encoder_for(_data(), _bert(), str(tmp_path), CAPTIONS)
  assert isinstance(enc, wp.WordPieceEncoder) and enc.max_len == 12
  assert "frisbee" in enc.vocab
  # Resume: vocab.json wins over other captions.
  again = encoders.text_encoder_for(_data(), _bert(), str(tmp_path), ["other words"])
  assert again.to_json() == enc.to_json()
  # A word-level tower on the same workdir is refused, naming the file.
  with pytest.raises(ValueError, match="vocab.json holds a WordPiece vocabulary"):
    encoders.text_encoder_for(
      _data(), config_dict.ConfigDict(dict(name="lstm")), str(tmp_path), CAPTIONS
    )


def test_bert_reads_the_given_vocab_txt_or_the_one_beside_the_weights(checkpoint_dir, tmp_path):
  vocab = checkpoint_dir / "vocab.txt"
  given = encoders.new_text_encoder(_data(), _bert(vocab=str(vocab)), CAPTIONS)
  assert given.vocab.tokens == tuple(HF_VOCAB)
  assert (given.mask_id, given.first_word_id, given.boundary_ids) == (5, 7, (3, 4))
  for weights in (checkpoint_dir, checkpoint_dir / "model.safetensors"):
    beside = encoders.new_text_encoder(_data(), _bert(weights=str(weights)), CAPTIONS)
    assert beside.vocab == given.vocab and beside.lower_case
  assert given.tokenize("Dogs on the MAN") == ["dog", "##s", "on", "the", "man"]
  (checkpoint_dir / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
  cased = encoders.new_text_encoder(_data(), _bert(vocab=str(checkpoint_dir)), CAPTIONS)
  assert not cased.lower_case and cased.tokenize("MAN") == ["[UNK]"]


def test_bert_config_errors_name_the_key_and_the_fix(tmp_path):
  weights = tmp_path / "model.safetensors"
  weights.write_bytes(b"")
  with pytest.raises(FileNotFoundError, match="model.text.vocab=PATH/vocab.txt"):
    encoders.check_text_config(_bert(weights=str(weights)))
  with pytest.raises(FileNotFoundError, match="model.text.vocab='nowhere/vocab.txt'"):
    encoders.check_text_config(_bert(vocab="nowhere/vocab.txt"))
  with pytest.raises(ValueError, match=r"--config.data.stem=False"):
    encoders.text_encoder_for(_data(stem=True), _bert(), None, CAPTIONS)
