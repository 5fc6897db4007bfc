"""EfficientNet (B0-B7) image towers (torchvision layout, NNX).

Same architecture as torchvision's `efficientnet_b*`: a 3x3/2 conv stem, seven stages of MBConv
blocks (1x1 expand, depthwise kxk, squeeze-excitation, 1x1 project; SiLU; a residual with
stochastic depth when shape allows) scaled by width / depth multipliers, a 1x1 conv to 4x the
last stage's width (1280 for B0/B1), and global average pooling; torchvision's classifier (dropout
+ linear) is left to the head.

Modules mirror torchvision's `features` list (`features[0]` stem, `features[1..7]` stages of
blocks each holding `block[...]`, `features[8]` the last conv) and its names (`conv`/`bn` are
Conv2dNormActivation's `0`/`1`, squeeze-excitation's `fc1`/`fc2`), so a torchvision state dict
maps by name (`torch_key`; loader in jaxmm.models.import_weights). Padding is torchvision's
(k // 2 each side), not TensorFlow's 'SAME'.

Train/eval mode is set by the caller: `model.train()` (batch statistics, stochastic depth, which
then needs `rngs` with a 'dropout' stream) or `model.eval()` (running averages, no drops).
Modules are built in train mode.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmm.models.conv import make_conv_fn, torch_conv

# torchvision EfficientNet: kaiming_normal_(mode='fan_out'), gain sqrt(2), untruncated.
_KAIMING = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
# torchvision B0-B4 use plain BatchNorm2d (eps 1e-5, momentum 0.1 == flax 0.9); B5-B7 use
# eps 1e-3, momentum 0.01 (flax 0.99).
_BN = {"default": (0.9, 1e-5), "b5": (0.99, 1e-3)}
STEMS = ("imagenet", "small")

# B0 stages (torchvision's table): expand ratio, kernel, stride, in, out, layers.
_B0_STAGES = (
  (1, 3, 1, 32, 16, 1),
  (6, 3, 2, 16, 24, 2),
  (6, 5, 2, 24, 40, 2),
  (6, 3, 2, 40, 80, 3),
  (6, 5, 1, 80, 112, 3),
  (6, 5, 2, 112, 192, 4),
  (6, 3, 1, 192, 320, 1),
)


def make_divisible(value: float, divisor: int = 8) -> int:
  """torchvision's _make_divisible: nearest multiple of divisor, never below 90% of value."""
  new = max(divisor, int(value + divisor / 2) // divisor * divisor)
  return new + divisor if new < 0.9 * value else new


class ConvBNAct(nnx.Module):
  """Conv (no bias) -> BN -> optional SiLU: torchvision's Conv2dNormActivation."""

  def __init__(
    self,
    in_features: int,
    out_features: int,
    kernel: int,
    stride: int = 1,
    *,
    groups: int = 1,
    activation: bool = True,
    bn: tuple[float, float],
    conv_impl: str = "auto",
    dtype: Any = None,
    rngs: nnx.Rngs,
  ):
    self.activation = activation
    self.conv = torch_conv(
      in_features,
      out_features,
      kernel,
      stride,
      groups=groups,
      kernel_init=_KAIMING,
      conv_impl=conv_impl,
      dtype=dtype,
      rngs=rngs,
    )
    # use_running_average set explicitly: Flax's default has changed before.
    self.bn = nnx.BatchNorm(
      out_features, use_running_average=False, momentum=bn[0], epsilon=bn[1], dtype=dtype, rngs=rngs
    )

  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    y = self.bn(self.conv(x_BxHxWxC))
    return nnx.silu(y) if self.activation else y


class SqueezeExcitation(nnx.Module):
  """x * sigmoid(fc2(silu(fc1(mean_hw(x))))); fc1/fc2 are 1x1 convs with bias, as in torch."""

  def __init__(self, features: int, squeeze: int, *, dtype: Any = None, rngs: nnx.Rngs):
    def fc(a, b):
      return nnx.Conv(
        a,
        b,
        (1, 1),
        kernel_init=_KAIMING,
        dtype=dtype,
        conv_general_dilated=make_conv_fn("im2col"),
        rngs=rngs,
      )

    self.fc1 = fc(features, squeeze)
    self.fc2 = fc(squeeze, features)

  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    s_Bx1x1xC = jnp.mean(x_BxHxWxC, axis=(1, 2), keepdims=True)
    s_Bx1x1xC = self.fc2(nnx.silu(self.fc1(s_Bx1x1xC)))
    return x_BxHxWxC * nnx.sigmoid(s_Bx1x1xC)


class MBConv(nnx.Module):
  """Inverted residual: [1x1 expand] -> depthwise kxk/stride -> SE -> 1x1 project [+ input].

  The residual (stride 1, same width) drops whole examples with probability
  `stochastic_depth` in train mode and rescales the kept ones (torchvision's "row" mode).
  """

  def __init__(
    self,
    in_features: int,
    out_features: int,
    *,
    expand_ratio: int,
    kernel: int,
    stride: int,
    stochastic_depth: float,
    bn: tuple[float, float],
    conv_impl: str = "auto",
    dtype: Any = None,
    rngs: nnx.Rngs,
  ):
    hidden = make_divisible(in_features * expand_ratio)
    kw = dict(bn=bn, conv_impl=conv_impl, dtype=dtype, rngs=rngs)
    layers = []
    if hidden != in_features:
      layers.append(ConvBNAct(in_features, hidden, 1, **kw))
    layers.append(ConvBNAct(hidden, hidden, kernel, stride, groups=hidden, **kw))
    layers.append(SqueezeExcitation(hidden, max(1, in_features // 4), dtype=dtype, rngs=rngs))
    layers.append(ConvBNAct(hidden, out_features, 1, activation=False, **kw))
    self.block = nnx.List(layers)
    self.residual = stride == 1 and in_features == out_features
    # One mask value per example, broadcast over H, W, C.
    self.stochastic_depth = nnx.Dropout(stochastic_depth, broadcast_dims=(1, 2, 3))

  def __call__(self, x_BxHxWxC: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    y = x_BxHxWxC
    for layer in self.block:
      y = layer(y)
    if self.residual:
      y = self.stochastic_depth(y, rngs=rngs) + x_BxHxWxC
    return y


class EfficientNet(nnx.Module):
  """EfficientNet trunk without the classifier; an image tower with out_features channels.

  width / depth: torchvision's width_mult / depth_mult (B1: 1.0 / 1.1).
  stochastic_depth: the drop probability of the last block (torchvision's stochastic_depth_prob,
        0.2); block i of n drops with stochastic_depth * i / n.
  norm: 'default' (B0-B4: BN eps 1e-5, momentum 0.1) or 'b5' (B5-B7: eps 1e-3, momentum 0.01).
  stem: 'imagenet' = 3x3/2 conv (total stride 32); 'small' = the same conv at stride 1 (total
        stride 16) for small images; ImageNet weights fit both.
  conv_impl: 'xla' | 'im2col' | 'auto' (jaxmm.models.conv); it does not change the parameters.
  dtype: computation dtype (e.g. jnp.bfloat16 on GPU); params stay float32.
  """

  def __init__(
    self,
    *,
    width: float = 1.0,
    depth: float = 1.0,
    stochastic_depth: float = 0.2,
    norm: str = "default",
    stem: str = "imagenet",
    conv_impl: str = "auto",
    in_channels: int = 3,
    dtype: Any = None,
    rngs: nnx.Rngs,
  ):
    if stem not in STEMS:
      raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    if norm not in _BN:
      raise ValueError(f"norm must be one of {sorted(_BN)}, got {norm!r}")
    if not 0.0 <= stochastic_depth < 1.0:
      raise ValueError(f"stochastic_depth must be in [0, 1), got {stochastic_depth}")
    make_conv_fn(conv_impl)  # Validates the name before building anything.
    self.dtype = dtype
    kw = dict(bn=_BN[norm], conv_impl=conv_impl, dtype=dtype, rngs=rngs)
    stages = [
      (e, k, s, make_divisible(i * width), make_divisible(o * width), int(math.ceil(n * depth)))
      for e, k, s, i, o, n in _B0_STAGES
    ]
    features = [ConvBNAct(in_channels, stages[0][3], 3, 2 if stem == "imagenet" else 1, **kw)]
    total, block_id = sum(stage[-1] for stage in stages), 0
    for expand, kernel, stride, in_f, out_f, layers in stages:
      blocks = []
      for j in range(layers):
        blocks.append(
          MBConv(
            in_f if j == 0 else out_f,
            out_f,
            expand_ratio=expand,
            kernel=kernel,
            stride=stride if j == 0 else 1,
            stochastic_depth=stochastic_depth * block_id / total,
            **kw,
          )
        )
        block_id += 1
      features.append(nnx.List(blocks))
    self.out_features = 4 * stages[-1][4]
    features.append(ConvBNAct(stages[-1][4], self.out_features, 1, **kw))
    self.features = nnx.List(features)

  def feature_map(self, images_BxHxWxC: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    """images_BxHxWxC (float, normalised) -> maps_BxhxwxD (after the last conv's SiLU).

    rngs: needs a 'dropout' stream in train mode (stochastic depth); unused in eval mode.
    """
    x = jnp.asarray(images_BxHxWxC, self.dtype or jnp.float32)
    x = self.features[0](x)
    for stage in self.features[1:-1]:
      for block in stage:
        x = block(x, rngs=rngs)
    return self.features[-1](x)

  def encode(self, images_BxHxWxC: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    """images_BxHxWxC (float, normalised) -> feats_BxD, D = out_features (1280 for B0/B1)."""
    maps_BxhxwxD = self.feature_map(images_BxHxWxC, rngs=rngs)
    # Pool in float32 so a bf16 trunk still returns stable features.
    return jnp.mean(maps_BxhxwxD.astype(jnp.float32), axis=(1, 2))

  def __call__(self, images_BxHxWxC: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    return self.encode(images_BxHxWxC, rngs=rngs)


# torchvision's (width_mult, depth_mult) per variant.
EfficientNetB0 = functools.partial(EfficientNet, width=1.0, depth=1.0)
EfficientNetB1 = functools.partial(EfficientNet, width=1.0, depth=1.1)
EfficientNetB2 = functools.partial(EfficientNet, width=1.1, depth=1.2)
EfficientNetB3 = functools.partial(EfficientNet, width=1.2, depth=1.4)
EfficientNetB4 = functools.partial(EfficientNet, width=1.4, depth=1.8)

_REGISTRY = {
  "efficientnet_b0": EfficientNetB0,
  "efficientnet_b1": EfficientNetB1,
  "efficientnet_b2": EfficientNetB2,
  "efficientnet_b3": EfficientNetB3,
  "efficientnet_b4": EfficientNetB4,
}
_NAMES = {
  "kernel": "weight",
  "scale": "weight",
  "bias": "bias",
  "mean": "running_mean",
  "var": "running_var",
}


def efficientnet_by_name(name: str) -> functools.partial:
  """'efficientnet_b0' .. 'efficientnet_b4' -> partial (case and '-' -> '_' ignored)."""
  key = name.lower().replace("-", "_")
  if key not in _REGISTRY:
    raise ValueError(f"unknown efficientnet {name!r}; known: {sorted(_REGISTRY)}")
  return _REGISTRY[key]


def torch_key(path: tuple) -> str:
  """Our variable path -> torchvision's key: ('features', 2, 0, 'block', 1, 'bn', 'var') ->
  'features.2.0.block.1.1.running_var'; squeeze-excitation keeps fc1/fc2."""
  parts = [str(p) for p in path]
  if parts[-1] not in _NAMES:
    raise KeyError(f"no torchvision name for variable {'/'.join(parts)}")
  module = [{"conv": "0", "bn": "1"}.get(p, p) for p in parts[:-1]]
  return ".".join([*module, _NAMES[parts[-1]]])
