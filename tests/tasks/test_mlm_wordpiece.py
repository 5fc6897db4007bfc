"""Masked-token pretraining of the BERT tower: [MASK] from the run's WordPiece vocabulary, [CLS] /
[SEP] never masked, random replacements among the words; the same after a workdir is read back."""

from __future__ import annotations

import os

import numpy as np
import pytest
from ml_collections import config_dict

from jaxmm import config as config_lib
from jaxmm import tasks
from jaxmm.configs import pretrain_mlm
from jaxmm.data import pretext, wordpiece


def _bert_mlm_config(tmp_path):
  c = pretrain_mlm.get_config()
  c.pretext.update(data="matching", mlm_num=1, mlm_fraction=0.5, mlm_random_prob=0.2)
  c.data.root = c.data.synthetic.root = str(tmp_path / "data")
  c.data.image_size = 16
  c.data.synthetic.update(n_train=24, n_test=8, image_size=16)
  c.data.update(stem=False, remove_stopwords=False, lemmatize=False)
  c.model.text = config_dict.ConfigDict(
    dict(
      name="bert",
      vocab="",
      weights="",
      hidden_size=16,
      num_layers=1,
      num_heads=2,
      intermediate_size=16,
      max_position_embeddings=64,
    )
  )
  return c


def _masked(transform, split, seed=0):
  rng = np.random.default_rng(seed)
  rows = [
    transform.random_map(
      {"tokens": split.arrays["tokens"][i], "length": split.arrays["length"][i]}, rng
    )
    for i in range(len(split))
  ]
  return {k: np.stack([r[k] for r in rows]) for k in ("tokens", "mlm_targets", "mlm_mask")}


def test_mlm_masks_wordpiece_ids_with_the_encoders_mask(tmp_path):
  config = _bert_mlm_config(tmp_path)
  task = tasks.make(config)
  task.check_config()
  config_lib.ensure_synthetic(config.data, task=task.layout)
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  data = task.load_data(workdir)
  enc = data.encoder
  assert isinstance(enc, wordpiece.WordPieceEncoder)
  vocab = enc.vocab
  assert vocab.mask_id == 4 != pretext.MASK_ID  # [MASK], not the word-level <mask> (2 = [CLS])
  out = _masked(task.extra_map(len(vocab)), data.train)
  tokens = data.train.arrays["tokens"]
  picked = out["mlm_mask"] > 0
  assert picked.any() and (picked.sum(1) >= 1).all()
  boundary = np.isin(tokens, [vocab.cls_id, vocab.sep_id, vocab.pad_id])
  assert not (picked & boundary).any()  # [CLS], [SEP] and padding are never targets
  np.testing.assert_array_equal(out["mlm_targets"][picked], tokens[picked])
  changed = picked & (out["tokens"] != tokens)
  written = out["tokens"][changed]
  assert (written == vocab.mask_id).any()
  random = written[written != vocab.mask_id]
  assert ((random >= vocab.first_word_id) & (random < len(vocab))).all()
  np.testing.assert_array_equal(out["tokens"][~picked], tokens[~picked])

  # A task made from the saved config learns the same encoder from the workdir (evaluation).
  fresh = tasks.make(config)
  with pytest.raises(RuntimeError, match="read_workdir"):
    fresh.extra_map(len(vocab))
  fresh.read_workdir(workdir)
  again = _masked(fresh.extra_map(len(vocab)), data.train)
  for key in out:
    np.testing.assert_array_equal(again[key], out[key])


def test_mask_tokens_defaults_are_the_word_level_ids():
  tokens = np.array([5, 6, 7, 0], np.int32)
  masked, _, weights = pretext.mask_tokens(tokens, 3, np.random.default_rng(0), num=3)
  np.testing.assert_array_equal(masked, [pretext.MASK_ID] * 3 + [0])
  # Only [CLS] / [SEP] in the caption: nothing to mask, no target.
  masked, targets, weights = pretext.mask_tokens(
    np.array([2, 3, 0], np.int32), 2, np.random.default_rng(0), boundary_ids=(2, 3), mask_id=4
  )
  assert weights.sum() == 0 and (targets == pretext.IGNORE_ID).all()
  np.testing.assert_array_equal(masked, [2, 3, 0])
