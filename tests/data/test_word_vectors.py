"""Word vectors: real gensim training on a few captions, GloVe files, OOV rows, cache,
determinism."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
from ml_collections import config_dict

from jaxmm.data import word_vectors as wv
from jaxmm.data.text import MASK_ID, PAD_ID, UNK_ID, TextEncoder

CAPTIONS = [
  "A man riding a horse on the beach",
  "Two dogs playing with a ball in the park",
  "A woman holding an umbrella in the rain",
  "People sitting at a table eating pizza",
  "A cat sleeping on a red couch",
  "A man riding a bike down the street",
  "Two people walking dogs on the beach",
  "A plate of pizza on a wooden table",
  "A red bus driving down the street",
  "A dog chasing a ball on the grass",
  "A giraffe standing next to a tree",
  "Zebras grazing in a field",
] * 3
SETTINGS = wv.Settings(source="word2vec", dim=8, epochs=3, window=3, min_count=1, seed=0)


@pytest.fixture(scope="module")
def encoder():
  return TextEncoder.fit(CAPTIONS, max_len=8)


def _tokens(encoder):
  return [encoder.tokenize(c) for c in CAPTIONS]


def test_rows_are_the_trained_vectors_pad_is_zero(encoder):
  matrix, report = wv.matrix_for(SETTINGS, encoder, CAPTIONS, embed_dim=8)
  kv = wv.train_vectors(_tokens(encoder), SETTINGS)  # the same training again: deterministic
  assert matrix.shape == (len(encoder.vocab), 8) and matrix.dtype == np.float32
  np.testing.assert_array_equal(matrix[PAD_ID], 0.0)
  for token in ("man", "pizza", "street", "zebras"):
    np.testing.assert_array_equal(matrix[encoder.vocab.token_to_id(token)], kv[token])
  assert report.found == report.words == len(encoder.vocab) - 3 and report.random == 0
  # <unk> and <mask> are drawn, not zero and not equal.
  assert np.abs(matrix[UNK_ID]).sum() > 0 and not np.allclose(matrix[UNK_ID], matrix[MASK_ID])


def test_min_count_leaves_rare_words_random_scaled_like_the_found(encoder):
  rare = dataclasses.replace(SETTINGS, min_count=4)  # words in one caption appear 3 times
  matrix, report = wv.matrix_for(rare, encoder, CAPTIONS, embed_dim=8)
  kv = wv.train_vectors(_tokens(encoder), rare)
  words = encoder.vocab.tokens[3:]
  missing = [w for w in words if w not in kv.key_to_index]
  assert missing and report.random == len(missing) and report.found == len(words) - len(missing)
  assert set(report.random_examples) <= set(missing)
  found_rows = matrix[[encoder.vocab.token_to_id(w) for w in words if w in kv.key_to_index]]
  random_rows = matrix[[encoder.vocab.token_to_id(w) for w in missing]]
  assert 0.3 < random_rows.std() / found_rows.std() < 3.0
  assert len({tuple(r) for r in random_rows}) == len(missing)  # independent draws


def test_fasttext_oov_rows_come_from_subwords(encoder):
  ft = dataclasses.replace(SETTINGS, source="fasttext", min_count=4, bucket=2000)
  matrix, report = wv.matrix_for(ft, encoder, CAPTIONS, embed_dim=8)
  kv = wv.train_vectors(_tokens(encoder), ft)
  assert report.subword > 0 and report.random == 0
  assert report.found + report.subword == report.words
  oov = next(w for w in encoder.vocab.tokens[3:] if w not in kv.key_to_index)
  np.testing.assert_allclose(matrix[encoder.vocab.token_to_id(oov)], kv.get_vector(oov), rtol=1e-6)


def _glove(tmp_path, words, dim=4, seed=0):
  rng = np.random.default_rng(seed)
  vectors = {w: rng.standard_normal(dim).astype(np.float32) for w in words}
  path = tmp_path / "glove.txt"
  with open(path, "w") as f:
    for w, v in vectors.items():
      f.write(w + " " + " ".join(f"{x:.6f}" for x in v) + "\n")
  return str(path), vectors


def test_glove_file_and_surface_forms_of_stems(tmp_path):
  path, vectors = _glove(tmp_path, ["people", "sitting", "table", "man", "dog", "the"])
  enc = TextEncoder.fit(CAPTIONS, max_len=8, stem=True)
  settings = wv.Settings(source="glove", path=path)
  matrix, report = wv.matrix_for(settings, enc, CAPTIONS, embed_dim=4)
  vocab = enc.vocab
  for token, word in (("man", "man"), ("tabl", "table"), ("peopl", "people"), ("sit", "sitting")):
    np.testing.assert_allclose(matrix[vocab.token_to_id(token)], vectors[word], atol=1e-6)
  assert report.found == 3 and report.found_via_surface_form == 3  # man dog the; tabl peopl sit
  assert report.random == report.words - 6 and "pizza" in report.random_examples
  # Without captions no surface form is known: the stems go random.
  _, bare = wv.matrix_for(settings, enc, None, embed_dim=4)
  assert bare.found_via_surface_form == 0 and bare.random == report.random + 3


def test_dimension_mismatches_say_both_sizes(tmp_path, encoder):
  with pytest.raises(ValueError, match=r"dim=16.*embed_dim=8"):
    wv.matrix_for(dataclasses.replace(SETTINGS, dim=16), encoder, CAPTIONS, embed_dim=8)
  path, _ = _glove(tmp_path, ["man"], dim=4)
  with pytest.raises(ValueError, match=r"4-d vectors.*embed_dim=8"):
    wv.matrix_for(wv.Settings(source="glove", path=path), encoder, CAPTIONS, embed_dim=8)
  with pytest.raises(FileNotFoundError, match="nope.txt"):
    wv.matrix_for(
      wv.Settings(source="glove", path=str(tmp_path / "nope.txt")), encoder, None, embed_dim=8
    )
  with pytest.raises(ValueError, match="source must be one of"):
    wv.Settings(source="glvoe")


def _config(**word_vectors):
  c = config_dict.ConfigDict()
  c.seed = 0
  c.model = config_dict.ConfigDict(
    dict(
      mode="fused",
      text=dict(
        name="bow",
        embed_dim=8,
        word_vectors=dict(source="", path="", dim=0, sg=1, window=3, epochs=3, min_count=1),
      ),
    )
  )
  c.model.text.word_vectors.update(word_vectors)
  return c


def test_entry_point_off_by_default_and_cached(tmp_path, encoder, monkeypatch):
  assert wv.embedding_matrix_for(_config(), encoder, CAPTIONS, str(tmp_path)) is None
  config = _config(source="word2vec")
  first = wv.embedding_matrix_for(config, encoder, CAPTIONS, str(tmp_path))
  assert os.path.exists(tmp_path / wv.CACHE_DIR / "embedding.npy")

  def no_training(*args, **kwargs):
    raise AssertionError("trained again despite the cache")

  monkeypatch.setattr(wv, "train_vectors", no_training)
  np.testing.assert_array_equal(
    wv.embedding_matrix_for(config, encoder, None, str(tmp_path)), first
  )
  with pytest.raises(AssertionError, match="trained again"):  # another setting: another key
    wv.embedding_matrix_for(_config(source="word2vec", window=2), encoder, CAPTIONS, str(tmp_path))


def test_glove_cache_follows_the_file(tmp_path, encoder):
  path, _ = _glove(tmp_path, ["man", "dog"], dim=8)
  config = _config(source="glove", path=path)
  first = wv.embedding_matrix_for(config, encoder, CAPTIONS, str(tmp_path))
  _glove(tmp_path, ["man", "dog"], dim=8, seed=1)  # rewritten in place
  os.utime(path, ns=(1, 1))  # a distinct mtime even on coarse clocks
  second = wv.embedding_matrix_for(config, encoder, CAPTIONS, str(tmp_path))
  assert not np.allclose(first, second)
  os.remove(path)  # gone: the cache serves a resumed run
  np.testing.assert_array_equal(
    wv.embedding_matrix_for(config, encoder, None, str(tmp_path)), second
  )


def test_seeds_change_vectors_and_python_hash_seed_does_not(encoder):
  a, _ = wv.matrix_for(SETTINGS, encoder, CAPTIONS, embed_dim=8)
  b, _ = wv.matrix_for(dataclasses.replace(SETTINGS, seed=1), encoder, CAPTIONS, embed_dim=8)
  assert not np.allclose(a[3:], b[3:])
  # gensim seeds some vectors with Python's hash(); str hashes change with PYTHONHASHSEED.
  code = (
    "import sys, numpy as np; from tests.data import test_word_vectors as t; "
    "from jaxmm.data import word_vectors as wv; from jaxmm.data.text import TextEncoder; "
    "enc = TextEncoder.fit(t.CAPTIONS, max_len=8); "
    "np.save(sys.argv[1], wv.matrix_for(t.SETTINGS, enc, t.CAPTIONS, embed_dim=8)[0])"
  )
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"wv_{os.getpid()}.npy")
  env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=root)
  subprocess.run([sys.executable, "-c", code, out], check=True, cwd=root, env=env)
  np.testing.assert_array_equal(np.load(out), a)
  os.remove(out)


def test_file_source_without_a_file_falls_back_as_configured(tmp_path, encoder, caplog):
  caplog.set_level("INFO", logger="jaxmm")
  with pytest.raises(ValueError, match="reads a file"):  # no fallback: the path is required
    wv.Settings(source="glove")
  with pytest.raises(ValueError, match="fallback must be one of"):
    wv.Settings(source="glove", fallback="word2vec_file")
  random = _config(source="glove", fallback="random")
  assert wv.embedding_matrix_for(random, encoder, CAPTIONS, None) is None
  assert "no glove file given" in caplog.text and "random embeddings instead" in caplog.text
  trained = _config(source="glove", fallback="fasttext")
  matrix = wv.embedding_matrix_for(trained, encoder, CAPTIONS, str(tmp_path))
  expected, _ = wv.matrix_for(
    wv.Settings(source="fasttext", dim=8, window=3, epochs=3), encoder, CAPTIONS, embed_dim=8
  )
  np.testing.assert_array_equal(matrix, expected)
  assert "fasttext vectors trained on the training captions instead" in caplog.text
  path, _ = _glove(tmp_path, ["man", "dog"], dim=8)  # a file given: the fallback is unused
  with_file = _config(source="glove", path=path, fallback="fasttext")
  glove = wv.embedding_matrix_for(with_file, encoder, CAPTIONS, None)
  np.testing.assert_array_equal(
    glove[encoder.vocab.token_to_id("man")], wv.load_vectors_file(path, source="glove")["man"]
  )
