"""DenseNet towers: torchvision shapes and names, modes, dtype; weight import parity with
torchvision's densenet121 (random weights) when torch and torchvision are installed."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxmm.models import densenet
from jaxmm.models import import_weights as iw
from tests.conftest import import_torchvision

# torchvision densenet121: 7,978,856 parameters minus the classifier (1024 * 1000 + 1000).
_TORCHVISION_COUNT = 6_953_856
_Tiny = functools.partial(
  densenet.DenseNet,
  block_sizes=(2, 2),
  growth_rate=8,
  num_init_features=16,
  bn_size=2,
  stem="small",
)
_encode = nnx.jit(lambda m, x: m.encode(x))


def _images(shape, seed=0):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _num_params(model) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_densenet121_counts_names_and_shapes():
  model = nnx.eval_shape(lambda: densenet.DenseNet121(rngs=nnx.Rngs(0)))
  assert _num_params(model) == _TORCHVISION_COUNT and model.out_features == 1024
  assert len(model.denseblock3) == 24 and model.transition3.conv.kernel.shape == (1, 1, 1024, 512)
  # The full forward (~5 s per trace) runs in the parity test; the tiny one below covers strides.
  assert densenet.torch_key(("denseblock2", 0, "norm1", "var")) == (
    "features.denseblock2.denselayer1.norm1.running_var"
  )
  assert densenet.torch_key(("transition1", "conv", "kernel")) == "features.transition1.conv.weight"
  assert densenet.densenet_by_name("DenseNet-121") is densenet.DenseNet121
  with pytest.raises(ValueError):
    densenet.densenet_by_name("densenet100")
  with pytest.raises(ValueError):
    densenet.DenseNet121(stem="cifar", rngs=nnx.Rngs(0))


def test_forward_dtype_and_train_eval_batchnorm():
  model = _Tiny(rngs=nnx.Rngs(0))
  x, other = _images((4, 8, 8, 3)), _images((4, 8, 8, 3), seed=1)
  images = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  assert nnx.eval_shape(lambda m, x: m.feature_map(x), model, images).shape == (2, 16, 16, 32)
  assert nnx.eval_shape(
    lambda m, x: m.feature_map(x), _Tiny(stem="imagenet", rngs=nnx.Rngs(0)), images
  ).shape == (2, 4, 4, 32)  # stride 4 * 2: stem, pool, transition
  model.eval()
  eval_out = _encode(model, x)
  assert eval_out.shape == (4, model.out_features) == (4, 32)
  assert eval_out.dtype == jnp.float32
  assert bool(jnp.all(eval_out >= 0))  # pooled after the final ReLU
  model.train()
  mean_before = np.asarray(model.norm0.mean[...])
  train_out = _encode(model, x)
  assert not np.allclose(train_out, eval_out)
  assert not np.allclose(model.norm0.mean[...], mean_before)  # running stats moved
  # Batch statistics in train mode: an example's features depend on the rest of the batch.
  mixed = np.concatenate([x[:2], other[2:]])
  assert not np.allclose(_encode(model, mixed)[:2], train_out[:2], atol=1e-5)
  model.eval()
  np.testing.assert_allclose(_encode(model, mixed)[:2], _encode(model, x)[:2], rtol=1e-5, atol=1e-6)
  bf16, ref = _Tiny(dtype=jnp.bfloat16, rngs=nnx.Rngs(0)), _Tiny(rngs=nnx.Rngs(0))
  bf16.eval()
  ref.eval()
  assert bf16.conv0.kernel[...].dtype == jnp.float32  # params stay float32
  maps = nnx.jit(lambda m, x: m.feature_map(x))(bf16, x)
  assert maps.dtype == jnp.bfloat16
  out = _encode(bf16, x)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, _encode(ref, x), rtol=0.05, atol=0.05)


def _torchvision_models():
  """torchvision.models (tests.conftest.import_torchvision), or a skip."""
  pytest.importorskip("torch")
  if import_torchvision() is None:
    pytest.skip("torchvision is not installed")
  import torchvision.models as tvm

  return tvm


def _randomised(model, seed=0):
  """Random BN affine + running statistics (fresh ones are 1/0 and would hide a mix-up)."""
  import torch

  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        n = m.num_features
        m.weight.copy_(0.5 + torch.rand(n, generator=g))
        m.bias.copy_(0.1 * torch.randn(n, generator=g))
        m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
        m.running_var.copy_(0.5 + torch.rand(n, generator=g))
  return model.eval()


def test_densenet121_equals_torchvision(tmp_path):
  tvm = _torchvision_models()
  import torch

  torch.manual_seed(0)
  model = _randomised(tvm.densenet121(weights=None))
  # Saved with the old key names of torchvision's densenet121-a639ec97.pth ('norm.1', 'conv.2').
  legacy = {}
  for key, value in model.state_dict().items():
    for old in ("norm", "conv"):
      for i in "12":
        key = key.replace(f".{old}{i}.", f".{old}.{i}.") if "denselayer" in key else key
    legacy[key] = value
  assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
  path = str(tmp_path / "densenet121.pth")
  torch.save(legacy, path)
  tower = nnx.eval_shape(lambda: densenet.DenseNet121(rngs=nnx.Rngs(0)))
  report = iw.load_weights_file(tower, path)
  assert report.ok and sorted(k for k in report.ignored if "classifier" in k) == [
    "classifier.bias",
    "classifier.weight",
  ]
  images = _images((2, 3, 32, 32))
  with torch.no_grad():
    maps = torch.relu(model.features(torch.from_numpy(images)))
    want = maps.mean(dim=(2, 3)).numpy()  # torchvision's forward before the classifier
  tower.eval()
  got = np.asarray(_encode(tower, images.transpose(0, 2, 3, 1)))
  assert got.shape == want.shape == (2, 1024) and np.abs(want).max() > 0.1
  assert np.abs(got - want).max() < 1e-4, np.abs(got - want).max()
  # A state dict whose arrays do not fit is named, not half-loaded.
  broken = {k: v.numpy() for k, v in model.state_dict().items()}
  del broken["features.norm5.running_var"]
  with pytest.raises(ValueError, match=r"missing from the file: features\.norm5\.running_var"):
    iw.load_torchvision(tower, broken)


@pytest.mark.parametrize(
  "name, options, out_features",
  [
    ("densenet121", dict(block_sizes=(1,), growth_rate=8, num_init_features=8), 16),
    ("efficientnet_b1", dict(width=0.25, depth=0.25, stem="small"), 320),
  ],
)
def test_registry_builds_the_towers_and_checks_their_options(name, options, out_features):
  import ml_collections

  from jaxmm.models import registry

  cfg = ml_collections.ConfigDict(dict(name=name, weights="", **options))
  tower = nnx.eval_shape(
    lambda: registry.build_image_tower(cfg, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
  )
  assert tower.out_features == out_features and tower.dtype == jnp.bfloat16
  cfg.activation = "leaky_relu"  # a ResNet option
  with pytest.raises(ValueError, match=r"model\.image\.activation: not an option"):
    registry.build_image_tower(cfg, rngs=nnx.Rngs(0))
