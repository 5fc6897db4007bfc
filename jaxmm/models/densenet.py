"""DenseNet image towers (torchvision layout, NNX).

Same architecture as torchvision's `densenet121/161/169/201`: a 7x7/2 conv + 3x3/2 max-pool stem,
dense blocks whose layers (BN-ReLU-1x1 conv to bn_size*growth, BN-ReLU-3x3 conv to growth) each see
the concatenation of all earlier outputs, transitions (BN-ReLU-1x1 conv halving the channels,
2x2/2 average pool) between blocks and a final BN; `encode` applies ReLU and global average pooling,
as torchvision's forward does before its classifier.

Submodules are named after torchvision's `features.*` entries (conv0, norm0, denseblock1..4 holding
the layers' norm1/conv1/norm2/conv2, transition1..3 with norm/conv, norm5), so a torchvision state
dict maps by name (`torch_key`; loader in jaxmm.models.import_weights).

Train/eval mode is set by the caller: `model.train()` (batch statistics) or `model.eval()`
(running averages). Modules are built in train mode.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmm.models import pool
from jaxmm.models.conv import make_conv_fn, torch_conv

# torchvision DenseNet: nn.init.kaiming_normal_ defaults (fan_in, gain sqrt(2)), untruncated.
_KAIMING = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")
# torch BatchNorm2d momentum 0.1 == flax momentum 0.9; eps 1e-5 in both.
_BN_MOMENTUM = 0.9
_BN_EPS = 1e-5
STEMS = ("imagenet", "small")


def _conv(in_features: int, out_features: int, kernel: int, stride: int = 1, **kw) -> nnx.Conv:
  return torch_conv(in_features, out_features, kernel, stride, kernel_init=_KAIMING, **kw)


def _bn(features: int, *, dtype: Any, rngs: nnx.Rngs) -> nnx.BatchNorm:
  # use_running_average set explicitly: Flax's default has changed before.
  return nnx.BatchNorm(
    features,
    use_running_average=False,
    momentum=_BN_MOMENTUM,
    epsilon=_BN_EPS,
    dtype=dtype,
    rngs=rngs,
  )


def _avg_pool_2x2(x_BxHxWxC: jax.Array) -> jax.Array:
  """torch AvgPool2d(2, 2): an odd last row / column is dropped (floor)."""
  b, h, w, c = x_BxHxWxC.shape
  x = x_BxHxWxC[:, : h // 2 * 2, : w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class DenseLayer(nnx.Module):
  """BN-ReLU-1x1 conv (bn_size * growth) -> BN-ReLU-3x3 conv (growth): the new features."""

  def __init__(
    self,
    in_features: int,
    growth_rate: int,
    bn_size: int,
    *,
    conv_impl: str = "auto",
    dtype: Any = None,
    rngs: nnx.Rngs,
  ):
    width = bn_size * growth_rate
    self.norm1 = _bn(in_features, dtype=dtype, rngs=rngs)
    self.conv1 = _conv(in_features, width, 1, conv_impl=conv_impl, dtype=dtype, rngs=rngs)
    self.norm2 = _bn(width, dtype=dtype, rngs=rngs)
    self.conv2 = _conv(width, growth_rate, 3, conv_impl=conv_impl, dtype=dtype, rngs=rngs)

  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    y = self.conv1(nnx.relu(self.norm1(x_BxHxWxC)))
    return self.conv2(nnx.relu(self.norm2(y)))


class Transition(nnx.Module):
  """BN-ReLU-1x1 conv -> 2x2/2 average pool, between dense blocks."""

  def __init__(
    self,
    in_features: int,
    out_features: int,
    *,
    conv_impl: str = "auto",
    dtype: Any = None,
    rngs: nnx.Rngs,
  ):
    self.norm = _bn(in_features, dtype=dtype, rngs=rngs)
    self.conv = _conv(in_features, out_features, 1, conv_impl=conv_impl, dtype=dtype, rngs=rngs)

  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    return _avg_pool_2x2(self.conv(nnx.relu(self.norm(x_BxHxWxC))))


class DenseNet(nnx.Module):
  """DenseNet trunk without the classifier; an image tower with out_features channels.

  stem: 'imagenet' = 7x7/2 conv + 3x3/2 max-pool (total stride 32, torchvision's);
        'small'    = 3x3/1 conv, no pool (total stride 8), for 32-96 px images; ImageNet
                     weights do not fit its conv0.
  conv_impl: 'xla' | 'im2col' | 'auto' (jaxmm.models.conv); it does not change the parameters.
  dtype: computation dtype (e.g. jnp.bfloat16 on GPU); params stay float32.
  """

  def __init__(
    self,
    block_sizes: Sequence[int],
    *,
    growth_rate: int = 32,
    num_init_features: int = 64,
    bn_size: int = 4,
    stem: str = "imagenet",
    conv_impl: str = "auto",
    in_channels: int = 3,
    dtype: Any = None,
    rngs: nnx.Rngs,
  ):
    if stem not in STEMS:
      raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    make_conv_fn(conv_impl)  # Validates the name before building anything.
    self.stem = stem
    self.dtype = dtype
    self.conv0 = _conv(
      in_channels,
      num_init_features,
      7 if stem == "imagenet" else 3,
      2 if stem == "imagenet" else 1,
      conv_impl=conv_impl,
      dtype=dtype,
      rngs=rngs,
    )
    self.norm0 = _bn(num_init_features, dtype=dtype, rngs=rngs)
    features = num_init_features
    self.num_blocks = len(block_sizes)
    for i, num_layers in enumerate(block_sizes):
      layers = [
        DenseLayer(
          features + j * growth_rate,
          growth_rate,
          bn_size,
          conv_impl=conv_impl,
          dtype=dtype,
          rngs=rngs,
        )
        for j in range(num_layers)
      ]
      setattr(self, f"denseblock{i + 1}", nnx.List(layers))
      features += num_layers * growth_rate
      if i != len(block_sizes) - 1:
        setattr(
          self,
          f"transition{i + 1}",
          Transition(features, features // 2, conv_impl=conv_impl, dtype=dtype, rngs=rngs),
        )
        features //= 2
    self.norm5 = _bn(features, dtype=dtype, rngs=rngs)
    self.out_features = features

  def feature_map(self, images_BxHxWxC: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    """images_BxHxWxC (float, normalised) -> maps_BxhxwxD after norm5 and ReLU.

    `rngs` is unused (no dropout) and accepted for the tower interface.
    """
    del rngs
    x = jnp.asarray(images_BxHxWxC, self.dtype or jnp.float32)
    x = nnx.relu(self.norm0(self.conv0(x)))
    if self.stem == "imagenet":
      # torchvision MaxPool2d(3, 2, padding=1); CPU-friendly gradient (jaxmm.models.pool).
      x = pool.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))
    for i in range(self.num_blocks):
      for layer in getattr(self, f"denseblock{i + 1}"):
        x = jnp.concatenate([x, layer(x)], axis=-1)
      if i != self.num_blocks - 1:
        x = getattr(self, f"transition{i + 1}")(x)
    return nnx.relu(self.norm5(x))

  def encode(self, images_BxHxWxC: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    """images_BxHxWxC (float, normalised) -> feats_BxD, D = out_features (1024 for -121)."""
    maps_BxhxwxD = self.feature_map(images_BxHxWxC, rngs=rngs)
    # Pool in float32 so a bf16 trunk still returns stable features.
    return jnp.mean(maps_BxhxwxD.astype(jnp.float32), axis=(1, 2))

  def __call__(self, images_BxHxWxC: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    return self.encode(images_BxHxWxC, rngs=rngs)


DenseNet121 = functools.partial(DenseNet, block_sizes=(6, 12, 24, 16))
DenseNet169 = functools.partial(DenseNet, block_sizes=(6, 12, 32, 32))
DenseNet201 = functools.partial(DenseNet, block_sizes=(6, 12, 48, 32))
DenseNet161 = functools.partial(
  DenseNet, block_sizes=(6, 12, 36, 24), growth_rate=48, num_init_features=96
)

_REGISTRY = {
  "densenet121": DenseNet121,
  "densenet161": DenseNet161,
  "densenet169": DenseNet169,
  "densenet201": DenseNet201,
}
_BN_NAMES = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def densenet_by_name(name: str) -> functools.partial:
  """'densenet121' | 'densenet161' | 'densenet169' | 'densenet201' -> partial.

  Case and '-' are ignored ('DenseNet-121' works).
  """
  key = name.lower().replace("-", "")
  if key not in _REGISTRY:
    raise ValueError(f"unknown densenet {name!r}; known: {sorted(_REGISTRY)}")
  return _REGISTRY[key]


def torch_key(path: tuple) -> str:
  """Our variable path -> torchvision's key: ('denseblock2', 0, 'norm1', 'var') ->
  'features.denseblock2.denselayer1.norm1.running_var'."""
  parts = [str(p) for p in path]
  leaf, module = parts[-1], parts[:-1]
  if len(module) >= 2 and module[0].startswith("denseblock"):
    module[1] = f"denselayer{int(module[1]) + 1}"
  if leaf == "kernel":
    name = "weight"
  elif leaf in _BN_NAMES:
    name = _BN_NAMES[leaf]
  else:
    raise KeyError(f"no torchvision name for variable {'/'.join(parts)}")
  return ".".join(["features", *module, name])
