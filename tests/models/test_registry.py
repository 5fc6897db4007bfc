"""The model registry's start-up check of tower options (models are built in tests/test_configs)."""

from __future__ import annotations

import pytest

from jaxmm import config as config_lib
from jaxmm import tasks
from jaxmm.models import registry
from jaxmm.recipes import train_and_evaluate
from tests.conftest import ROOT
from tests.test_configs import CONFIGS


def _config(name: str):
  return config_lib.load_config_file(f"{ROOT}/configs/{name}.py")


@pytest.mark.parametrize("name", CONFIGS)
def test_every_shipped_config_passes(name):
  registry.check_model_config(_config(name).model)


def test_switching_the_text_tower_names_the_keys_it_does_not_take():
  c = _config("best")
  c.model.text.name = "gru_attention"  # best's text section still holds the LSTM's options
  with pytest.raises(ValueError) as e:
    registry.check_model_config(c.model)
  msg = str(e.value)
  assert msg.startswith(
    "model.text.num_layers, model.text.pooling: not options of the model.text tower 'gru_attention'"
  ), msg
  assert "`del c.model.text.num_layers`" in msg
  del c.model.text.num_layers, c.model.text.pooling  # what the message says to do
  registry.check_model_config(c.model)


def test_an_unknown_image_option_is_named_unless_the_image_tower_is_unused():
  c = _config("comp5329_dev")
  c.model.image.widht = 3
  with pytest.raises(
    ValueError,
    match=r"model\.image\.widht: not an option of the model\.image "
    r"tower 'resnet18'",
  ):
    registry.check_model_config(c.model)
  c.model.mode = "text"  # a text-only run builds no image tower
  registry.check_model_config(c.model)


def test_training_fails_on_it_before_reading_any_data(tmp_path):
  c = _config("best")
  c.model.text.name = "gru_attention"
  c.data.root = str(tmp_path / "no-such-data")
  with pytest.raises(ValueError, match="model.text.num_layers"):
    train_and_evaluate(c, str(tmp_path / "run"))
  with pytest.raises(ValueError, match="model.text.num_layers"):
    tasks.make(c).check_config()
