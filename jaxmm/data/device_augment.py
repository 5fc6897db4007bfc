"""Train-time image augmentation in JAX, run inside the jitted train step on the uint8 batch.

The same transforms as the host path (jaxmm.data.images.augment): torchvision-style random-resized
crop back to the input size (the same area and aspect-ratio ranges, ten tries, then the whole
image), horizontal / vertical flips with probability 1/2, and colour jitter (brightness, contrast,
saturation factors uniform in [1 - s, 1 + s], applied in a random order, clipped after each).
Crop and flips are one bilinear gather (PIL's half-pixel-centred bilinear, edges clamped to the
crop), so the host only moves uint8 rows from the prepared cache.

Randomness: each example's key is `fold_in(fold_in(fold_in(key(seed), STREAM), step), index)`,
with `step` the train step (the optimizer's step count, checkpointed with the state) and `index`
the example's position in its split: batch k of a run is a pure function of the seed, a resumed
run draws what an uninterrupted one would, and the rows a process holds under multi-host sharding
get the augmentation they would get in a one-process run.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxmm.data import images

# Separates the augmentation's random stream from dropout's (both start from the run's seed).
STREAM = 0x617567  # 'aug'
_TRIES = 10  # as torchvision's RandomResizedCrop (and jaxmm.data.images.random_resized_crop)
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as the host's colour_jitter


def example_keys(seed: int, step: jax.Array, index_B: jax.Array) -> jax.Array:
  """(B,) keys, one per example: a function of (seed, step, example index) only."""
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), STREAM), step)
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(index_B.astype(jnp.uint32))


def _crop_box(key: jax.Array, h: int, w: int, scale, ratio) -> tuple[jax.Array, ...]:
  """(y, x, ch, cw) as float32 whole numbers: the host's sampling, its ten tries drawn at once."""
  k_area, k_aspect, k_y, k_x = jax.random.split(key, 4)
  target = h * w * jax.random.uniform(k_area, (_TRIES,), minval=scale[0], maxval=scale[1])
  log_aspect = jax.random.uniform(
    k_aspect, (_TRIES,), minval=math.log(ratio[0]), maxval=math.log(ratio[1])
  )
  aspect = jnp.exp(log_aspect)
  cw = jnp.round(jnp.sqrt(target * aspect))
  ch = jnp.round(jnp.sqrt(target / aspect))
  fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
  first = jnp.argmax(fits)  # the first try that fits; none fits -> the whole image
  found = fits[first]
  ch = jnp.where(found, ch[first], h)
  cw = jnp.where(found, cw[first], w)
  y = jnp.floor(jax.random.uniform(k_y) * (h - ch + 1))
  x = jnp.floor(jax.random.uniform(k_x) * (w - cw + 1))
  return y, x, ch, cw


def _taps(start, length, size: int, flip) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Bilinear taps along one axis: output pixel i reads source (lo, hi) with weight frac on hi.

  Source coordinate of output i: start + (i + 0.5) * length / size - 0.5, clamped to the crop
  [start, start + length - 1] (PIL's bilinear resize of the cropped image). A flip reverses i.
  """
  i = jnp.arange(size, dtype=jnp.float32)
  i = jnp.where(flip, size - 1 - i, i)
  last = start + length - 1
  src = jnp.clip(start + (i + 0.5) * (length / size) - 0.5, start, last)
  lo = jnp.floor(src)
  frac = src - lo
  hi = jnp.minimum(lo + 1, last)
  return lo.astype(jnp.int32), hi.astype(jnp.int32), frac


def _resample(img_HxWx3: jax.Array, box, flip_h, flip_v) -> jax.Array:
  """The crop `box` resized back to HxW (float32), flipped as asked: two separable gathers."""
  h, w = img_HxWx3.shape[:2]
  y, x, ch, cw = box
  r_lo, r_hi, r_frac = _taps(y, ch, h, flip_v)
  c_lo, c_hi, c_frac = _taps(x, cw, w, flip_h)
  img = img_HxWx3.astype(jnp.float32)
  rows = img[r_lo] + r_frac[:, None, None] * (img[r_hi] - img[r_lo])
  return rows[:, c_lo] + c_frac[None, :, None] * (rows[:, c_hi] - rows[:, c_lo])


def _color_jitter(x_HxWx3: jax.Array, key: jax.Array, strength: float) -> jax.Array:
  """Brightness, contrast and saturation in a random order, each clipped to [0, 255]. Each is
  base + f * (x - base) with base 0 (brightness), the mean grey level (contrast) or the pixel's
  grey (saturation)."""
  k_factors, k_order = jax.random.split(key)
  factors = jax.random.uniform(
    k_factors, (3,), minval=max(0.0, 1.0 - strength), maxval=1.0 + strength
  )
  order = jax.random.permutation(k_order, 3)
  h, w = x_HxWx3.shape[:2]
  # The mean grey level as one dot over the flattened image, and the grey of each pixel as a
  # weighted sum (not `x @ luma`): both several times faster on XLA:CPU than the plain forms.
  luma_tiled = jnp.tile(jnp.asarray(_LUMA, jnp.float32), h * w)
  for op in (order[0], order[1], order[2]):
    mean_grey = jnp.dot(x_HxWx3.reshape(-1), luma_tiled) / (h * w)
    grey_HxWx1 = sum(x_HxWx3[..., c : c + 1] * _LUMA[c] for c in range(3))
    base = jnp.where(op == 1, mean_grey, 0.0) + (op == 2).astype(jnp.float32) * grey_HxWx1
    x_HxWx3 = jnp.clip(base + factors[op] * (x_HxWx3 - base), 0.0, 255.0)
  return x_HxWx3


def augment_image(img_HxWx3: jax.Array, key: jax.Array, cfg) -> jax.Array:
  """One uint8 image -> its augmentation (uint8), as `cfg` (pipeline.AugmentConfig) asks."""
  h, w = img_HxWx3.shape[:2]
  k_crop, k_h, k_v, k_jitter = jax.random.split(key, 4)
  if cfg.crop:
    box = _crop_box(k_crop, h, w, cfg.crop_scale, images.CROP_RATIO)
  else:
    box = (jnp.float32(0), jnp.float32(0), jnp.float32(h), jnp.float32(w))
  flip_h = jax.random.bernoulli(k_h) if cfg.hflip else jnp.bool_(False)
  flip_v = jax.random.bernoulli(k_v) if cfg.vflip else jnp.bool_(False)
  if cfg.crop:
    x = jnp.round(_resample(img_HxWx3, box, flip_h, flip_v))  # uint8 between steps, as the host
  else:  # flips only: exact, no resampling
    x = jnp.where(flip_h, img_HxWx3[:, ::-1], img_HxWx3)
    x = jnp.where(flip_v, x[::-1], x).astype(jnp.float32)
  if cfg.color_jitter > 0:
    x = jnp.round(_color_jitter(x, k_jitter, cfg.color_jitter))
  return x.astype(jnp.uint8)


def augment_batch(images_BxHxWx3: jax.Array, keys_B: jax.Array, cfg) -> jax.Array:
  """uint8 (B, H, W, 3) -> augmented uint8 (B, H, W, 3), each example with its own key."""
  return jax.vmap(lambda img, key: augment_image(img, key, cfg))(images_BxHxWx3, keys_B)
