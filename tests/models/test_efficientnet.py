"""EfficientNet towers: torchvision shapes and names, modes (BN, stochastic depth), dtype; weight
import parity with torchvision's efficientnet_b1 (random weights) when torch and torchvision are
installed."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxmm.models import efficientnet
from jaxmm.models import import_weights as iw
from tests.models.test_densenet import _images, _num_params, _randomised, _torchvision_models

# torchvision efficientnet_b1: 7,794,184 parameters minus the classifier (1280 * 1000 + 1000).
_TORCHVISION_COUNT = 6_513_184
# One MBConv per stage, narrow: every block kind (no expand, expand, residual, SE) in ~1 s.
_Tiny = functools.partial(efficientnet.EfficientNet, width=0.25, depth=0.25, stem="small")
_encode = nnx.jit(lambda m, x, rngs=None: m.encode(x, rngs=rngs))


def test_b1_counts_names_and_shapes():
  model = nnx.eval_shape(lambda: efficientnet.EfficientNetB1(rngs=nnx.Rngs(0)))
  assert _num_params(model) == _TORCHVISION_COUNT and model.out_features == 1280
  assert [len(stage) for stage in model.features[1:-1]] == [2, 3, 3, 4, 4, 5, 2]
  block = model.features[2][0]  # 16 -> 24, expand 6, 3x3 depthwise, stride 2
  assert block.block[1].conv.kernel.shape == (3, 3, 1, 96) and not block.residual
  assert block.block[2].fc1.kernel.shape == (1, 1, 96, 4)  # squeeze = input channels // 4
  assert model.features[2][1].residual
  # torchvision's linear stochastic-depth schedule over the 23 blocks.
  assert model.features[1][0].stochastic_depth.rate == 0.0
  assert model.features[7][1].stochastic_depth.rate == pytest.approx(0.2 * 22 / 23)
  assert efficientnet.torch_key(("features", 2, 0, "block", 1, "bn", "var")) == (
    "features.2.0.block.1.1.running_var"
  )
  assert efficientnet.torch_key(("features", 2, 0, "block", 2, "fc1", "bias")) == (
    "features.2.0.block.2.fc1.bias"
  )
  assert efficientnet.efficientnet_by_name("EfficientNet-B1") is efficientnet.EfficientNetB1
  with pytest.raises(ValueError):
    efficientnet.efficientnet_by_name("efficientnet_b9")
  with pytest.raises(ValueError):
    efficientnet.EfficientNetB1(norm="group", rngs=nnx.Rngs(0))


def test_forward_dtype_train_eval_and_stochastic_depth():
  model = _Tiny(rngs=nnx.Rngs(0))
  assert [len(stage) for stage in model.features[1:-1]] == [1] * 7
  x, other = _images((4, 16, 16, 3)), _images((4, 16, 16, 3), seed=1)
  images = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  assert nnx.eval_shape(lambda m, x: m.feature_map(x), model, images).shape == (2, 2, 2, 320)
  model.eval()
  eval_out = _encode(model, x)
  assert eval_out.shape == (4, model.out_features) == (4, 320) and eval_out.dtype == jnp.float32
  model.train()
  mean_before = np.asarray(model.features[0].bn.mean[...])
  train_out = _encode(model, x, nnx.Rngs(dropout=0))
  assert not np.allclose(train_out, eval_out)
  assert not np.allclose(model.features[0].bn.mean[...], mean_before)  # running stats moved
  mixed = np.concatenate([x[:2], other[2:]])
  assert not np.allclose(_encode(model, mixed, nnx.Rngs(dropout=0))[:2], train_out[:2], atol=1e-5)
  model.eval()
  np.testing.assert_allclose(_encode(model, mixed)[:2], _encode(model, x)[:2], rtol=1e-5, atol=1e-6)
  bf16, ref = _Tiny(dtype=jnp.bfloat16, rngs=nnx.Rngs(0)), _Tiny(rngs=nnx.Rngs(0))
  bf16.eval()
  ref.eval()
  assert bf16.features[0].conv.kernel[...].dtype == jnp.float32  # params stay float32
  assert nnx.jit(lambda m, x: m.feature_map(x))(bf16, x).dtype == jnp.bfloat16
  out = _encode(bf16, x)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, _encode(ref, x), rtol=0.05, atol=0.05)


def test_stochastic_depth_drops_whole_examples():
  block = efficientnet.MBConv(
    8, 8, expand_ratio=1, kernel=3, stride=1, stochastic_depth=0.5, bn=(0.9, 1e-5), rngs=nnx.Rngs(0)
  )
  x = _images((64, 4, 4, 8))
  with pytest.raises(ValueError, match="no `rngs`"):  # train mode needs a 'dropout' stream
    block(x)
  branch = nnx.jit(lambda b, x: functools.reduce(lambda y, layer: layer(y), b.block, x))
  full = np.asarray(branch(block, x))
  y = np.asarray(nnx.jit(lambda b, x, r: b(x, rngs=r))(block, x, nnx.Rngs(dropout=1)))
  kept = np.abs(y - x).reshape(64, -1).max(axis=1) > 1e-6
  assert 10 < kept.sum() < 54  # about half the examples keep their branch ...
  np.testing.assert_allclose(y[kept], x[kept] + 2.0 * full[kept], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(y[~kept], x[~kept])  # ... the others are the identity


def test_b1_equals_torchvision(tmp_path):
  tvm = _torchvision_models()
  import torch

  torch.manual_seed(0)
  model = _randomised(tvm.efficientnet_b1(weights=None))
  # A training checkpoint: wrapped and saved from DataParallel ("module." prefixes).
  path = str(tmp_path / "efficientnet_b1.pth")
  torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
  tower = nnx.eval_shape(lambda: efficientnet.EfficientNetB1(rngs=nnx.Rngs(0)))
  report = iw.load_weights_file(tower, path)
  assert report.ok and sorted(k for k in report.ignored if "classifier" in k) == [
    "classifier.1.bias",
    "classifier.1.weight",
  ]
  images = _images((2, 3, 32, 32))
  with torch.no_grad():
    want = model.features(torch.from_numpy(images)).mean(dim=(2, 3)).numpy()
  tower.eval()
  got = np.asarray(_encode(tower, images.transpose(0, 2, 3, 1)))
  assert got.shape == want.shape == (2, 1280) and np.abs(want).max() > 0.1
  assert np.abs(got - want).max() < 1e-4, np.abs(got - want).max()
