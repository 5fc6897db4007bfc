"""Masked-token prediction (S0's text pretext task): recover the caption tokens that were masked.

The masking follows the run's text encoder: `<mask>` for the word-level one, [MASK] for BERT's
WordPiece (whose [CLS] / [SEP] are never masked). The task learns the encoder from its data
(`load_data`) or from a trained workdir's vocab.json (`read_workdir`, for evaluation).
"""

from __future__ import annotations

import os

import jax.numpy as jnp

from jaxmm.data import encoders, wordpiece
from jaxmm.data import pretext as pretext_data
from jaxmm.models import pretext as pretext_models
from jaxmm.models import registry
from jaxmm.tasks.pretext import PretextTask
from jaxmm.train import losses


class MaskedTokenTask(PretextTask):
  name = "mlm"
  metric = "mlm_accuracy"
  target_key = "mlm_targets"
  needs_images = False

  def num_outputs(self):
    return 0  # the vocabulary

  encoder = None  # the run's text encoder, once known

  def load_data(self, workdir, *, with_images=None):
    data = super().load_data(workdir, with_images=with_images)
    self.encoder = data.encoder
    return data

  def read_workdir(self, workdir):
    self.encoder = wordpiece.load_text_encoder(os.path.join(workdir, encoders.VOCAB_FILE))

  def mask_ids(self) -> dict:
    """The encoder's mask id, boundary ids and first word id (MaskTokens' keywords)."""
    enc = self.encoder
    if enc is None:
      if encoders.is_wordpiece(self.config.model.get("text")):
        raise RuntimeError(
          "masking WordPiece ids needs the run's encoder: call load_data or read_workdir first"
        )
      return {}  # the word-level encoder's ids are MaskTokens' defaults
    return dict(mask_id=enc.mask_id, boundary_ids=enc.boundary_ids, first_word_id=enc.first_word_id)

  def extra_map(self, vocab_size):
    p = self.config.pretext
    return pretext_data.MaskTokens(
      num=p.mlm_num,
      fraction=p.mlm_fraction,
      random_prob=p.mlm_random_prob,
      keep_prob=p.mlm_keep_prob,
      vocab_size=vocab_size,
      **self.mask_ids(),
    )

  def build_model(self, vocab_size, rngs, *, embedding_init=None):
    tower = registry.build_text_tower(
      self.config.model.text,
      vocab_size=vocab_size,
      rngs=rngs,
      embedding_init=embedding_init,
      dtype=registry.compute_dtype(self.config.model),
    )
    return pretext_models.MaskedTokenModel(tower, vocab_size, rngs=rngs)

  def loss(self, logits, batch):
    return losses.masked_token_ce(logits, batch["mlm_targets"], batch["mlm_mask"])

  def probs(self, logits):
    """The predicted ids (B, T): (B, T, V) probabilities would be too large to fetch."""
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)

  def batch_counts(self, ids, batch, keep_B):
    masked = (batch["mlm_mask"] > 0) & keep_B[:, None]
    return float(((ids == batch["mlm_targets"]) & masked).sum()), float(masked.sum())
