"""Pretext TaskSpecs: which data they read (each image / caption once), from either layout."""

from __future__ import annotations

import numpy as np
import pytest

from configs import pretrain_mlm, pretrain_rotation
from jaxmm import config as config_lib
from jaxmm.train import tasks


def _config(module, tmp_path, data):
  c = module.get_config()
  c.pretext.data = data
  c.data.root = str(tmp_path / data)
  c.data.image_size = 16
  c.data.synthetic.update(n_train=24, n_test=8, image_size=16)
  if data == "comp5329":
    c.data.update(images_dir="data", val_csv="", val_images_dir="", val_size=6)
  spec = tasks.task_by_name(c.task)
  config_lib.ensure_synthetic(c.data, task=spec.layout(c))
  return spec, c


def test_rotation_reads_each_s0_image_once(tmp_path):
  spec, c = _config(pretrain_rotation, tmp_path, "matching")
  data = spec.load_data(c, str(tmp_path))
  for split in (data.train, data.val):
    assert len(np.unique(split.image_index)) == len(split) > 0
  assert spec.extra_map(c, len(data.encoder.vocab)).num_classes == spec.num_outputs(c) == 5


@pytest.mark.parametrize("data_name", ["matching", "comp5329"])
def test_mlm_reads_each_caption_once_and_no_images(tmp_path, data_name):
  spec, c = _config(pretrain_mlm, tmp_path, data_name)
  data = spec.load_data(c, str(tmp_path))
  assert data.train.image_cache is None
  rows = {t.tobytes() for t in data.train.arrays["tokens"]}
  assert len(rows) == len(data.train) > 0


def test_unknown_pretext_data_is_refused():
  c = pretrain_rotation.get_config()
  c.pretext.data = "imagenet"
  with pytest.raises(ValueError, match="pretext.data"):
    tasks.task_by_name("rotation").check_config(c)
