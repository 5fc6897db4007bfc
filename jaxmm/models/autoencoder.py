"""S0's convolutional autoencoder; its encoder doubles as an image tower.

Encoder: per entry of `channels` a 3x3 stride-2 conv + BN + ReLU (halves the
map), then a 1x1 conv + BN + ReLU to `latent_dim` channels. Decoder: mirror
image of 4x4 stride-2 transposed convs (+ BN + ReLU) back to the input size,
the last one to `in_channels` with a bias and no BN. Transposed convs are
`nnx.Conv(input_dilation=2)`, identical to `nnx.ConvTranspose(..., 'SAME')`. Inputs of 32..128 px
whose sides
are divisible by 2**len(channels) come back at their own size.

Input range: with output='sigmoid' (default) reconstructions lie in [0, 1],
so feed images scaled to [0, 1] (uint8 / 255) and train on MSE/MAE against
them. With output='linear' feed mean/std-normalised images.

Train/eval mode is set by the caller (`model.train()` / `model.eval()`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmm.models.conv import make_conv_fn

_KAIMING = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
OUTPUTS = ("sigmoid", "linear")


def _bn(features: int, dtype: Any, rngs: nnx.Rngs) -> nnx.BatchNorm:
  return nnx.BatchNorm(
    features, use_running_average=False, momentum=0.9, epsilon=1e-5, dtype=dtype, rngs=rngs
  )


class ConvAutoencoder(nnx.Module):
  """Conv encoder (stride-2 convs) + transposed-conv decoder.

  `encode` -> feats_BxD (D = out_features = latent_dim), `reconstruct` ->
  images_BxHxWxC, `__call__` = reconstruct. The latent map is H/2**n x W/2**n
  x latent_dim, n = len(channels).
  """

  def __init__(
    self,
    channels: Sequence[int] = (32, 64, 128),
    latent_dim: int = 128,
    *,
    in_channels: int = 3,
    output: str = "sigmoid",
    conv_impl: str = "auto",
    dtype: Any = None,
    rngs: nnx.Rngs,
  ):
    if output not in OUTPUTS:
      raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    if not channels:
      raise ValueError("channels must be non-empty")
    conv_fn = make_conv_fn(conv_impl)
    self.output = output
    self.dtype = dtype
    self.num_down = len(channels)
    self.out_features = latent_dim

    enc_convs, enc_bns = [], []
    prev = in_channels
    for c in channels:
      # Padding (1, 1) = torch's padding=1; maps exactly halve for even sizes.
      enc_convs.append(
        nnx.Conv(
          prev,
          c,
          (3, 3),
          strides=(2, 2),
          padding=((1, 1), (1, 1)),
          use_bias=False,
          kernel_init=_KAIMING,
          dtype=dtype,
          conv_general_dilated=conv_fn,
          rngs=rngs,
        )
      )
      enc_bns.append(_bn(c, dtype, rngs))
      prev = c
    self.enc_convs = nnx.List(enc_convs)
    self.enc_bns = nnx.List(enc_bns)
    self.to_latent = nnx.Conv(
      prev,
      latent_dim,
      (1, 1),
      use_bias=False,
      kernel_init=_KAIMING,
      dtype=dtype,
      conv_general_dilated=conv_fn,
      rngs=rngs,
    )
    self.latent_bn = _bn(latent_dim, dtype, rngs)

    # Decoder widths mirror the encoder: latent -> c[-2] ... c[0] -> image.
    dec_out = list(reversed(channels[:-1])) + [in_channels]
    dec_convs, dec_bns = [], []
    prev = latent_dim
    for i, c in enumerate(dec_out):
      last = i == len(dec_out) - 1
      # A 4x4 stride-2 transposed conv written as a conv over the input
      # dilated by 2 with pads (2, 2): the same kernel and output as
      # nnx.ConvTranspose(4, strides=2, padding='SAME'), but it goes through
      # the conv hook, so CPU gets the sub-pixel path (XLA:CPU's transposed
      # conv backward was 2-6x slower). Kernel 4 = 2 x stride avoids the
      # checkerboard of a 3x3/2 transpose; outputs are exactly 2x the input.
      dec_convs.append(
        nnx.Conv(
          prev,
          c,
          (4, 4),
          input_dilation=(2, 2),
          padding=((2, 2), (2, 2)),
          use_bias=last,
          kernel_init=_KAIMING,
          dtype=dtype,
          conv_general_dilated=conv_fn,
          rngs=rngs,
        )
      )
      if not last:
        dec_bns.append(_bn(c, dtype, rngs))
      prev = c
    self.dec_convs = nnx.List(dec_convs)
    self.dec_bns = nnx.List(dec_bns)

  def latent_map(self, images_BxHxWxC: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    """images_BxHxWxC -> latent_BxhxwxL, h = H / 2**len(channels)."""
    del rngs  # No dropout; accepted for the tower interface.
    h, w = images_BxHxWxC.shape[1:3]
    factor = 2**self.num_down
    if h % factor or w % factor:
      raise ValueError(f"image size {h}x{w} must be divisible by {factor}")
    x = jnp.asarray(images_BxHxWxC, self.dtype or jnp.float32)
    for conv, bn in zip(self.enc_convs, self.enc_bns):
      x = nnx.relu(bn(conv(x)))
    return nnx.relu(self.latent_bn(self.to_latent(x)))

  def encode(self, images_BxHxWxC: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    """images_BxHxWxC -> feats_BxD (global average of the latent map)."""
    latent = self.latent_map(images_BxHxWxC, rngs=rngs)
    return jnp.mean(latent.astype(jnp.float32), axis=(1, 2))

  def decode(self, latent_BxhxwxL: jax.Array) -> jax.Array:
    """latent_BxhxwxL -> images_BxHxWxC (H = h * 2**len(channels))."""
    x = latent_BxhxwxL
    for i, conv in enumerate(self.dec_convs):
      x = conv(x)
      if i < len(self.dec_bns):
        x = nnx.relu(self.dec_bns[i](x))
    x = x.astype(jnp.float32)
    return nnx.sigmoid(x) if self.output == "sigmoid" else x

  def reconstruct(self, images_BxHxWxC: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    """images_BxHxWxC -> reconstruction of the same shape (float32)."""
    return self.decode(self.latent_map(images_BxHxWxC, rngs=rngs))

  def __call__(self, images_BxHxWxC: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    return self.reconstruct(images_BxHxWxC, rngs=rngs)
