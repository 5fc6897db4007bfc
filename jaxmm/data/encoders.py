"""The run's text encoder: word-level (jaxmm.data.text) or BERT's WordPiece, chosen by the tower.

`model.text.name == 'bert'` -> a WordPieceEncoder (jaxmm.data.wordpiece):
  * `model.text.vocab`: a BERT vocab.txt (or the folder holding it), e.g. the one shipped beside
    a Hugging Face checkpoint; '' = the vocab.txt beside `model.text.weights` when there is one;
  * with neither, the vocabulary is fitted on the training captions (`WordPieceEncoder.fit`:
    special tokens, characters, whole words) for a tower trained from scratch. Pretrained weights
    without their vocab.txt are refused: their embedding rows mean that file's token ids;
  * lower-casing follows `do_lower_case` of a tokenizer_config.json beside the vocab.txt, else
    BERT's uncased default (TinyBERT General is uncased). Captions are taken as written:
    data.stem / lemmatize / remove_stopwords belong to the word-level encoder and are refused.
Every other tower -> `TextEncoder.fit` with the data.* settings.

Either encoder is saved as the workdir's vocab.json, which wins over the config when present
(a resumed run, `init.text_from`'s shared vocabulary, evaluation and prediction:
`wordpiece.load_text_encoder`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence

from jaxmm.data.text import TextEncoder
from jaxmm.data.wordpiece import WordPieceEncoder, load_text_encoder

VOCAB_FILE = "vocab.json"  # jaxmm.workdir.VOCAB_FILE (not imported: it would import jax)
BERT_VOCAB = "vocab.txt"
TOKENIZER_CONFIG = "tokenizer_config.json"
# data.* keys of the word-level normalisation that BERT's tokeniser does not apply.
_WORD_LEVEL_ONLY = ("stem", "lemmatize", "remove_stopwords")
log = logging.getLogger("jaxmm")


def is_wordpiece(text_cfg) -> bool:
  """Whether the text tower reads WordPiece ids (the BERT tower)."""
  return text_cfg is not None and text_cfg.get("name") == "bert"


def bert_vocab_file(text_cfg) -> str | None:
  """The vocab.txt of a BERT tower: model.text.vocab, else the one beside model.text.weights;
  None when the vocabulary is to be fitted on the captions. Raises when a named file is missing
  or when pretrained weights come without a vocab.txt."""
  vocab, weights = text_cfg.get("vocab") or "", text_cfg.get("weights") or ""
  if vocab:
    path = os.path.join(vocab, BERT_VOCAB) if os.path.isdir(vocab) else vocab
    if not os.path.isfile(path):
      raise FileNotFoundError(
        f"model.text.vocab={vocab!r}: no such file; give the vocab.txt of the BERT checkpoint "
        "(one token a line) or '' to fit a vocabulary on the training captions"
      )
    return path
  if not weights:
    return None
  folder = weights if os.path.isdir(weights) else os.path.dirname(os.path.abspath(weights))
  beside = os.path.join(folder, BERT_VOCAB)
  if os.path.isfile(beside):
    return beside
  raise FileNotFoundError(
    f"model.text.weights={weights!r} has no {BERT_VOCAB} beside it: pretrained BERT weights "
    "need the vocabulary they were trained with; set --config.model.text.vocab=PATH/vocab.txt "
    "(huawei-noah/TinyBERT_General_4L_312D ships it with its weights)"
  )


def check_text_config(text_cfg, cfg_data=None) -> None:
  """Start-up checks of the encoder a config asks for (files exist, no word-level options with
  BERT's tokeniser), before any data are read."""
  if not is_wordpiece(text_cfg):
    return
  bert_vocab_file(text_cfg)
  if cfg_data is None:
    return
  asked = [k for k in _WORD_LEVEL_ONLY if cfg_data.get(k)]
  if asked:
    flags = " ".join(f"--config.data.{k}=False" for k in asked)
    raise ValueError(
      f"data.{', data.'.join(asked)}: the BERT tower (model.text.name='bert') reads captions "
      f"through BERT's WordPiece tokeniser as written, which has no such step; set {flags}"
    )


def _lower_case(vocab_file: str) -> bool:
  path = os.path.join(os.path.dirname(vocab_file), TOKENIZER_CONFIG)
  if not os.path.isfile(path):
    return True
  with open(path, encoding="utf-8") as f:
    return bool(json.load(f).get("do_lower_case", True))


def new_text_encoder(cfg_data, text_cfg, train_captions: Sequence[str]):
  """A new encoder of the kind the text tower reads, from data.* and model.text (see above)."""
  if not is_wordpiece(text_cfg):
    return TextEncoder.fit(
      list(train_captions),
      max_len=cfg_data.max_len,
      min_freq=cfg_data.min_freq,
      max_size=cfg_data.get("vocab_size") or None,
      stem=cfg_data.stem,
      remove_stopwords=cfg_data.get("remove_stopwords", False),
      lemmatize=cfg_data.get("lemmatize", False),
    )
  check_text_config(text_cfg, cfg_data)
  vocab_file = bert_vocab_file(text_cfg)
  if vocab_file is not None:
    enc = WordPieceEncoder.from_vocab_file(
      vocab_file, max_len=cfg_data.max_len, lower_case=_lower_case(vocab_file)
    )
    log.info("text: BERT WordPiece, %d tokens from %s", len(enc.vocab), vocab_file)
    return enc
  enc = WordPieceEncoder.fit(
    train_captions,
    max_len=cfg_data.max_len,
    min_freq=cfg_data.min_freq,
    max_size=cfg_data.get("vocab_size") or None,
  )
  log.info(
    "text: WordPiece vocabulary of %d tokens fitted on the %d training captions (no "
    "model.text.vocab: a BERT tower from scratch)",
    len(enc.vocab),
    len(train_captions),
  )
  return enc


def text_encoder_for(cfg_data, text_cfg, workdir: str | None, train_captions: Sequence[str]):
  """The workdir's vocab.json when there is one (it must be of the tower's kind), else a new
  encoder (`new_text_encoder`) saved there by the process that writes the run's files."""
  path = os.path.join(workdir, VOCAB_FILE) if workdir else None
  if path and os.path.exists(path):
    enc = load_text_encoder(path)
    if isinstance(enc, WordPieceEncoder) != is_wordpiece(text_cfg):
      kind = "a WordPiece" if isinstance(enc, WordPieceEncoder) else "a word-level"
      name = text_cfg.get("name") if text_cfg is not None else None
      raise ValueError(
        f"{path} holds {kind} vocabulary, but model.text.name={name!r} reads "
        f"{'WordPiece' if is_wordpiece(text_cfg) else 'word-level'} ids: use a new --workdir"
      )
    return enc
  enc = new_text_encoder(cfg_data, text_cfg, train_captions)
  if path:
    from jaxmm.workdir import writes_files  # deferred: it imports jax

    if writes_files():
      enc.save(path)
  return enc
