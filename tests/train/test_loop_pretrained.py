"""The loop's pretrained starts: FastText embeddings, a tower from another run, freeze / unfreeze.

Two tiny text-only runs (no images, so no conv compiles): A trains with FastText-initialised,
frozen embeddings; B takes A's text tower and trains only its LSTM layers.
"""

from __future__ import annotations

import os

import numpy as np

from configs import tiny
from jaxmm.data import word_vectors
from jaxmm.train import transfer
from jaxmm.train.loop import train_and_evaluate


def _config(tmp_path):
  config = tiny.get_config()
  config.data.root = str(tmp_path / "data")
  config.model.mode = "text"
  config.train.epochs = 1
  config.train.tune_thresholds = ""
  return config


def test_word_vectors_then_transfer_with_frozen_parts(tmp_path):
  config = _config(tmp_path)
  config.model.text.word_vectors.update(source="fasttext", epochs=2, bucket=5000)
  config.optim.freeze = ("text.embed",)
  run_a = str(tmp_path / "a")
  train_and_evaluate(config, run_a)
  cached = np.load(os.path.join(run_a, word_vectors.CACHE_DIR, "embedding.npy"))
  state_a, _ = transfer.read_model_state(run_a)
  np.testing.assert_array_equal(state_a["text"]["embed"]["embedding"]["value"], cached)

  config = _config(tmp_path)
  config.init.text_from = run_a
  config.optim.freeze = ("text",)
  config.optim.unfreeze = ("text.layers",)
  run_b = str(tmp_path / "b")
  train_and_evaluate(config, run_b)
  state_b, _ = transfer.read_model_state(run_b)
  np.testing.assert_array_equal(state_b["text"]["embed"]["embedding"]["value"], cached)
  layer_a, layer_b = (s["text"]["layers"]["0"]["w_ih"]["value"] for s in (state_a, state_b))
  assert layer_a.shape == layer_b.shape and not np.allclose(layer_a, layer_b)
  assert not os.path.exists(os.path.join(run_b, word_vectors.CACHE_DIR))  # B uses A's embedding
