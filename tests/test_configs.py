"""Every shipped config trains two steps end to end (synthetic data of its task, tiny images)."""

from __future__ import annotations

import glob
import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from jaxmm import config as config_lib
from jaxmm import inference, tasks
from jaxmm import workdir as workdir_lib
from jaxmm.data import wordpiece
from jaxmm.models import registry
from jaxmm.recipes import train_and_evaluate
from jaxmm.train.writer import read_metrics
from tests.conftest import ROOT

CONFIGS = sorted(
  os.path.basename(p)[:-3]
  for p in glob.glob(os.path.join(ROOT, "jaxmm", "configs", "*.py"))
  if not p.endswith("__init__.py")
)


def _shrink(c, data_root: str):
  """The config's architecture at test size: synthetic data, small images, narrow towers."""
  c.data.root = data_root
  c.data.synthetic.update(root=c.data.root, n_train=48, n_test=16, image_size=32)
  c.data.image_size = 32
  matching = tasks.make(c).layout == "matching"  # pretext tasks read either
  c.data.val_csv = "val.csv" if matching else ""
  if matching:
    c.data.images_dir, c.data.val_images_dir = "train_images", "val_images"
  else:
    c.data.images_dir, c.data.split, c.data.val_size = "data", "random", 16
  c.data.lemmatize = False  # WordNet data may be absent here; its start-up error is tested apart
  c.data.num_threads = 1
  image, text = c.model.image, c.model.text
  if "num_filters" in image:  # ResNeXt's 32 groups need 16 (a 32-wide bottleneck)
    image.num_filters = 16 if "resnext" in image.name else 8
  if "growth_rate" in image:  # DenseNet: one narrow layer a block
    image.update(growth_rate=4, num_init_features=8)
    image.block_sizes = (1, 1, 1, 1)
  if "width" in image:  # EfficientNet: one narrow block a stage
    image.update(width=0.25, depth=0.1)
  if text.name == "bert":
    text.update(hidden_size=24, num_heads=2, num_layers=1, intermediate_size=32)
  if "word_vectors" in text:  # FastText's (source or fallback) 200k n-gram rows: seconds a run
    text.word_vectors.bucket = 1000
  # No report.md / plots: drawing them took ~2 s a run (tests/test_end_to_end.py checks them).
  c.train.update(
    batch_size=8,
    eval_batch_size=16,
    max_steps=2,
    log_every=1,
    progress_bar=False,
    head_epochs=1,
    report=False,
  )
  return c


def test_every_config_is_covered():
  for name in (
    "s0_matching",
    "s0_cnn_mlp",
    "s0_ae_lstm",
    "s0_best",
    "s1_bingi",
    "s2_xu",
    "s3_ren",
    "s4_liu",
    "demo",
    "tiny",
    "comp5329_dev",
    "pretrain_rotation",
    "pretrain_mlm",
    "pretrain_autoencoder",
    "best",
    "best_gpu",
    "own_data",
  ):
    assert name in CONFIGS


def test_best_gpu_is_best_with_only_its_sizes_changed():
  """best_gpu's two-step run would be best's (the shrink overrides exactly what it changes)."""
  best = config_lib.flatten(
    config_lib.load_config_file(os.path.join(ROOT, "jaxmm", "configs", "best.py")).to_dict()
  )
  gpu = config_lib.flatten(
    config_lib.load_config_file(os.path.join(ROOT, "jaxmm", "configs", "best_gpu.py")).to_dict()
  )
  changed = {k for k in set(best) | set(gpu) if best.get(k) != gpu.get(k)}
  assert changed == {
    "data.image_size",
    "data.num_threads",
    "model.image.num_filters",
    "train.epochs",
  }
  assert (gpu["data.image_size"], gpu["model.image.num_filters"]) == (128, 64)
  # No CPU conv path forced onto a GPU: 'auto' chooses by backend (jaxmm.models.conv).
  assert best["model.image.conv_impl"] == gpu["model.image.conv_impl"] == "auto"


def test_s0_variants_keep_the_training_they_were_measured_with():
  """s0_matching trains with the changes that took it past S0's 0.70; its variants inherit its
  data and head but keep S0's reported training (s0_matching.as_reported)."""
  load = {
    n: config_lib.flatten(
      config_lib.load_config_file(os.path.join(ROOT, "jaxmm", "configs", f"{n}.py")).to_dict()
    )
    for n in ("s0_matching", "s0_cnn_mlp", "s0_ae_lstm")
  }
  s0 = load["s0_matching"]
  assert s0["model.text.word_vectors.source"] == "fasttext" and s0["model.text.dropout"] == 0.2
  assert (s0["optim.lr"], s0["optim.schedule"], s0["data.augment.crop"]) == (
    5e-4,
    "warmup_cosine",
    True,
  )
  for name in ("s0_cnn_mlp", "s0_ae_lstm"):
    c = load[name]
    assert (c["optim.name"], c["optim.lr"], c["optim.schedule"]) == ("adam", 2e-4, "constant")
    assert not c["data.augment.crop"] and not c["data.augment.hflip"]
    assert c["model.head.dropout"] == 0.0
    assert c.get("model.text.word_vectors.source", "") == ""
  assert load["s0_cnn_mlp"]["model.image.num_filters"] == 32


# tiny, demo and comp5329_dev train in tests/test_end_to_end.py-style runs of the same model family;
# own_data (comp5329_dev's model on a table) in tests/test_own_data.py; best_gpu: the test above.
_ELSEWHERE = ("default", "tiny", "demo", "comp5329_dev", "best_gpu", "own_data")


@pytest.mark.parametrize("name", [n for n in CONFIGS if n not in _ELSEWHERE])
def test_config_trains_two_steps(name, tmp_path):
  config = config_lib.load_config_file(os.path.join(ROOT, "jaxmm", "configs", f"{name}.py"))
  config = _shrink(config, str(tmp_path / "data"))
  workdir = str(tmp_path / "run")
  result = train_and_evaluate(config, workdir)
  assert result["best_metric"] is not None
  rows = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  assert not os.path.exists(os.path.join(workdir, "report.md"))  # train.report=False
  metric = config.train.select_metric
  assert any(metric in r for r in rows), rows
  if not tasks.make(config).predicts:  # pretext: no thresholds; the autoencoder's PNG instead
    assert not os.path.exists(os.path.join(workdir, "thresholds.json"))
    png = os.path.join(workdir, "reconstructions.png")
    assert os.path.exists(png) == (config.task == "autoencoder")
    return
  thresholds = json.load(open(os.path.join(workdir, "thresholds.json")))
  assert thresholds["thresholds"] is not None
  if config.model.text.name == "bert":  # s2_xu: WordPiece ids, the same encoder restored
    saved = wordpiece.load_text_encoder(workdir)
    assert isinstance(saved, wordpiece.WordPieceEncoder)
    assert saved.vocab.tokens[:5] == wordpiece.SPECIAL_TOKENS
    restored = inference.restore(workdir)
    assert restored.encoder.to_json() == saved.to_json()
    assert restored.model_state is not None


# The seeds' towers at the sizes their authors used: trunk parameters as torchvision counts them
# without the classifier, and TinyBERT General 4L-312D's BertModel with a 30522-token vocab.txt.
SEED_TOWERS = {
  "s1_bingi": ("ResNet", 23_508_032, "LSTMTower"),
  "s2_xu": ("DenseNet", 6_953_856, "BertEncoder"),
  "s3_ren": ("EfficientNet", 6_513_184, "LSTMTower"),
}


def _num_params(module) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


@pytest.mark.parametrize("name", sorted(SEED_TOWERS))
def test_seed_configs_build_the_seeds_towers(name):
  config = config_lib.load_config_file(os.path.join(ROOT, "jaxmm", "configs", f"{name}.py"))
  image_cls, image_params, text_cls = SEED_TOWERS[name]
  image = nnx.eval_shape(lambda: registry.build_image_tower(config.model.image, rngs=nnx.Rngs(0)))
  text = nnx.eval_shape(
    lambda: registry.build_text_tower(config.model.text, vocab_size=30522, rngs=nnx.Rngs(0))
  )
  assert (type(image).__name__, _num_params(image)) == (image_cls, image_params)
  assert type(text).__name__ == text_cls
  if name == "s2_xu":
    assert config.model.name == "attention_fusion"
    assert (text.sizes["hidden_size"], text.sizes["num_layers"], text.sizes["num_heads"]) == (
      312,
      4,
      12,
    )
    assert _num_params(text) == 14_350_248  # TinyBERT General 4L-312D's BertModel
  else:  # GloVe when a file is given; S1 trains FastText without one, S3 starts random
    vectors = config.model.text.word_vectors
    assert (vectors.source, vectors.fallback) == (
      "glove",
      "fasttext" if name == "s1_bingi" else "random",
    )
    assert config.model.text.embed_dim == (100 if name == "s1_bingi" else 50)


@pytest.mark.parametrize("name", [n for n in CONFIGS if n != "default"])
def test_a_workdirs_config_reads_back_into_the_same_towers(name, tmp_path):
  """read_config fills keys a run predates from default.py, but not the default towers' options
  into another tower's section (an LSTM's pooling is no option of the BERT or GRU towers)."""
  config = config_lib.load_config_file(os.path.join(ROOT, "jaxmm", "configs", f"{name}.py"))
  workdir_lib.write_config(config, str(tmp_path))
  read = workdir_lib.read_config(str(tmp_path))
  registry.check_model_config(read.model)
  assert set(read.model.text) == set(config.model.text)
  assert set(read.model.image) == set(config.model.image)
