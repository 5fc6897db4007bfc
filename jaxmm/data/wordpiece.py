"""BERT's tokenisation (basic split + WordPiece over a vocab.txt) without `transformers`.

    enc = WordPieceEncoder.from_vocab_file("checkpoint/vocab.txt", max_len=32)
    tokens_NxT, length_N = enc.encode_batch(["A dog on a skateboard."])   # [CLS] ... [SEP], [PAD]=0

The same steps as transformers' BertTokenizer (checked against it in tests/data/test_wordpiece.py):
  * basic: drop NUL / U+FFFD / control characters, whitespace -> " ", spaces around CJK
    ideographs, NFC; per whitespace token: lower-case and strip accents (NFD, drop Mn marks) when
    `lower_case`, then split off every punctuation character (ASCII symbols count as punctuation);
  * WordPiece: greedy longest-match-first, continuations prefixed `##`; a word with no full cover
    or longer than `max_chars_per_word` becomes `[UNK]`.
Special tokens written in a caption ("[SEP]") are split as text: captions never inject them.

`WordPieceEncoder` has the public shape of jaxmm.data.text.TextEncoder (vocab, max_len, tokenize,
encode, encode_batch, save, load, the masking ids). It saves to the same `vocab.json` name with its
own format tag; `load_text_encoder` reads either kind.

A BERT tower trained from scratch has no vocab.txt: `WordPieceEncoder.fit` builds one from the
training captions (BERT's special tokens, every character alone and as a `##` continuation, then
the whole words), so words it lacks split into known pieces and characters, not [UNK].
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
PAD_ID = 0
VOCAB_FILENAME = "vocab.json"  # as jaxmm.data.text: one encoder per workdir
_FORMAT = "jaxmm.wordpiece_encoder"
_FORMAT_VERSION = 1

# CJK Unified Ideographs blocks (not Hangul / kana, which are written with spaces).
_CJK_RANGES = (
  (0x4E00, 0x9FFF),
  (0x3400, 0x4DBF),
  (0x20000, 0x2A6DF),
  (0x2A700, 0x2B73F),
  (0x2B740, 0x2B81F),
  (0x2B820, 0x2CEAF),
  (0xF900, 0xFAFF),
  (0x2F800, 0x2FA1F),
)


def _is_whitespace(ch: str) -> bool:
  return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
  return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
  cp = ord(ch)
  # ASCII symbols such as "$", "^", "`" are not Unicode punctuation, but BERT splits them too.
  if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
    return True
  return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
  return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def _strip_accents(text: str) -> str:
  return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def _split_punctuation(token: str) -> list[str]:
  pieces: list[str] = []
  start_new = True
  for ch in token:
    if _is_punctuation(ch):
      pieces.append(ch)
      start_new = True
    else:
      if start_new:
        pieces.append("")
        start_new = False
      pieces[-1] += ch
  return pieces


def basic_tokenize(
  text: str, *, lower_case: bool = True, strip_accents: bool | None = None, split_cjk: bool = True
) -> list[str]:
  """BERT's BasicTokenizer: cleaned, (lower-cased, accent-free,) punctuation split words.

  strip_accents None follows `lower_case`, as in BERT (uncased models strip, cased keep).
  """
  chars = []
  for ch in text:
    cp = ord(ch)
    if cp == 0 or cp == 0xFFFD or _is_control(ch):
      continue
    if _is_whitespace(ch):
      chars.append(" ")
    elif split_cjk and _is_cjk(cp):
      chars.extend((" ", ch, " "))
    else:
      chars.append(ch)
  text = unicodedata.normalize("NFC", "".join(chars))
  strip = lower_case if strip_accents is None else strip_accents
  words = []
  for token in text.split():
    if lower_case:
      token = token.lower()
    if strip:
      token = _strip_accents(token)
    words.extend(p for p in _split_punctuation(token) if p)
  return words


class WordPieceVocab:
  """vocab.txt tokens in id order (line n = id n) with BERT's special tokens; [PAD] must be 0."""

  def __init__(self, tokens: Sequence[str]):
    self._tokens = tuple(tokens)
    self._hash = hash(self._tokens)  # once: the vocabulary is a key of the word-piece cache
    # Later duplicates win, as in transformers' load_vocab.
    self._ids = {t: i for i, t in enumerate(self._tokens)}
    missing = [t for t in SPECIAL_TOKENS if t not in self._ids]
    if missing:
      raise ValueError(f"a BERT vocabulary needs {SPECIAL_TOKENS}; missing {missing}")
    if self._ids[PAD] != PAD_ID:
      raise ValueError(
        f"{PAD} must be id {PAD_ID} (the padding id of every batch); it is {self._ids[PAD]}"
      )
    self.unk_id, self.cls_id, self.sep_id, self.mask_id = (self._ids[t] for t in SPECIAL_TOKENS[1:])
    self.pad_id = PAD_ID

  @classmethod
  def from_file(cls, path: str | os.PathLike) -> WordPieceVocab:
    """Reads a BERT vocab.txt (one token per line, UTF-8)."""
    with open(path, encoding="utf-8") as f:
      return cls([line.rstrip("\n") for line in f])

  @property
  def tokens(self) -> tuple[str, ...]:
    return self._tokens

  def __len__(self) -> int:
    return len(self._tokens)

  @property
  def first_word_id(self) -> int:
    """The id after the leading run of bracketed tokens ([PAD], [unused0..98], [UNK], [CLS],
    [SEP], [MASK], [unused99..] in BERT's vocab.txt): where the vocabulary's text begins."""
    for i, token in enumerate(self._tokens):
      if not (token.startswith("[") and token.endswith("]") and len(token) > 2):
        return i
    return len(self._tokens)

  def __contains__(self, token: str) -> bool:
    return token in self._ids

  def __eq__(self, other: object) -> bool:
    return other is self or (isinstance(other, WordPieceVocab) and self._tokens == other._tokens)

  def __hash__(self) -> int:
    return self._hash

  def __reduce__(self):
    # Rebuilt from the tokens: string hashes differ between processes, so _hash is not pickled.
    return WordPieceVocab, (self._tokens,)

  def __repr__(self) -> str:
    return f"WordPieceVocab(size={len(self)})"

  def token_to_id(self, token: str) -> int:
    return self._ids.get(token, self.unk_id)

  def id_to_token(self, token_id: int) -> str:
    if not 0 <= token_id < len(self._tokens):
      raise IndexError(f"token id {token_id} out of range [0, {len(self._tokens)})")
    return self._tokens[token_id]

  def decode(self, ids_T: Sequence[int], length: int | None = None) -> list[str]:
    """Tokens of the first `length` ids (all when None); for debugging and reports."""
    ids = list(ids_T)[:length] if length is not None else list(ids_T)
    return [self.id_to_token(int(i)) for i in ids]

  def wordpiece(self, word: str, max_chars_per_word: int = 100) -> list[str]:
    """Greedy longest-match-first pieces of one word; [UNK] alone when it cannot be covered."""
    if len(word) > max_chars_per_word:
      return [UNK]
    pieces, start = [], 0
    while start < len(word):
      end = len(word)
      while end > start:
        piece = word[start:end] if start == 0 else "##" + word[start:end]
        if piece in self._ids:
          break
        end -= 1
      else:
        return [UNK]
      pieces.append(piece)
      start = end
    return pieces


@dataclasses.dataclass(frozen=True)
class WordPieceEncoder:
  """Captions -> `[CLS] pieces [SEP]` ids padded with [PAD]=0 to `max_len`, and their lengths.

  Captions longer than max_len - 2 pieces are cut before [SEP], which always ends the sequence.
  """

  vocab: WordPieceVocab
  max_len: int
  lower_case: bool = True
  strip_accents: bool | None = None
  split_cjk: bool = True
  max_chars_per_word: int = 100

  def __post_init__(self):
    if self.max_len < 2:
      raise ValueError(f"max_len must be >= 2 ([CLS] and [SEP]); got {self.max_len}")

  @classmethod
  def from_vocab_file(cls, path: str | os.PathLike, *, max_len: int, **kwargs) -> WordPieceEncoder:
    """From a checkpoint's vocab.txt (or the directory holding it)."""
    path = os.fspath(path)
    path = os.path.join(path, "vocab.txt") if os.path.isdir(path) else path
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path}: no such BERT vocabulary (a vocab.txt, one token a line)")
    return cls(vocab=WordPieceVocab.from_file(path), max_len=max_len, **kwargs)

  @classmethod
  def fit(
    cls,
    captions: Iterable[str],
    *,
    max_len: int,
    min_freq: int = 1,
    max_size: int | None = None,
    lower_case: bool = True,
  ) -> WordPieceEncoder:
    """A vocabulary of the TRAINING captions for a BERT tower that starts from scratch.

    Tokens: BERT's SPECIAL_TOKENS ([PAD] = 0); every character of the training words, alone and
    as a `##` continuation; then the words seen >= `min_freq` times, most frequent first (ties
    by the word). `max_size` caps the total, words being cut first. It learns no sub-word merges
    (captions repeat a small vocabulary that whole words cover): a word it lacks is split by
    WordPiece's greedy rule into a known word's prefix and characters ("frisbees" -> "frisbee",
    "##s"), so only a character never seen in training gives [UNK].
    """
    if min_freq < 1:
      raise ValueError(f"min_freq must be >= 1; got {min_freq}")
    counts = collections.Counter(
      w for c in captions for w in basic_tokenize(c, lower_case=lower_case)
    )
    chars = sorted({ch for w in counts for ch in w})
    base = [*SPECIAL_TOKENS, *chars, *(f"##{ch}" for ch in chars)]
    if max_size is not None and max_size < len(base):
      raise ValueError(
        f"max_size {max_size} (data.vocab_size) is below the {len(base)} special "
        "tokens and characters every WordPiece vocabulary of these captions needs"
      )
    taken = set(base)
    words = sorted(
      (w for w, c in counts.items() if c >= min_freq and w not in taken),
      key=lambda w: (-counts[w], w),
    )
    if max_size is not None:
      words = words[: max_size - len(base)]
    return cls(vocab=WordPieceVocab(base + words), max_len=max_len, lower_case=lower_case)

  # What masked-token pretraining asks of an encoder (as jaxmm.data.text.TextEncoder's).
  @property
  def pad_id(self) -> int:
    return PAD_ID

  @property
  def mask_id(self) -> int:
    return self.vocab.mask_id

  @property
  def boundary_ids(self) -> tuple[int, ...]:
    """[CLS] and [SEP]: they frame every caption and are never masked, as in BERT."""
    return (self.vocab.cls_id, self.vocab.sep_id)

  @property
  def first_word_id(self) -> int:
    return self.vocab.first_word_id

  def tokenize(self, caption: str) -> list[str]:
    """The caption's word pieces, without [CLS] / [SEP]."""
    words = basic_tokenize(
      caption,
      lower_case=self.lower_case,
      strip_accents=self.strip_accents,
      split_cjk=self.split_cjk,
    )
    return [p for w in words for p in _cached_wordpiece(self.vocab, w, self.max_chars_per_word)]

  def encode(self, caption: str) -> tuple[np.ndarray, int]:
    """One caption -> (ids_T int32 of shape (max_len,), length in [2, max_len])."""
    ids = [self.vocab.token_to_id(p) for p in self.tokenize(caption)[: self.max_len - 2]]
    ids = [self.vocab.cls_id, *ids, self.vocab.sep_id]
    ids_T = np.full((self.max_len,), PAD_ID, np.int32)
    ids_T[: len(ids)] = ids
    return ids_T, len(ids)

  def encode_batch(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Captions -> (tokens_NxT int32 padded with 0, length_N int32); T = max_len."""
    tokens_NxT = np.full((len(captions), self.max_len), PAD_ID, np.int32)
    length_N = np.zeros((len(captions),), np.int32)
    for i, caption in enumerate(captions):
      tokens_NxT[i], length_N[i] = self.encode(caption)
    return tokens_NxT, length_N

  def to_json(self) -> dict:
    return {
      "format": _FORMAT,
      "version": _FORMAT_VERSION,
      "max_len": self.max_len,
      "lower_case": self.lower_case,
      "strip_accents": self.strip_accents,
      "split_cjk": self.split_cjk,
      "max_chars_per_word": self.max_chars_per_word,
      "tokens": list(self.vocab.tokens),
    }

  def save(self, path: str | os.PathLike) -> str:
    """Writes vocabulary and settings as JSON (a directory gets `vocab.json`); returns the file.

    Through a temporary file, so a crash never leaves a truncated vocabulary.
    """
    path = _vocab_path(path)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(self.to_json(), f, ensure_ascii=False, indent=0)
      f.write("\n")
    os.replace(tmp, path)
    return path

  @classmethod
  def from_json(cls, data: dict, *, source: str = "<json>") -> WordPieceEncoder:
    try:
      if data.get("format") != _FORMAT or data.get("version") != _FORMAT_VERSION:
        raise ValueError(
          f"format {data.get('format')!r} version {data.get('version')!r}; "
          f"expected {_FORMAT!r} version {_FORMAT_VERSION}"
        )
      settings = {
        k: data[k]
        for k in ("max_len", "lower_case", "strip_accents", "split_cjk", "max_chars_per_word")
      }
      if not all(isinstance(t, str) for t in data["tokens"]):
        raise ValueError("tokens must be a list of strings")
      return cls(vocab=WordPieceVocab(data["tokens"]), **settings)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
      raise ValueError(f"{source}: garbled WordPiece vocabulary file: {e!r}") from None

  @classmethod
  def load(cls, path: str | os.PathLike) -> WordPieceEncoder:
    """Restores an encoder written by `save` (a directory means its vocab.json)."""
    path = _vocab_path(path)
    return cls.from_json(_read_json(path), source=path)


# Captions repeat a small vocabulary, so each word is split once. A module-level cache keeps the
# encoder a plain picklable dataclass (grain worker processes).
@functools.lru_cache(maxsize=1 << 16)
def _cached_wordpiece(vocab: WordPieceVocab, word: str, max_chars_per_word: int) -> tuple[str, ...]:
  return tuple(vocab.wordpiece(word, max_chars_per_word))


def load_text_encoder(path: str | os.PathLike):
  """A saved jaxmm.data.text.TextEncoder or WordPieceEncoder, by the file's format tag."""
  from jaxmm.data.text import TextEncoder

  path = _vocab_path(path)
  data = _read_json(path)
  if isinstance(data, dict) and data.get("format") == _FORMAT:
    return WordPieceEncoder.from_json(data, source=path)
  return TextEncoder.load(path)


def _read_json(path: str):
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such vocabulary file; was the encoder saved there?")
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: not a valid vocabulary JSON file ({e})") from None


def _vocab_path(path: str | os.PathLike) -> str:
  path = os.fspath(path)
  return os.path.join(path, VOCAB_FILENAME) if os.path.isdir(path) else path
