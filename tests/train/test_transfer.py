"""Transfer of towers between workdirs through real orbax checkpoints; mismatch errors; freezing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from ml_collections import config_dict

from jaxmm.models import fusion, pretext, text
from jaxmm.models.resnet import BasicBlock, ResNet
from jaxmm.train import checkpoint as ckpt_lib
from jaxmm.train import optim, transfer
from jaxmm.train import state as state_lib

VOCAB = 20


def _filled(ctor, seed):
  """`ctor()` built abstractly, every array (BN statistics too) numpy noise of `seed`."""
  graphdef, state = nnx.split(nnx.eval_shape(ctor))
  rng = np.random.default_rng(seed)
  state = jax.tree.map(lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape), s.dtype), state)
  return nnx.merge(graphdef, state)


def _image_tower(width=4):
  return ResNet(
    stage_sizes=(1, 1), block=BasicBlock, num_filters=width, stem="small", rngs=nnx.Rngs(0)
  )


def _lstm(hidden=6):
  return text.LSTMTower(VOCAB, 5, hidden, rngs=nnx.Rngs(0))


def _classifier(seed, *, width=4, hidden=6):
  return _filled(
    lambda: fusion.ConcatFusionClassifier(
      _image_tower(width), _lstm(hidden), 18, hidden=(8,), rngs=nnx.Rngs(0)
    ),
    seed,
  )


def _save(workdir, model, which=ckpt_lib.BEST, step=3):
  state = state_lib.from_model(model, optax.adam(1e-3)).arrays
  ck = ckpt_lib.Checkpointer(str(workdir))
  ck.save(step, state, {"step": step}, which=which)
  ck.close()


def _arrays(module):
  return {
    ".".join(map(str, p)): np.asarray(v.get_value())
    for p, v in nnx.to_flat_state(nnx.state(module))
  }


def _assert_equal(a, b):
  a, b = _arrays(a), _arrays(b)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _differs(a, b):
  a, b = _arrays(a), _arrays(b)
  return all(not np.array_equal(a[k], b[k]) for k in a)


def _config(**init):
  c = config_dict.ConfigDict()
  c.model = config_dict.ConfigDict(dict(image=dict(name="resnet18", weights="")))
  c.init = config_dict.ConfigDict(
    dict(image_from="", text_from="", which="best", image_key="", text_key="")
  )
  c.init.update(init)
  return c


def test_round_trip_image_tower_between_classifiers(tmp_path):
  source = _classifier(seed=0)
  _save(tmp_path / "a", source)
  model = _classifier(seed=1)
  text_before, head_before = _arrays(model.text), _arrays(model.head)
  assert _differs(model.image, source.image)
  done = transfer.init_from_config(model, _config(image_from=str(tmp_path / "a")))
  assert len(done) == 1 and "best step 3" in done[0]
  _assert_equal(model.image, source.image)  # params and BatchNorm statistics
  for before, module in ((text_before, model.text), (head_before, model.head)):
    after = _arrays(module)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_text_tower_from_a_pretext_model_latest_fallback(tmp_path):
  mlm = _filled(lambda: pretext.MaskedTokenModel(_lstm(), VOCAB, rngs=nnx.Rngs(0)), seed=2)
  _save(tmp_path / "mlm", mlm, which=ckpt_lib.LATEST, step=5)  # no best: a run without val
  model = _classifier(seed=1)
  done = transfer.init_from_config(model, _config(text_from=str(tmp_path / "mlm")))
  assert "latest step 5" in done[0]
  _assert_equal(model.text, mlm.text)
  # A sub-tree under another name: the pretext model's tower loaded as `text_key`.
  tree, name = transfer.read_model_state(str(tmp_path / "mlm"), which="latest")
  assert sorted(tree) == ["head", "text"]
  with pytest.raises(ValueError, match=r"no 'encoder' sub-tree.*\['head', 'text'\]"):
    transfer.load_subtree(model, "text", tree, source_key="encoder", source_name=name)


def test_mismatch_names_the_path_both_shapes_and_the_source(tmp_path):
  _save(tmp_path / "wide", _classifier(seed=0, width=8, hidden=7))
  model = _classifier(seed=1)
  before = _arrays(model.image)
  with pytest.raises(ValueError) as err:
    transfer.init_from_config(model, _config(image_from=str(tmp_path / "wide")))
  msg = str(err.value)
  assert str(tmp_path / "wide") in msg and "best step 3" in msg
  assert (
    "image.conv1.kernel: image.conv1.kernel has shape (3, 3, 3, 8), the model needs "
    "(3, 3, 3, 4)" in msg
  )
  after = _arrays(model.image)
  assert all(np.array_equal(before[k], after[k]) for k in before)  # nothing half-loaded
  with pytest.raises(ValueError, match=r"text\.layers\.0\.w_hh.*\(2, 7, 28\).*\(2, 6, 24\)"):
    transfer.init_from_config(model, _config(text_from=str(tmp_path / "wide")))
  # An image tower with another structure: missing and surplus variables are both named.
  _save(
    tmp_path / "deep",
    _filled(
      lambda: fusion.ConcatFusionClassifier(
        ResNet(
          stage_sizes=(1, 1, 1), block=BasicBlock, num_filters=4, stem="small", rngs=nnx.Rngs(0)
        ),
        None,
        18,
        rngs=nnx.Rngs(0),
      ),
      seed=0,
    ),
  )
  with pytest.raises(
    ValueError,
    match=r"image\.layer3\.0\.conv1\.kernel \(3, 3, 8, 16\): not in "
    r"the model's image",
  ):
    transfer.init_from_config(model, _config(image_from=str(tmp_path / "deep")))
  with pytest.raises(FileNotFoundError, match="no checkpoints"):
    transfer.init_from_config(model, _config(image_from=str(tmp_path / "nowhere")))
  text_only = _filled(lambda: fusion.ConcatFusionClassifier(None, _lstm(), 18, rngs=nnx.Rngs(0)), 0)
  with pytest.raises(ValueError, match="no 'image' tower"):
    transfer.init_from_config(text_only, _config(image_from=str(tmp_path / "wide")))


def test_freeze_a_tower_but_train_its_last_stage():
  model = _classifier(seed=0)
  cfg = config_dict.ConfigDict(dict(freeze=("image",), unfreeze=("image.layer2",)))
  resolved = transfer.resolve_freeze(cfg, model)
  assert sorted(resolved.freeze) == ["image.bn1", "image.conv1", "image.layer1"]
  labels = optim.param_labels(nnx.state(model, nnx.Param), resolved.freeze)
  flat = {".".join(map(str, p)): v for p, v in nnx.to_flat_state(labels)}
  for path, label in flat.items():
    frozen = path.startswith("image.") and not path.startswith("image.layer2.")
    assert label == (optim.FROZEN if frozen else optim.TRAINABLE), path
  assert transfer.resolve_freeze(
    config_dict.ConfigDict(dict(freeze=("image",), unfreeze=())), model
  ).freeze == ("image",)  # no unfreeze: unchanged
  with pytest.raises(ValueError, match="match no parameter frozen"):
    transfer.resolve_freeze(
      config_dict.ConfigDict(dict(freeze=("image",), unfreeze=("text.embed",))), model
    )


# --- model.text.weights: a Hugging Face BERT checkpoint into the BERT tower -----------------

BERT_VOCAB = [
  "[PAD]",
  "[UNK]",
  "[CLS]",
  "[SEP]",
  "[MASK]",
  "a",
  "dog",
  "##s",
  "on",
  "the",
  "grass",
  "man",
  ".",
]
BERT_SIZES = dict(
  hidden_size=16, num_layers=2, num_heads=2, intermediate_size=24, max_position_embeddings=32
)


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
  """A random BertModel without its pooler (as a checkpoint may come) saved as a user gets it:
  config.json, model.safetensors and vocab.txt in one folder; and the model itself."""
  from tests.models.test_bert import import_transformers

  transformers = import_transformers()
  import torch

  config = transformers.BertConfig(
    vocab_size=len(BERT_VOCAB),
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=24,
    max_position_embeddings=32,
  )
  torch.manual_seed(0)
  reference = transformers.BertModel(config, add_pooling_layer=False).eval()
  folder = tmp_path_factory.mktemp("hf_bert")
  reference.save_pretrained(folder)
  (folder / "vocab.txt").write_text("\n".join(BERT_VOCAB) + "\n", encoding="utf-8")
  return folder, reference


def _bert_config(weights, **sizes):
  from jaxmm.configs import default

  c = default.get_config()
  c.model.mode = "text"
  c.model.text = config_dict.ConfigDict(
    dict(
      name="bert",
      vocab="",
      weights=str(weights),
      dropout=0.1,
      attention_dropout=0.1,
      pooling="cls",
      **{**BERT_SIZES, **sizes},
    )
  )
  c.data.max_len = 8
  return c


def _text_classifier(config, vocab_size):
  from jaxmm.models import registry

  return registry.build_model(config.model, num_outputs=18, vocab_size=vocab_size, rngs=nnx.Rngs(0))


def test_text_weights_from_a_hugging_face_checkpoint_match_transformers(hf_checkpoint):
  import torch

  from jaxmm.data import encoders

  folder, reference = hf_checkpoint
  config = _bert_config(folder)
  encoder = encoders.new_text_encoder(config.data, config.model.text, [])  # vocab.txt beside
  assert encoder.vocab.tokens == tuple(BERT_VOCAB)
  model = _text_classifier(config, len(encoder.vocab))
  done = transfer.init_from_config(model, config)
  assert done and "pooler" in done[0]  # absent from the file: kept its init ([CLS] pooling)
  model.eval()
  tokens_BxT, length_B = encoder.encode_batch(["A dog on the grass.", "dogs", "a man ."])
  with torch.no_grad():
    expected = reference(
      input_ids=torch.from_numpy(tokens_BxT.astype(np.int64)),
      attention_mask=torch.from_numpy((tokens_BxT > 0).astype(np.int64)),
    ).last_hidden_state.numpy()
  states_BxTxD = np.asarray(model.text.sequence(jnp.asarray(tokens_BxT), jnp.asarray(length_B)))
  real_BxT = tokens_BxT > 0
  np.testing.assert_allclose(states_BxTxD[real_BxT], expected[real_BxT], atol=1e-4, rtol=0)


def test_text_weights_that_do_not_fit_the_config_name_the_sizes(hf_checkpoint):
  folder, _ = hf_checkpoint
  config = _bert_config(folder / "model.safetensors", hidden_size=32)
  model = _text_classifier(config, len(BERT_VOCAB))
  with pytest.raises(ValueError, match=r"says hidden_size=16 \(the encoder has 32\)"):
    transfer.init_from_config(model, config)
  config = _bert_config(folder)
  model = _text_classifier(config, len(BERT_VOCAB) + 3)
  with pytest.raises(ValueError, match="use the checkpoint's vocab.txt"):
    transfer.init_from_config(model, config)
  lstm = _config()
  lstm.model.text = config_dict.ConfigDict(dict(name="lstm", weights=str(folder)))
  with pytest.raises(ValueError, match="BERT tower only"):
    transfer.load_text_weights(_lstm(), lstm.model.text)
