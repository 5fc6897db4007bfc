"""The caption text pipeline: normalize, Vocab, TextEncoder save/load, offline resources."""

from __future__ import annotations

import json
import os
import pathlib

import nltk
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from jaxmm.data import text
from jaxmm.data.text import (
  MASK_ID,
  PAD_ID,
  UNK_ID,
  TextEncoder,
  Vocab,
  check_text_resources,
  normalize,
)

DATA_ROOT = pathlib.Path(
  os.environ.get(
    "JAXMM_SHARED_DATA", pathlib.Path(__file__).resolve().parents[3] / "shared" / "data"
  )
)
MATCHING_VAL = DATA_ROOT / "matching-dev" / "val.csv"


@pytest.mark.parametrize(
  "raw, expected",
  [
    ("A man's DOG, running!!\nfast.", ["a", "mans", "dog", "running", "fast"]),
    ("tri-colored  hello_world\t6 people", ["tri", "colored", "hello", "world", "6", "people"]),
    ('reads "spray."', ["reads", "spray"]),
    ("Red motor \nscooter", ["red", "motor", "scooter"]),  # a two-line COMP5329 caption
    ("'quoted' rock'n'roll dogs\u2019 toys", ["quoted", "rocknroll", "dogs", "toys"]),
    ("Caf\u00e9 \ufb01ne \uff21\uff22", ["caf\u00e9", "fine", "ab"]),  # NFKC folds ligatures/widths
    ("", []),
    (" ...!? \n ", []),
  ],
)
def test_normalize_cases(raw, expected):
  assert normalize(raw) == expected


def test_stemming_is_porter_and_needs_no_data():
  assert normalize("Running dogs played happily", stem=True) == ["run", "dog", "play", "happili"]


def test_stopwords_come_from_gensim_and_apply_before_stemming():
  assert normalize("A man on the beach, with his dog", remove_stopwords=True) == [
    "man",
    "beach",
    "dog",
  ]
  # "becomes" is a stopword; its stem "becom" is not, so removal must see the whole word.
  assert normalize("becomes", remove_stopwords=True, stem=True) == []


@pytest.fixture
def no_wordnet(monkeypatch, tmp_path):
  """An nltk search path with no corpora, so the test holds on machines that do have WordNet."""
  monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
  text._get_lemmatizer.cache_clear()
  yield
  text._get_lemmatizer.cache_clear()


def test_lemmatize_without_wordnet_fails_with_install_command(no_wordnet, tmp_path):
  check_text_resources(lemmatize=False)  # nothing needed
  with pytest.raises(RuntimeError) as err:
    check_text_resources(lemmatize=True)
  msg = str(err.value)
  assert "python -m nltk.downloader -d ~/nltk_data wordnet omw-1.4" in msg
  assert "apt-get install wordnet-base wordnet-sense-index" in msg and "NLTK_DATA" in msg
  for fails in (
    lambda: normalize("dogs", lemmatize=True),
    lambda: TextEncoder.fit(["dogs"], max_len=4, lemmatize=True),
    lambda: TextEncoder(Vocab.build([]), max_len=4, lemmatize=True),
  ):
    with pytest.raises(RuntimeError, match="nltk.downloader"):
      fails()
  # A saved lemmatising encoder fails at load time too, not at its first caption.
  path = tmp_path / "vocab.json"
  path.write_text(
    json.dumps({**TextEncoder(Vocab.build([]), max_len=4).to_json(), "lemmatize": True})
  )
  with pytest.raises(RuntimeError, match="wordnet"):
    TextEncoder.load(path)


def test_lemmatize_runs_after_stopwords_and_before_stemming(monkeypatch):
  seen = []

  def fake_lemma(token):
    seen.append(token)
    return {"geese": "goose", "running": "run"}.get(token, token)

  monkeypatch.setattr(text, "_get_lemmatizer", lambda: fake_lemma)
  assert normalize("The geese running", lemmatize=True, remove_stopwords=True) == ["goose", "run"]
  assert seen == ["geese", "running"]
  assert normalize("flying geese", lemmatize=True, stem=True) == ["fli", "goos"]


def test_vocab_order_min_freq_and_specials():
  lists = [["b", "a", "c", "a"], ["c", "d", "<pad>"], ["e"]]
  vocab = Vocab.build(lists)
  assert vocab.tokens == (
    "<pad>",
    "<unk>",
    "<mask>",
    "a",
    "c",
    "b",
    "d",
    "e",
  )  # freq desc, token asc
  assert (PAD_ID, UNK_ID, MASK_ID) == (0, 1, 2)
  assert [vocab.token_to_id(t) for t in ("<pad>", "<unk>", "<mask>", "a", "zzz")] == [0, 1, 2, 3, 1]
  assert vocab.id_to_token(4) == "c" and len(vocab) == 8 and "d" in vocab
  assert Vocab.build(lists, min_freq=2).tokens[3:] == ("a", "c")
  assert Vocab.build(lists, max_size=5).tokens[3:] == ("a", "c")  # max_size counts the specials
  assert Vocab.build(reversed(lists)) == vocab  # input order does not matter
  with pytest.raises(IndexError):
    vocab.id_to_token(8)
  with pytest.raises(ValueError, match="min_freq"):
    Vocab.build(lists, min_freq=0)
  with pytest.raises(ValueError, match="max_size"):
    Vocab.build(lists, max_size=2)
  with pytest.raises(ValueError, match="start with"):
    Vocab(["a", "<pad>", "<unk>", "<mask>"])
  with pytest.raises(ValueError, match="duplicate"):
    Vocab(["<pad>", "<unk>", "<mask>", "a", "a"])


def test_encode_pads_truncates_and_never_returns_length_zero():
  vocab = Vocab.build([["a", "b", "c"]])
  ids, n = vocab.encode(["a", "b", "zzz"], 5)
  assert ids.dtype == np.int32 and ids.shape == (5,) and n == 3
  assert ids.tolist() == [3, 4, UNK_ID, PAD_ID, PAD_ID]
  ids, n = vocab.encode(["c", "b", "a", "c"], 2)
  assert ids.tolist() == [5, 4] and n == 2  # keeps the first max_len tokens
  ids, n = vocab.encode([], 3)
  assert ids.tolist() == [UNK_ID, PAD_ID, PAD_ID] and n == 1
  assert vocab.decode(*vocab.encode(["b", "a"], 4)) == ["b", "a"]
  with pytest.raises(ValueError, match="max_len"):
    vocab.encode(["a"], 0)


def test_encoder_fits_on_training_captions_only():
  enc = TextEncoder.fit(["A dog runs.", "The dog sleeps"], max_len=4, stem=True)
  tokens_NxT, length_N = enc.encode_batch(["dogs running!", "", "a cat sleeping on the dog"])
  assert tokens_NxT.dtype == np.int32 and length_N.dtype == np.int32
  assert tokens_NxT.shape == (3, 4) and length_N.tolist() == [2, 1, 4]
  dog, run = enc.vocab.token_to_id("dog"), enc.vocab.token_to_id("run")
  assert tokens_NxT[0].tolist() == [dog, run, PAD_ID, PAD_ID]
  assert tokens_NxT[1].tolist() == [UNK_ID, PAD_ID, PAD_ID, PAD_ID]
  assert enc.vocab.token_to_id("cat") == UNK_ID  # a val/test-only word
  empty_NxT, empty_N = enc.encode_batch([])
  assert empty_NxT.shape == (0, 4) and empty_N.shape == (0,)
  with pytest.raises(ValueError, match="max_len"):
    TextEncoder.fit(["a"], max_len=0)


def test_save_load_round_trip(tmp_path):
  captions = ["A man surfing", "Two dogs on a beach", "a man and a dog"]
  enc = TextEncoder.fit(
    captions, max_len=6, min_freq=1, max_size=10, stem=True, remove_stopwords=True
  )
  written = enc.save(tmp_path / "enc.json")
  loaded = TextEncoder.load(written)
  assert loaded == enc
  assert loaded.vocab.tokens == enc.vocab.tokens
  for a, b in zip(
    loaded.encode_batch(captions + ["unseen words"]), enc.encode_batch(captions + ["unseen words"])
  ):
    np.testing.assert_array_equal(a, b)
  # A directory means its vocab.json (the layout next to a checkpoint).
  assert enc.save(tmp_path) == str(tmp_path / "vocab.json")
  assert TextEncoder.load(tmp_path) == enc
  data = json.loads((tmp_path / "vocab.json").read_text())
  assert data["tokens"][:3] == ["<pad>", "<unk>", "<mask>"] and data["stem"] is True


def test_load_missing_or_garbled_names_path(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.json"):
    TextEncoder.load(tmp_path / "nope.json")
  good = TextEncoder.fit(["a b"], max_len=3).to_json()
  cases = {
    "notjson.json": "{not json",
    "array.json": "[1, 2]",
    "nokeys.json": json.dumps({"format": good["format"], "version": 1}),
    "badtokens.json": json.dumps({**good, "tokens": ["a", "b"]}),
    "badflag.json": json.dumps({**good, "stem": "yes"}),
    "otherformat.json": json.dumps({**good, "format": "something-else"}),
  }
  for name, content in cases.items():
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=name):
      TextEncoder.load(tmp_path / name)


@given(st.text(max_size=80), st.booleans(), st.booleans(), st.integers(1, 12))
@settings(max_examples=150, deadline=None)
def test_normalize_and_encode_never_break_on_unicode(raw, stem, remove_stopwords, max_len):
  tokens = normalize(raw, stem=stem, remove_stopwords=remove_stopwords)
  assert all(t and not any(c.isspace() for c in t) for t in tokens)
  if not stem and not remove_stopwords:
    assert normalize(" ".join(tokens)) == tokens  # normalising twice changes nothing
  ids_T, length = Vocab.build([tokens[::2]]).encode(tokens, max_len)
  assert ids_T.shape == (max_len,) and ids_T.dtype == np.int32
  assert 1 <= length <= max_len and (ids_T[length:] == PAD_ID).all() and (ids_T[:length] > 0).all()


# Captions as the COMP5329 files can hold them: arbitrary unicode, or built from quotes, commas,
# line breaks and things that look like CSV syntax.
_CAPTION = st.text(max_size=40) | st.lists(
  st.sampled_from(
    [
      '"',
      ",",
      "\n",
      "\r\n",
      " ",
      "dog",
      "Caf\u00e9",
      "7.jpg",
      "''",
      "\u2028",
      "\t",
      "\ufeff",
      "\u0130",
      "don't",
    ]
  ),
  max_size=12,
).map("".join)


@given(st.lists(_CAPTION, min_size=1, max_size=6), st.booleans(), st.integers(1, 8))
@settings(
  max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_captions_survive_csv_and_vocab_round_trips(tmp_path, captions, stem, max_len):
  """Captions written in the COMP5329 layout and read back encode exactly as the originals, with
  an encoder saved to vocab.json and loaded again."""
  from jaxmm.data.comp5329 import Record, read_comp5329, write_comp5329

  records = [Record(f"{i}.jpg", (1,), c) for i, c in enumerate(captions)]
  try:
    write_comp5329(tmp_path / "t.csv", records)
  except ValueError:
    assume(False)  # a caption the layout cannot hold (a line that reads as a new record)
  read = [r.caption for r in read_comp5329(tmp_path / "t.csv")]
  assert read == captions
  enc = TextEncoder.fit(read, max_len=max_len, stem=stem)
  loaded = TextEncoder.load(enc.save(tmp_path))
  assert loaded == enc
  for a, b in zip(loaded.encode_batch(read), enc.encode_batch(captions), strict=True):
    np.testing.assert_array_equal(a, b)
  # Tokens carry no CSV syntax or whitespace: nothing in vocab.json can break a later file.
  assert not any(set(t) & set('",\r\n\t ') for t in enc.vocab.tokens[3:])


@pytest.mark.realdata
@pytest.mark.skipif(not MATCHING_VAL.is_file(), reason=f"matching data not found at {MATCHING_VAL}")
def test_real_captions_encode(tmp_path):
  from jaxmm.data.matching import read_matching

  captions = [r.caption for r in read_matching(MATCHING_VAL)]
  enc = TextEncoder.fit(captions[:1000], max_len=32, stem=True)  # S0 settings
  tokens_NxT, length_N = enc.encode_batch(captions[1000:])
  assert tokens_NxT.shape == (len(captions) - 1000, 32)
  assert length_N.min() >= 1 and length_N.max() <= 32 and np.median(length_N) > 5
  assert 500 < len(enc.vocab) < 5000
