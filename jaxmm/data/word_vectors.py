"""Word vectors for the text towers' embeddings: gensim Word2Vec/FastText trained on the training
captions, or a local GloVe / word2vec file, turned into a (vocab_size, dim) matrix for our Vocab.

Training sees the captions exactly as the TextEncoder tokenises them (its stemming, stopwords,
lemmatisation), full length, so every vocabulary token the trainer kept has its own vector. A file
of unstemmed words (GloVe) is matched through the surface forms of a token in the training captions
("peopl" -> "people") when the encoder stems. Rows: `<pad>` zeros; a word without a vector gets
FastText's subword vector when there is one, else a seeded normal draw with the found vectors'
standard deviation; `<unk>` and `<mask>` always get a draw.

`embedding_matrix_for(config, encoder, train_captions, workdir)` is the entry point of the loop; it
caches the matrix in `workdir/word_vectors/` so a resumed run or an evaluation does not train again.

A config can name a file source and leave its path to the user: `fallback` ('random',
'word2vec' or 'fasttext') is what a run without the file does, said in the log (s1_bingi: GloVe
100-d when given, else FastText trained on the captions).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from jaxmm.data import text as text_lib

SOURCES = ("", "word2vec", "fasttext", "glove", "word2vec_file")
TRAINED = ("word2vec", "fasttext")
FALLBACKS = ("", "random", *TRAINED)  # '' = a file source without its path is an error
CACHE_DIR = "word_vectors"
_CACHE_VERSION = 1
log = logging.getLogger("jaxmm")


@dataclasses.dataclass(frozen=True)
class Settings:
  """`model.text.word_vectors`. dim 0 = the tower's embed_dim; sg 1 = skip-gram, 0 = CBOW."""

  source: str = ""
  path: str = ""
  dim: int = 0
  sg: int = 1
  window: int = 5
  epochs: int = 10
  min_count: int = 1
  negative: int = 5
  bucket: int = 200_000  # FastText n-gram buckets; gensim's 2M take 1.2 GB at dim 150
  seed: int = 0
  fallback: str = ""  # a file source without `path`: 'random' | 'word2vec' | 'fasttext'

  def __post_init__(self):
    if self.source not in SOURCES:
      raise ValueError(
        f"model.text.word_vectors.source must be one of {SOURCES}; got {self.source!r}"
      )
    if self.fallback not in FALLBACKS:
      raise ValueError(
        f"model.text.word_vectors.fallback must be one of {FALLBACKS}; got {self.fallback!r}"
      )
    if self.source and self.source not in TRAINED and not self.path and not self.fallback:
      raise ValueError(
        f"word_vectors.source={self.source!r} reads a file: set model.text.word_vectors.path"
      )

  def resolved(self) -> Settings:
    """The settings a run uses: a file source without its path becomes its `fallback` (source
    '' for 'random'), with a log line saying so."""
    if not self.source or self.source in TRAINED or self.path:
      return self
    source = "" if self.fallback == "random" else self.fallback
    instead = (
      "random embeddings" if not source else f"{source} vectors trained on the training captions"
    )
    log.info(
      "word vectors: no %s file given (--config.model.text.word_vectors.path=FILE); %s instead",
      self.source,
      instead,
    )
    return dataclasses.replace(self, source=source, fallback="")

  @classmethod
  def from_config(cls, cfg: Mapping | None, *, seed: int = 0) -> Settings:
    """From a ConfigDict/dict; missing keys take the defaults, `seed` the run's seed."""
    cfg = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else (cfg or {}))
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(cfg) - names)
    if unknown:
      raise ValueError(f"unknown model.text.word_vectors key(s) {unknown}; known: {sorted(names)}")
    cfg.setdefault("seed", seed)
    return cls(**cfg)


@dataclasses.dataclass
class Report:
  """Where each row of the matrix came from; `random` lists words (not specials) drawn at random."""

  vocab_size: int
  dim: int
  found: int = 0
  found_via_surface_form: int = 0
  subword: int = 0
  random: int = 0
  random_examples: list[str] = dataclasses.field(default_factory=list)
  seconds: float = 0.0

  @property
  def words(self) -> int:
    return self.vocab_size - len(text_lib.SPECIAL_TOKENS)

  def summary(self) -> str:
    return (
      f"word vectors: {self.found}/{self.words} vocabulary words found"
      f" (+{self.found_via_surface_form} via a surface form), {self.subword} from FastText "
      f"subwords, {self.random} random (OOV); e.g. {self.random_examples[:5]}"
    )


# ----------------------------------------------------------------------------------- sources


def train_vectors(token_lists: Sequence[Sequence[str]], settings: Settings):
  """gensim Word2Vec or FastText on tokenised sentences -> its KeyedVectors. One worker thread,
  seeded: the same sentences and settings give the same vectors on every run."""
  from gensim.models import FastText, Word2Vec  # deferred: importing gensim costs ~1 s

  if settings.dim < 1:
    raise ValueError(f"word_vectors.dim must be >= 1 to train vectors; got {settings.dim}")
  sentences = [list(t) for t in token_lists if len(t)]
  if not sentences:
    raise ValueError("no non-empty training caption to train word vectors on")
  kw = dict(
    sentences=sentences,
    vector_size=settings.dim,
    window=settings.window,
    min_count=settings.min_count,
    sg=int(settings.sg),
    negative=settings.negative,
    epochs=settings.epochs,
    seed=settings.seed,
    workers=1,
  )
  if settings.source == "fasttext":
    model = FastText(bucket=settings.bucket, **kw)
  elif settings.source == "word2vec":
    model = Word2Vec(**kw)
  else:
    raise ValueError(f"cannot train vectors of source {settings.source!r}; use one of {TRAINED}")
  return model.wv


def load_vectors_file(path: str, *, source: str):
  """KeyedVectors from a file: 'glove' = GloVe text (no header line); 'word2vec_file' = word2vec
  text with a header, binary when the name ends in .bin, or gensim's own `.kv`."""
  from gensim.models import KeyedVectors

  if not os.path.isfile(path):
    raise FileNotFoundError(
      f"word vectors file {path!r} does not exist (model.text.word_vectors.path)"
    )
  if source == "glove":
    return KeyedVectors.load_word2vec_format(path, binary=False, no_header=True)
  if source == "word2vec_file":
    if path.endswith(".kv"):
      return KeyedVectors.load(path)
    return KeyedVectors.load_word2vec_format(path, binary=path.endswith(".bin"))
  raise ValueError(f"source {source!r} is not a file format; expected 'glove' or 'word2vec_file'")


def surface_forms(encoder: text_lib.TextEncoder, captions: Iterable[str]) -> dict[str, list[str]]:
  """Token -> the words it came from in `captions`, most frequent first ("peopl" -> ["people"]).

  Empty when the encoder neither stems nor lemmatises (every token is its own surface form).
  """
  if not (encoder.stem or encoder.lemmatize):
    return {}
  counts: collections.Counter = collections.Counter()
  for caption in captions:
    counts.update(text_lib.normalize(caption, remove_stopwords=encoder.remove_stopwords))
  forms: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
  for word, count in counts.items():
    mapped = encoder.tokenize(word)
    if len(mapped) == 1 and mapped[0] != word:
      forms[mapped[0]].append((-count, word))
  return {tok: [w for _, w in sorted(ws)] for tok, ws in forms.items()}


# ------------------------------------------------------------------------------------ matrix


def _is_fasttext(kv) -> bool:
  return getattr(kv, "bucket", 0) > 0 and hasattr(kv, "vectors_ngrams")


def build_matrix(
  vocab: text_lib.Vocab, kv, *, seed: int = 0, forms: Mapping[str, Sequence[str]] | None = None
) -> tuple[np.ndarray, Report]:
  """(len(vocab), kv.vector_size) float32 matrix for `vocab` from KeyedVectors `kv`, and a Report.

  Lookup order per word: the token itself, then its surface forms (`forms`), then FastText's
  subword vector; else a draw from N(0, std of the found vectors) seeded by `seed`.
  """
  dim = int(kv.vector_size)
  report = Report(vocab_size=len(vocab), dim=dim)
  matrix = np.zeros((len(vocab), dim), np.float32)
  filled = np.zeros(len(vocab), bool)
  filled[text_lib.PAD_ID] = True  # padding stays zero
  subword = _is_fasttext(kv)
  forms = forms or {}
  for i, token in enumerate(vocab.tokens):
    if token in text_lib.SPECIAL_TOKENS:
      continue
    if token in kv.key_to_index:
      matrix[i], filled[i] = kv[token], True
      report.found += 1
      continue
    form = next((w for w in forms.get(token, ()) if w in kv.key_to_index), None)
    if form is not None:
      matrix[i], filled[i] = kv[form], True
      report.found_via_surface_form += 1
    elif subword:
      matrix[i], filled[i] = kv.get_vector(token), True  # built from the token's char n-grams
      report.subword += 1
    else:
      report.random += 1
      if len(report.random_examples) < 20:
        report.random_examples.append(token)
  found = matrix[filled & (np.arange(len(vocab)) != text_lib.PAD_ID)]
  std = float(found.std()) if found.size else 1.0 / np.sqrt(dim)
  missing = np.flatnonzero(~filled)
  rng = np.random.default_rng(seed)
  matrix[missing] = (rng.standard_normal((len(missing), dim)) * std).astype(np.float32)
  return matrix, report


# ---------------------------------------------------------------------------- loop entry point


def _fingerprint(settings: Settings, encoder: text_lib.TextEncoder) -> str:
  blob = json.dumps(
    {"v": _CACHE_VERSION, "settings": dataclasses.asdict(settings), "encoder": encoder.to_json()},
    sort_keys=True,
  )
  return hashlib.sha1(blob.encode()).hexdigest()[:20]


def _file_stamp(path: str) -> str | None:
  """Size and mtime of a vectors file (None if absent): a changed file invalidates the cache."""
  try:
    st = os.stat(path)
  except OSError:
    return None
  return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"


def _read_cache(directory: str, key: str, settings: Settings) -> tuple[np.ndarray, Report] | None:
  info_path = os.path.join(directory, "info.json")
  matrix_path = os.path.join(directory, "embedding.npy")
  if not (os.path.exists(info_path) and os.path.exists(matrix_path)):
    return None
  with open(info_path) as f:
    info = json.load(f)
  if info.get("key") != key:
    return None
  if settings.source not in TRAINED:
    stamp = _file_stamp(settings.path)
    if stamp is None:  # moved away since: the cached matrix is all a resumed run needs
      log.warning("%s is gone; using the word vectors cached in %s", settings.path, directory)
    elif stamp != info.get("file"):
      return None
  return np.load(matrix_path), Report(**info["report"])


def _write_cache(
  directory: str, key: str, matrix: np.ndarray, report: Report, settings: Settings
) -> None:
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory, "embedding.tmp.npy")
  np.save(tmp, matrix)
  os.replace(tmp, os.path.join(directory, "embedding.npy"))
  info = {
    "key": key,
    "settings": dataclasses.asdict(settings),
    "file": _file_stamp(settings.path) if settings.source not in TRAINED else None,
    "report": dataclasses.asdict(report),
  }
  with open(os.path.join(directory, "info.json.tmp"), "w") as f:
    json.dump(info, f, indent=1)
  os.replace(os.path.join(directory, "info.json.tmp"), os.path.join(directory, "info.json"))


def matrix_for(
  settings: Settings,
  encoder: text_lib.TextEncoder,
  train_captions: Sequence[str] | None,
  *,
  embed_dim: int,
  cache_dir: str | None = None,
) -> tuple[np.ndarray, Report]:
  """The embedding matrix of `settings` for `encoder.vocab`, from `cache_dir` when it is there.

  Raises ValueError naming both sizes when the vectors' dimension is not `embed_dim`.
  """
  if settings.dim and settings.dim != embed_dim:
    raise ValueError(
      f"model.text.word_vectors.dim={settings.dim} but the text tower's "
      f"model.text.embed_dim={embed_dim}: set them equal (or dim=0 to follow "
      "embed_dim)"
    )
  settings = dataclasses.replace(settings, dim=embed_dim)
  key = _fingerprint(settings, encoder)
  cached = _read_cache(cache_dir, key, settings) if cache_dir else None
  if cached is not None:
    log.info("%s (cached in %s)", cached[1].summary(), cache_dir)
    return cached
  t0 = time.perf_counter()
  if settings.source in TRAINED:
    if train_captions is None:
      raise ValueError(f"training {settings.source} vectors needs the training captions")
    kv = train_vectors([encoder.tokenize(c) for c in train_captions], settings)
    forms = None
  else:
    kv = load_vectors_file(settings.path, source=settings.source)
    if kv.vector_size != embed_dim:
      raise ValueError(
        f"{settings.path} holds {kv.vector_size}-d vectors but the text tower's "
        f"model.text.embed_dim={embed_dim}: set embed_dim={kv.vector_size}"
      )
    forms = surface_forms(encoder, train_captions or ())
  matrix, report = build_matrix(encoder.vocab, kv, seed=settings.seed, forms=forms)
  report.seconds = round(time.perf_counter() - t0, 2)
  log.info("%s; built in %.1f s", report.summary(), report.seconds)
  if cache_dir:
    _write_cache(cache_dir, key, matrix, report, settings)
  return matrix, report


def embedding_matrix_for(
  config, encoder: text_lib.TextEncoder, train_captions: Sequence[str] | None, workdir: str | None
) -> np.ndarray | None:
  """The (vocab_size, embed_dim) init of the text tower's embedding, or None when
  `config.model.text.word_vectors.source` is '' (or there is no text tower)."""
  text_cfg = config.model.get("text")
  if text_cfg is None or config.model.get("mode") == "image":
    return None
  settings = Settings.from_config(text_cfg.get("word_vectors"), seed=config.get("seed", 0))
  settings = settings.resolved()
  if not settings.source:
    return None
  cache_dir = os.path.join(workdir, CACHE_DIR) if workdir else None
  return matrix_for(
    settings, encoder, train_captions, embed_dim=int(text_cfg.embed_dim), cache_dir=cache_dir
  )[0]
