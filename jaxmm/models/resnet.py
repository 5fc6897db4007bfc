"""ResNet / ResNeXt image towers (torchvision layout, NNX).

Submodules are named after torchvision (conv1, bn1, layer1..layer4 holding
blocks with conv1/bn1/conv2/bn2[/conv3/bn3] and downsample.conv/.bn) so that
torchvision weights map by name (`layer1.0.downsample.0.weight` ->
`layer1/0/downsample/conv/kernel`, OIHW -> HWIO). Padding is explicit and equal
to torchvision's (k // 2 each side) rather than 'SAME', so a loaded model
computes what the torch one does. Parameter counts without the fc head equal
torchvision's (tests/models/test_resnet.py).

Train/eval mode is set by the caller: `model.train()` (batch statistics) or
`model.eval()` (running averages). Modules are built in train mode.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmm.models import batchnorm, pool
from jaxmm.models.conv import make_conv_fn, torch_conv

# torchvision: kaiming_normal_(mode='fan_out', nonlinearity='relu'), untruncated.
_KAIMING = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch BatchNorm2d momentum 0.1 == flax momentum 0.9; eps 1e-5 in both.
_BN_MOMENTUM = 0.9
_BN_EPS = 1e-5
ACTIVATIONS = ("relu", "leaky_relu")


def _activate(x: jax.Array, activation: str) -> jax.Array:
  if activation == "relu":
    return nnx.relu(x)
  # torch.nn.LeakyReLU default slope, as used by S1.
  return nnx.leaky_relu(x, negative_slope=0.01)


def _conv(in_features: int, out_features: int, kernel: int, stride: int = 1, **kw) -> nnx.Conv:
  return torch_conv(in_features, out_features, kernel, stride, kernel_init=_KAIMING, **kw)


def _bn(features: int, *, zero_scale: bool = False, dtype: Any, rngs: nnx.Rngs) -> nnx.BatchNorm:
  # use_running_average set explicitly: Flax's default has changed before. batchnorm.BatchNorm is
  # nnx.BatchNorm with a faster train-mode gradient on CPU (same parameters and statistics).
  return batchnorm.BatchNorm(
    features,
    use_running_average=False,
    momentum=_BN_MOMENTUM,
    epsilon=_BN_EPS,
    dtype=dtype,
    scale_init=nnx.initializers.zeros if zero_scale else nnx.initializers.ones,
    rngs=rngs,
  )


class Downsample(nnx.Module):
  """1x1 strided conv + BN on the shortcut (torchvision `downsample.0/.1`)."""

  def __init__(
    self,
    in_features: int,
    out_features: int,
    stride: int,
    *,
    conv_impl: str = "auto",
    dtype: Any = None,
    rngs: nnx.Rngs,
  ):
    self.conv = _conv(
      in_features, out_features, 1, stride, conv_impl=conv_impl, dtype=dtype, rngs=rngs
    )
    self.bn = _bn(out_features, dtype=dtype, rngs=rngs)

  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    return self.bn(self.conv(x_BxHxWxC))


class BasicBlock(nnx.Module):
  """Two 3x3 convs + identity/projection shortcut (ResNet-18/34)."""

  expansion = 1

  def __init__(
    self,
    in_features: int,
    planes: int,
    stride: int = 1,
    *,
    groups: int = 1,
    width_per_group: int = 64,
    activation: str = "relu",
    conv_impl: str = "auto",
    zero_init_residual: bool = False,
    dtype: Any = None,
    rngs: nnx.Rngs,
  ):
    if groups != 1 or width_per_group != 64:
      raise ValueError("BasicBlock only supports groups=1, width_per_group=64")
    self.activation = activation
    self.conv1 = _conv(in_features, planes, 3, stride, conv_impl=conv_impl, dtype=dtype, rngs=rngs)
    self.bn1 = _bn(planes, dtype=dtype, rngs=rngs)
    self.conv2 = _conv(planes, planes, 3, conv_impl=conv_impl, dtype=dtype, rngs=rngs)
    self.bn2 = _bn(planes, zero_scale=zero_init_residual, dtype=dtype, rngs=rngs)
    # Assigned once: NNX 0.12 forbids turning a static None into a Module.
    self.downsample = (
      Downsample(in_features, planes, stride, conv_impl=conv_impl, dtype=dtype, rngs=rngs)
      if stride != 1 or in_features != planes
      else None
    )

  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    y = _activate(self.bn1(self.conv1(x_BxHxWxC)), self.activation)
    y = self.bn2(self.conv2(y))
    shortcut = x_BxHxWxC if self.downsample is None else self.downsample(x_BxHxWxC)
    return _activate(y + shortcut, self.activation)


class BottleneckBlock(nnx.Module):
  """1x1 -> 3x3 (strided, grouped) -> 1x1 x4 block (ResNet-50, ResNeXt).

  Stride sits on the 3x3 conv (torchvision's "ResNet v1.5"); inner width is
  torchvision's int(planes * width_per_group / 64) * groups.
  """

  expansion = 4

  def __init__(
    self,
    in_features: int,
    planes: int,
    stride: int = 1,
    *,
    groups: int = 1,
    width_per_group: int = 64,
    activation: str = "relu",
    conv_impl: str = "auto",
    zero_init_residual: bool = False,
    dtype: Any = None,
    rngs: nnx.Rngs,
  ):
    width = int(planes * (width_per_group / 64.0)) * groups
    if width < 1:
      raise ValueError(
        f"bottleneck width is 0 for planes={planes}, groups={groups}, "
        f"width_per_group={width_per_group}: raise num_filters"
      )
    out_features = planes * self.expansion
    self.activation = activation
    self.conv1 = _conv(in_features, width, 1, conv_impl=conv_impl, dtype=dtype, rngs=rngs)
    self.bn1 = _bn(width, dtype=dtype, rngs=rngs)
    self.conv2 = _conv(
      width, width, 3, stride, groups=groups, conv_impl=conv_impl, dtype=dtype, rngs=rngs
    )
    self.bn2 = _bn(width, dtype=dtype, rngs=rngs)
    self.conv3 = _conv(width, out_features, 1, conv_impl=conv_impl, dtype=dtype, rngs=rngs)
    self.bn3 = _bn(out_features, zero_scale=zero_init_residual, dtype=dtype, rngs=rngs)
    # Assigned once: NNX 0.12 forbids turning a static None into a Module.
    self.downsample = (
      Downsample(in_features, out_features, stride, conv_impl=conv_impl, dtype=dtype, rngs=rngs)
      if stride != 1 or in_features != out_features
      else None
    )

  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    y = _activate(self.bn1(self.conv1(x_BxHxWxC)), self.activation)
    y = _activate(self.bn2(self.conv2(y)), self.activation)
    y = self.bn3(self.conv3(y))
    shortcut = x_BxHxWxC if self.downsample is None else self.downsample(x_BxHxWxC)
    return _activate(y + shortcut, self.activation)


class ResNet(nnx.Module):
  """ResNet/ResNeXt trunk without the fc head; an image tower.

  stem: 'imagenet' = 7x7/2 conv + 3x3/2 max-pool (total stride 32);
        'small'    = 3x3/1 conv, no pool (total stride 8), for 32-96 px
                     images so the last stage stays >= 4x4. It costs ~16x
                     the FLOPs of 'imagenet' at the same size (CPU train
                     step, batch 32: ~0.3 steps/s at 32 px, ~0.05 at 64).
  conv_impl: 'xla' | 'im2col' | 'auto' (see jaxmm.models.conv); it does not
        change the parameters.
  zero_init_residual: zero the last BN scale of each block (torchvision opt.).
  dtype: computation dtype (e.g. jnp.bfloat16 on GPU); params stay float32.
  """

  def __init__(
    self,
    stage_sizes: Sequence[int],
    block: type[nnx.Module],
    *,
    num_filters: int = 64,
    groups: int = 1,
    width_per_group: int = 64,
    stem: str = "imagenet",
    activation: str = "relu",
    conv_impl: str = "auto",
    in_channels: int = 3,
    zero_init_residual: bool = False,
    dtype: Any = None,
    rngs: nnx.Rngs,
  ):
    if stem not in ("imagenet", "small"):
      raise ValueError(f"stem must be 'imagenet' or 'small', got {stem!r}")
    if activation not in ACTIVATIONS:
      raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    make_conv_fn(conv_impl)  # Validates the name before building anything.
    self.stem = stem
    self.activation = activation
    self.dtype = dtype
    if stem == "imagenet":
      self.conv1 = _conv(
        in_channels, num_filters, 7, 2, conv_impl=conv_impl, dtype=dtype, rngs=rngs
      )
    else:
      self.conv1 = _conv(
        in_channels, num_filters, 3, 1, conv_impl=conv_impl, dtype=dtype, rngs=rngs
      )
    self.bn1 = _bn(num_filters, dtype=dtype, rngs=rngs)

    in_features = num_filters
    self.num_stages = len(stage_sizes)
    for i, num_blocks in enumerate(stage_sizes):
      planes = num_filters * 2**i
      blocks = []
      for j in range(num_blocks):
        blocks.append(
          block(
            in_features,
            planes,
            2 if (i > 0 and j == 0) else 1,
            groups=groups,
            width_per_group=width_per_group,
            activation=activation,
            conv_impl=conv_impl,
            zero_init_residual=zero_init_residual,
            dtype=dtype,
            rngs=rngs,
          )
        )
        in_features = planes * block.expansion
      setattr(self, f"layer{i + 1}", nnx.List(blocks))
    self.out_features = in_features

  def feature_map(self, images_BxHxWxC: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    """images_BxHxWxC (float, normalised) -> maps_BxhxwxD before pooling.

    h = H/32 ('imagenet' stem) or H/8 ('small'). `rngs` is unused (no dropout)
    and accepted for the tower interface.
    """
    del rngs
    x = jnp.asarray(images_BxHxWxC, self.dtype or jnp.float32)
    x = _activate(self.bn1(self.conv1(x)), self.activation)
    if self.stem == "imagenet":
      # torchvision MaxPool2d(3, 2, padding=1), -inf pads; strided slices on CPU, whose
      # gradient is ~10x cheaper there than XLA's reduce-window (jaxmm.models.pool).
      x = pool.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))
    for i in range(self.num_stages):
      for block in getattr(self, f"layer{i + 1}"):
        x = block(x)
    return x

  def encode(self, images_BxHxWxC: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    """images_BxHxWxC (float, normalised) -> feats_BxD, D = out_features."""
    maps_BxhxwxD = self.feature_map(images_BxHxWxC, rngs=rngs)
    # Pool in float32 so a bf16 trunk still returns stable features.
    return jnp.mean(maps_BxhxwxD.astype(jnp.float32), axis=(1, 2))

  def __call__(self, images_BxHxWxC: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    return self.encode(images_BxHxWxC, rngs=rngs)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BottleneckBlock)
ResNeXt50_32x4d = functools.partial(
  ResNet, stage_sizes=(3, 4, 6, 3), block=BottleneckBlock, groups=32, width_per_group=4
)

_REGISTRY = {
  "resnet18": ResNet18,
  "resnet34": ResNet34,
  "resnet50": ResNet50,
  "resnext50_32x4d": ResNeXt50_32x4d,
}


def resnet_by_name(name: str) -> functools.partial:
  """'resnet18' | 'resnet34' | 'resnet50' | 'resnext50_32x4d' -> partial.

  Case and '-' are ignored ('ResNet-18' works). Call the result with the
  remaining keywords, e.g. `resnet_by_name('resnet18')(stem='small', rngs=r)`.
  """
  key = name.lower().replace("-", "")
  if key not in _REGISTRY:
    raise ValueError(f"unknown resnet {name!r}; known: {sorted(_REGISTRY)}")
  return _REGISTRY[key]
