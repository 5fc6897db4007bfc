"""Pretrained starts of a run: FastText embeddings, a tower from another run, freeze / unfreeze.

Two tiny text-only runs (no images, so no conv compiles): A trains with FastText-initialised,
frozen embeddings; B takes A's text tower and trains only its LSTM layers.
"""

from __future__ import annotations

import json
import os

import numpy as np

from jaxmm.configs import tiny
from jaxmm.data import word_vectors
from jaxmm.recipes import train_and_evaluate
from jaxmm.train import transfer


def _config(tmp_path):
  config = tiny.get_config()
  config.data.root = config.data.synthetic.root = str(tmp_path / "data")
  config.model.mode = "text"
  config.train.epochs = 1
  config.train.report = False
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


def _pretext_configs(tmp_path, name, downstream="s0_best"):
  """A shrunk pretext config and the downstream matching config its tower is meant for."""
  from jaxmm import config as config_lib
  from tests.conftest import ROOT
  from tests.test_configs import _shrink

  load = lambda n: _shrink(
    config_lib.load_config_file(os.path.join(ROOT, "jaxmm", "configs", f"{n}.py")),
    str(tmp_path / "data"),
  )
  return load(name), load(downstream)


def test_rotation_tower_starts_the_matching_run(tmp_path):
  from flax import nnx

  from jaxmm import tasks
  from jaxmm.train import state as state_lib

  pre, down = _pretext_configs(tmp_path, "pretrain_rotation")
  run = str(tmp_path / "rotation")
  assert train_and_evaluate(pre, run)["best_metric"] is not None
  source, _ = transfer.read_model_state(run)

  def image_leaves(config, pretrained):
    state = state_lib.build(config, tasks.make(config), vocab_size=40, pretrained=pretrained)
    return dict(nnx.to_flat_state(state.model["image"]))

  down.init.image_from = run
  loaded, fresh = image_leaves(down, True), image_leaves(down, False)
  flat_source = transfer._flatten(source["image"])
  assert set(flat_source) == {tuple(str(k) for k in path) for path in loaded}
  differs = 0
  for path, var in loaded.items():
    np.testing.assert_array_equal(
      np.asarray(var.get_value()), flat_source[tuple(str(k) for k in path)]
    )
    differs += not np.array_equal(np.asarray(var.get_value()), np.asarray(fresh[path].get_value()))
  assert differs > 0  # the pretrained tower is not what a fresh init gives


def test_mlm_tower_and_vocabulary_carry_into_the_matching_run(tmp_path):
  from jaxmm import workdir as workdir_lib

  pre, down = _pretext_configs(tmp_path, "pretrain_mlm")
  run = str(tmp_path / "mlm")
  train_and_evaluate(pre, run)
  # Fewer captions downstream: a vocabulary of its own would differ (and not fit the embedding).
  down.model.mode = "text"
  down.train.contrastive_weight = 0.0  # it pairs image and text towers
  down.data.limit = 12
  down.init.text_from = run
  down.train.max_steps = 1
  train_and_evaluate(down, str(tmp_path / "down"))
  vocab = [
    json.load(open(os.path.join(d, workdir_lib.VOCAB_FILE)))["tokens"]
    for d in (run, str(tmp_path / "down"))
  ]
  assert vocab[0] == vocab[1]


def test_selection_direction_follows_the_metric():
  from jaxmm import tasks
  from jaxmm.configs import pretrain_autoencoder, pretrain_rotation

  ae, rot = pretrain_autoencoder.get_config(), pretrain_rotation.get_config()
  assert tasks.make(ae).select_mode() == "min"
  assert tasks.make(rot).select_mode() == "max"
  rot.train.select_metric = "val_loss"
  assert tasks.make(rot).select_mode() == "min"
