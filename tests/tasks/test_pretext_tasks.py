"""Pretext tasks: which data they read (each image / caption once), from either layout."""

from __future__ import annotations

import numpy as np
import pytest

from jaxmm import config as config_lib
from jaxmm import tasks
from jaxmm.configs import pretrain_mlm, pretrain_rotation


def _config(module, tmp_path, data):
  c = module.get_config()
  c.pretext.data = data
  c.data.root = c.data.synthetic.root = str(tmp_path / data)
  c.data.image_size = 16
  c.data.synthetic.update(n_train=24, n_test=8, image_size=16)
  if data == "comp5329":
    c.data.update(images_dir="data", val_csv="", val_images_dir="", val_size=6)
  task = tasks.make(c)
  config_lib.ensure_synthetic(c.data, task=task.layout)
  return task, c


def test_rotation_reads_each_s0_image_once(tmp_path):
  task, c = _config(pretrain_rotation, tmp_path, "matching")
  data = task.load_data(str(tmp_path))
  for split in (data.train, data.val):
    assert len(np.unique(split.image_index)) == len(split) > 0
  assert task.extra_map(len(data.encoder.vocab)).num_classes == task.num_outputs() == 5


@pytest.mark.parametrize("data_name", ["matching", "comp5329"])
def test_mlm_reads_each_caption_once_and_no_images(tmp_path, data_name):
  task, c = _config(pretrain_mlm, tmp_path, data_name)
  data = task.load_data(str(tmp_path))
  assert data.train.image_cache is None
  rows = {t.tobytes() for t in data.train.arrays["tokens"]}
  assert len(rows) == len(data.train) > 0


def test_unknown_pretext_data_is_refused():
  c = pretrain_rotation.get_config()
  c.pretext.data = "imagenet"
  with pytest.raises(ValueError, match="pretext.data"):
    tasks.make(c).check_config()


def test_each_pretext_task_builds_its_model_from_the_config():
  from flax import nnx

  from jaxmm.models import pretext as pretext_models
  from jaxmm.models.autoencoder import ConvAutoencoder

  c = config_lib.default_config()
  c.model.image = dict(name="conv_autoencoder", channels=(4, 8), latent_dim=8, weights="")
  c.model.text.update(name="gru_attention", embed_dim=4, hidden_size=3)
  del c.model.text["num_layers"], c.model.text["bidirectional"], c.model.text["pooling"]
  c.model.head.update(hidden=(), dropout=0.0)
  c.pretext.rotation_angles = (0, 90, 180, 270)
  kinds = {
    "autoencoder": pretext_models.ReconstructionModel,
    "mlm": pretext_models.MaskedTokenModel,
    "rotation": pretext_models.RotationClassifier,
  }
  for name, kind in kinds.items():
    c.task = name
    model = nnx.eval_shape(lambda: tasks.make(c).build_model(12, nnx.Rngs(0)))
    assert isinstance(model, kind)
  assert model.head.out.out_features == 4 and isinstance(model.image, ConvAutoencoder)


@pytest.mark.parametrize("name", ["rotation", "mlm", "autoencoder"])
def test_model_dtype_reaches_the_pretext_towers(name):
  import jax
  import jax.numpy as jnp
  from flax import nnx

  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(1, 12, (2, 5)), jnp.int32)
  length = jnp.array([5, 3], jnp.int32)
  images = jnp.asarray(rng.random((2, 16, 16, 3)), jnp.float32)
  outputs = {}
  for dtype in ("float32", "bfloat16"):
    c = config_lib.default_config()
    c.task, c.model.dtype = name, dtype
    c.model.image.update(num_filters=4, stem="small")
    c.model.text.update(embed_dim=8, hidden_size=8)
    if name == "autoencoder":
      c.model.image = dict(name="conv_autoencoder", channels=(4, 8), latent_dim=8, weights="")
    model = tasks.make(c).build_model(12, nnx.Rngs(0))
    model.eval()
    tower = model.text if name == "mlm" else model.image
    if hasattr(tower, "dtype"):  # the CNN towers keep it; the LSTM hands it to its layers
      assert tower.dtype == (jnp.bfloat16 if dtype == "bfloat16" else None), (name, dtype)
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert all(p.dtype == jnp.float32 for p in params)  # only the compute follows model.dtype
    outputs[dtype] = np.asarray(
      tower.sequence(tokens, length) if name == "mlm" else tower.encode(images), np.float32
    )
  assert not np.array_equal(outputs["float32"], outputs["bfloat16"])  # the compute changed
  np.testing.assert_allclose(outputs["bfloat16"], outputs["float32"], atol=0.1)
