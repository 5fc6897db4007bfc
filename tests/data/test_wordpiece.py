"""WordPiece tokenisation: the algorithm on a hand-made vocabulary, the encoder's ids, lengths and
files, and agreement with transformers' BertTokenizer on tricky captions."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from jaxmm.data import text as text_lib
from jaxmm.data import wordpiece as wp
from tests.conftest import import_torchvision

VOCAB = [
  "[PAD]",
  "[UNK]",
  "[CLS]",
  "[SEP]",
  "[MASK]",
  "a",
  "dog",
  "cafe",
  "##s",
  "run",
  "##ning",
  "on",
  "the",
  "skate",
  "##board",
  ".",
  ",",
  "!",
  "'",
  "-",
  "un",
  "##aff",
  "##able",
  "中",
  "国",
  "$",
  "5",
  "##0",
  "man",
  "naive",
  "resume",
  "##e",
  "é",
  "s",
  "t",
  "##t",
  "don",
  "?",
  "(",
  ")",
  "Dog",
  "Café",
  "x",
  "##x",
  "##xx",
]
ID = {t: i for i, t in enumerate(VOCAB)}

CAPTIONS = [
  "A dog running on the skateboard.",
  "Café résumé naïve!",  # accents stripped when lower-casing
  "unaffable dogs,dogs",  # continuation pieces, punctuation glued to words
  "中国人 dog",  # CJK chars are words; 人 is not in the vocabulary
  "$50 a man",  # ASCII symbols split like punctuation
  "don't run-dogs?",
  "x" * 100,
  "x" * 101,  # max_chars_per_word: 100 is fine, 101 is [UNK]
  "",
  "  \t\n ",  # no words: [CLS] [SEP]
  "(skateboards)",
  "DOG\u00a0Skate\u200bboard",  # no-break space splits, zero-width space is dropped
  "CAFÉS",
  "a\x00dog\ufffd",
  "İstanbul dogs",
  "ｆｕｌｌ-width dog",
  "dog " * 20,  # truncated before [SEP]
  "skateboarding dogs",  # no cover for "##ing": the whole word is [UNK]
]


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("bert") / "vocab.txt"
  path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
  return path


def test_basic_tokenize():
  assert wp.basic_tokenize("Hello, WORLD!  Naïve\tcafé") == [
    "hello",
    ",",
    "world",
    "!",
    "naive",
    "cafe",
  ]
  assert wp.basic_tokenize("Naïve Café", lower_case=False) == ["Naïve", "Café"]
  assert wp.basic_tokenize("Naïve", lower_case=False, strip_accents=True) == ["Naive"]
  assert wp.basic_tokenize("Naïve", strip_accents=False) == ["naïve"]
  assert wp.basic_tokenize("我爱dogs") == ["我", "爱", "dogs"]
  assert wp.basic_tokenize("$1,000.50 ^_^") == ["$", "1", ",", "000", ".", "50", "^", "_", "^"]
  assert wp.basic_tokenize("a\x00b\u200bc\x7fd") == ["abcd"]


def test_wordpiece_greedy_longest_match_first():
  vocab = wp.WordPieceVocab(VOCAB)
  assert vocab.wordpiece("unaffable") == ["un", "##aff", "##able"]
  assert vocab.wordpiece("skateboards") == ["skate", "##board", "##s"]
  assert vocab.wordpiece("xxxxx") == ["x", "##xx", "##xx"]  # longest first, not fewest pieces
  assert vocab.wordpiece("skateboarding") == ["[UNK]"]  # a piece without cover: all [UNK]
  assert vocab.wordpiece("x" * 100) == ["x"] + ["##xx"] * 49 + ["##x"]
  assert vocab.wordpiece("x" * 101) == ["[UNK]"]
  assert vocab.wordpiece("xx", max_chars_per_word=1) == ["[UNK]"]


def test_encoder_ids_lengths_and_truncation(vocab_file):
  enc = wp.WordPieceEncoder.from_vocab_file(vocab_file.parent, max_len=8)
  ids_T, length = enc.encode("Dogs run!")
  assert ids_T.dtype == np.int32 and ids_T.shape == (8,) and length == 6
  assert enc.vocab.decode(ids_T, length) == ["[CLS]", "dog", "##s", "run", "!", "[SEP]"]
  assert list(ids_T[length:]) == [0, 0] and enc.pad_id == 0 and enc.mask_id == ID["[MASK]"]
  ids_T, length = enc.encode("dog " * 20)
  assert length == 8 and ids_T[0] == ID["[CLS]"] and ids_T[-1] == ID["[SEP]"]
  assert list(enc.encode("")[0][:3]) == [ID["[CLS]"], ID["[SEP]"], 0]
  tokens_NxT, length_N = enc.encode_batch(["a dog", "the zebra", ""])
  assert tokens_NxT.dtype == np.int32 and tokens_NxT.shape == (3, 8)
  assert list(length_N) == [4, 4, 2] and tokens_NxT[1, 2] == ID["[UNK]"]
  with pytest.raises(ValueError, match="max_len"):
    wp.WordPieceEncoder(enc.vocab, max_len=1)


def test_vocab_checks():
  with pytest.raises(ValueError, match=r"missing \['\[MASK\]'\]"):
    wp.WordPieceVocab(VOCAB[:4] + VOCAB[5:])
  with pytest.raises(ValueError, match=r"\[PAD\] must be id 0"):
    wp.WordPieceVocab(["[UNK]", "[PAD]", *VOCAB[2:]])


def test_save_load_pickle_and_dispatch(vocab_file, tmp_path):
  enc = wp.WordPieceEncoder.from_vocab_file(vocab_file, max_len=12, lower_case=False)
  path = enc.save(tmp_path)
  assert path == str(tmp_path / "vocab.json")
  loaded = wp.WordPieceEncoder.load(tmp_path)
  assert loaded == enc and loaded.vocab.tokens == tuple(VOCAB)
  assert loaded.tokenize("Dog Café") == ["Dog", "Café"]
  assert pickle.loads(pickle.dumps(enc)) == enc  # grain worker processes get a copy
  assert isinstance(wp.load_text_encoder(tmp_path), wp.WordPieceEncoder)
  words = text_lib.TextEncoder.fit(["a dog", "a cat"], max_len=4)
  words.save(tmp_path / "words.json")
  assert wp.load_text_encoder(tmp_path / "words.json") == words
  data = json.loads(open(path, encoding="utf-8").read())
  del data["split_cjk"]
  (tmp_path / "bad.json").write_text(json.dumps(data), encoding="utf-8")
  with pytest.raises(ValueError, match="bad.json: garbled WordPiece"):
    wp.WordPieceEncoder.load(tmp_path / "bad.json")
  with pytest.raises(FileNotFoundError, match="no such vocabulary file"):
    wp.WordPieceEncoder.load(tmp_path / "none.json")


@pytest.fixture(scope="module")
def bert_tokenizer_cls():
  """transformers' BertTokenizer, or skip."""
  import_torchvision()  # transformers imports it whenever it is installed
  return pytest.importorskip("transformers").BertTokenizer


@pytest.mark.parametrize("lower_case", [True, False])
def test_matches_transformers_bert_tokenizer(bert_tokenizer_cls, vocab_file, lower_case):
  reference = bert_tokenizer_cls(str(vocab_file), do_lower_case=lower_case)
  enc = wp.WordPieceEncoder.from_vocab_file(vocab_file, max_len=16, lower_case=lower_case)
  tokens_NxT, length_N = enc.encode_batch(CAPTIONS)
  want = reference(CAPTIONS, padding="max_length", truncation=True, max_length=16)
  for i, caption in enumerate(CAPTIONS):
    assert enc.tokenize(caption) == reference.tokenize(caption), caption
    assert list(tokens_NxT[i]) == want["input_ids"][i], caption
    assert length_N[i] == sum(want["attention_mask"][i]), caption
