"""ResNet / ResNeXt towers: shapes, torchvision parameter counts, modes."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxmm.models import resnet

# torchvision's parameter counts minus the fc head (in*1000 + 1000):
# resnet18 11,689,512 - 513,000; resnet34 21,797,672 - 513,000;
# resnet50 25,557,032 - 2,049,000; resnext50_32x4d 25,028,904 - 2,049,000.
_TORCHVISION_COUNTS = {
  "resnet18": (11_176_512, 512),
  "resnet34": (21_284_672, 512),
  "resnet50": (23_508_032, 2048),
  "resnext50_32x4d": (22_979_904, 2048),
}
# The 'small' stem swaps the 7x7x3x64 stem kernel for a 3x3x3x64 one.
_SMALL_STEM_DELTA = (3 * 3 - 7 * 7) * 3 * 64

_TinyResNet = functools.partial(
  resnet.ResNet, stage_sizes=(1, 1), block=resnet.BasicBlock, num_filters=8, stem="small"
)


def _images(shape, seed=0):
  # numpy, not jax.random: avoids compiling a threefry kernel per shape.
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _num_params(model) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _filled(ctor, seed=0):
  """Builds `ctor()` abstractly, then fills params with numpy noise.

  Much cheaper than a real init for big models (no per-shape RNG compiles);
  running stats keep their abstract shapes' init (mean 0, var 1).
  """
  graphdef, params, rest = nnx.split(nnx.eval_shape(ctor), nnx.Param, ...)
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda s: jnp.asarray(0.05 * rng.standard_normal(s.shape), s.dtype), params)
  # Running stats as BatchNorm initialises them: mean 0, var 1.
  rest = jax.tree_util.tree_map_with_path(
    lambda path, s: (jnp.ones if "'var'" in jax.tree_util.keystr(path) else jnp.zeros)(
      s.shape, s.dtype
    ),
    rest,
  )
  return nnx.merge(graphdef, params, rest)


@pytest.mark.parametrize("name", sorted(_TORCHVISION_COUNTS))
def test_param_counts_and_shapes(name):
  count, out_features = _TORCHVISION_COUNTS[name]
  images = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  for stem, expected in (("imagenet", count), ("small", count + _SMALL_STEM_DELTA)):
    model = nnx.eval_shape(
      lambda stem=stem: resnet.resnet_by_name(name)(stem=stem, rngs=nnx.Rngs(0))
    )
    assert _num_params(model) == expected, (name, stem)
    assert model.out_features == out_features
    if stem == "imagenet":
      feats = nnx.eval_shape(lambda m, x: m.encode(x), model, images)
      assert feats.shape == (2, out_features)
      maps = nnx.eval_shape(lambda m, x: m.feature_map(x), model, images)
      assert maps.shape == (2, 1, 1, out_features)  # stride 32
    else:
      maps = nnx.eval_shape(lambda m, x: m.feature_map(x), model, images)
      assert maps.shape == (2, 4, 4, out_features)  # stride 8


def test_resnet18_forward():
  # Real forwards: R18 with the small stem here, R50 with the imagenet stem
  # below (all variant x stem shapes are traced in test_param_counts...).
  model = _filled(lambda: resnet.ResNet18(stem="small", rngs=nnx.Rngs(0)))
  feats = nnx.jit(lambda m, x: m(x))(model, _images((2, 32, 32, 3)))
  assert feats.shape == (2, 512) and feats.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(feats)))
  assert bool(jnp.all(feats >= 0))  # pooled after a ReLU


def test_resnet50_forward():
  model = _filled(lambda: resnet.ResNet50(stem="imagenet", rngs=nnx.Rngs(0)))
  feats = nnx.jit(lambda m, x: m.encode(x))(model, _images((2, 32, 32, 3)))
  assert feats.shape == (2, 2048)
  assert bool(jnp.all(jnp.isfinite(feats)))


def test_torchvision_names():
  model = nnx.eval_shape(lambda: resnet.ResNet50(rngs=nnx.Rngs(0)))
  paths = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
  for path in [
    "conv1/kernel",
    "bn1/scale",
    "bn1/bias",
    "layer1/0/conv1/kernel",
    "layer1/0/conv3/kernel",
    "layer1/0/bn3/scale",
    "layer1/0/downsample/conv/kernel",
    "layer1/0/downsample/bn/scale",
    "layer4/2/conv2/kernel",
  ]:
    assert path in paths, path
  assert not any("bias" in p and "conv" in p for p in paths)  # bias=False
  model = nnx.eval_shape(lambda: resnet.ResNet18(rngs=nnx.Rngs(0)))
  assert model.layer1[0].downsample is None
  assert model.layer2[0].downsample is not None
  assert len(model.layer4) == 2


def test_resnext_grouped_width():
  model = nnx.eval_shape(lambda: resnet.ResNeXt50_32x4d(rngs=nnx.Rngs(0)))
  block = model.layer1[0]
  # torchvision: width = int(64 * 4 / 64) * 32 = 128, grouped 3x3.
  assert block.conv2.kernel.shape == (3, 3, 128 // 32, 128)
  assert block.conv2.feature_group_count == 32
  assert block.conv3.kernel.shape == (1, 1, 128, 256)


def test_conv_impls_share_params_and_outputs():
  # 8 px, small stem: 'auto' runs XLA on layer1 (8x8) and im2col on layer2
  # (4x4), so all three paths differ. Grouped convs: tests/models/test_conv.
  x = _images((2, 8, 8, 3))
  fwd = nnx.jit(lambda m, x: m(x))
  ref = _TinyResNet(conv_impl="xla", rngs=nnx.Rngs(0))
  others = [_TinyResNet(conv_impl=impl, rngs=nnx.Rngs(0)) for impl in ("im2col", "auto")]
  for model in others:  # Same init whichever impl (before any forward).
    jax.tree.map(np.testing.assert_array_equal, nnx.state(model), nnx.state(ref))
  # Equal states => a checkpoint from one impl restores into another.
  ref_out = fwd(ref, x)
  for model in others:
    np.testing.assert_allclose(fwd(model, x), ref_out, rtol=1e-4, atol=1e-5)


def test_train_eval_batchnorm():
  model = _TinyResNet(rngs=nnx.Rngs(0))
  x = _images((4, 8, 8, 3))
  fwd = nnx.jit(lambda m, x: m(x))
  stats_before = jax.tree.map(jnp.copy, nnx.state(model, nnx.BatchStat))

  model.eval()
  assert model.bn1.use_running_average
  eval_out = fwd(model, x)
  jax.tree.map(np.testing.assert_array_equal, nnx.state(model, nnx.BatchStat), stats_before)

  model.train()
  assert not model.bn1.use_running_average
  train_out = fwd(model, x)
  assert not np.allclose(train_out, eval_out)
  # Train mode moved the running statistics.
  mean_after = model.bn1.mean[...]
  assert not np.allclose(mean_after, stats_before["bn1"]["mean"][...])
  # Batch statistics: an example's output depends on the rest of the batch.
  other = x.at[2:].set(_images((2, 8, 8, 3), seed=1))
  assert not np.allclose(fwd(model, other)[:2], train_out[:2], atol=1e-5)
  model.eval()
  np.testing.assert_allclose(fwd(model, other)[:2], fwd(model, x)[:2], rtol=1e-5, atol=1e-6)


def test_leaky_relu_differs():
  x = _images((2, 8, 8, 3))
  fwd = nnx.jit(lambda m, x: m(x))
  relu = _TinyResNet(rngs=nnx.Rngs(0))
  leaky = _TinyResNet(activation="leaky_relu", rngs=nnx.Rngs(0))
  relu.eval()
  leaky.eval()
  out_relu, out_leaky = fwd(relu, x), fwd(leaky, x)
  assert not np.allclose(out_relu, out_leaky)
  assert float(jnp.min(out_leaky)) < 0.0 <= float(jnp.min(out_relu))
  with pytest.raises(ValueError):
    _TinyResNet(activation="gelu", rngs=nnx.Rngs(0))


def test_zero_init_residual():
  model = _TinyResNet(zero_init_residual=True, rngs=nnx.Rngs(0))
  for layer in (model.layer1, model.layer2):
    np.testing.assert_array_equal(layer[0].bn2.scale[...], 0.0)
    np.testing.assert_array_equal(layer[0].bn1.scale[...], 1.0)
  plain = _TinyResNet(rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(plain.layer1[0].bn2.scale[...], 1.0)


def test_gradients_reach_every_param():
  model = _TinyResNet(rngs=nnx.Rngs(0))
  x = _images((2, 8, 8, 3))

  @nnx.jit
  def grads_of(model, x):
    return nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model)

  for path, g in nnx.to_flat_state(grads_of(model, x)):
    assert bool(jnp.all(jnp.isfinite(g[...]))), path
    assert float(jnp.max(jnp.abs(g[...]))) > 0.0, path


def test_resnet_by_name():
  assert resnet.resnet_by_name("ResNet-18") is resnet.ResNet18
  assert resnet.resnet_by_name("resnext50_32x4d") is resnet.ResNeXt50_32x4d
  with pytest.raises(ValueError):
    resnet.resnet_by_name("resnet19")
  with pytest.raises(ValueError):
    resnet.ResNet18(stem="cifar", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError):
    resnet.ResNet18(conv_impl="cudnn", rngs=nnx.Rngs(0))
