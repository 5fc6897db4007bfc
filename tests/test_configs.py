"""Every shipped config trains two steps end to end (synthetic data of its task, tiny images)."""

from __future__ import annotations

import glob
import json
import os

import pytest

from jaxmm import config as config_lib
from jaxmm import tasks
from jaxmm.recipes import train_and_evaluate
from jaxmm.train.writer import read_metrics
from tests.conftest import ROOT

CONFIGS = sorted(
  os.path.basename(p)[:-3]
  for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
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
  if "num_filters" in c.model.image:  # ResNeXt's 32 groups need 16 (a 32-wide bottleneck)
    c.model.image.num_filters = 16 if "resnext" in c.model.image.name else 8
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
  """best_gpu's two-step run would be best's (the shrink overrides exactly what it changes but
  conv_impl, which does not change the parameters and whose paths are tested on their own)."""
  best = config_lib.flatten(
    config_lib.load_config_file(os.path.join(ROOT, "configs", "best.py")).to_dict()
  )
  gpu = config_lib.flatten(
    config_lib.load_config_file(os.path.join(ROOT, "configs", "best_gpu.py")).to_dict()
  )
  changed = {k for k in set(best) | set(gpu) if best.get(k) != gpu.get(k)}
  assert changed == {
    "data.image_size",
    "data.num_threads",
    "model.image.num_filters",
    "model.image.conv_impl",
    "train.epochs",
  }
  assert (gpu["data.image_size"], gpu["model.image.num_filters"]) == (128, 64)
  assert (best["model.image.conv_impl"], gpu["model.image.conv_impl"]) == ("im2col", "auto")


# tiny, demo and comp5329_dev train in tests/test_end_to_end.py-style runs of the same model family;
# own_data (comp5329_dev's model on a table) in tests/test_own_data.py; best_gpu: the test above.
_ELSEWHERE = ("default", "tiny", "demo", "comp5329_dev", "best_gpu", "own_data")


@pytest.mark.parametrize("name", [n for n in CONFIGS if n not in _ELSEWHERE])
def test_config_trains_two_steps(name, tmp_path):
  config = config_lib.load_config_file(os.path.join(ROOT, "configs", f"{name}.py"))
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
