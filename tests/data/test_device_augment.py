"""Device augmentation (jaxmm/data/device_augment.py): the host path's transforms and ranges, exact
flips, constant images stay constant, keys from (seed, step, index) only."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxmm.data import device_augment, images
from jaxmm.data.pipeline import AugmentConfig

H = 16


def _image(seed=0, size=H):
  return np.random.default_rng(seed).integers(0, 256, (size, size, 3), np.uint8)


def _run(batch_BxHxWx3, cfg, *, seed=0, step=0, index=None):
  index = np.arange(len(batch_BxHxWx3)) if index is None else np.asarray(index)
  fn = jax.jit(
    lambda x, s, i: device_augment.augment_batch(x, device_augment.example_keys(seed, s, i), cfg)
  )
  return np.asarray(fn(jnp.asarray(batch_BxHxWx3), step, jnp.asarray(index, jnp.int32)))


def test_no_transform_is_the_identity():
  batch = np.stack([_image(i) for i in range(4)])
  np.testing.assert_array_equal(_run(batch, AugmentConfig()), batch)


@pytest.mark.parametrize("axis", ["hflip", "vflip"])
def test_flips_are_exact_and_happen_about_half_the_time(axis):
  img = _image()
  flipped = img[:, ::-1] if axis == "hflip" else img[::-1]
  out = _run(np.stack([img] * 64), AugmentConfig(**{axis: True}))
  is_flipped = [np.array_equal(o, flipped) for o in out]
  assert all(f or np.array_equal(o, img) for f, o in zip(is_flipped, out))
  assert 16 < sum(is_flipped) < 48


def test_crop_of_a_constant_image_is_constant_and_full_scale_is_the_identity():
  const = np.full((8, H, H, 3), (10, 200, 77), np.uint8)
  out = _run(const, AugmentConfig(crop=True, hflip=True, vflip=True, crop_scale=(0.1, 1.0)))
  np.testing.assert_array_equal(out, const)
  # Area 1: the only box that fits is the whole image, which resamples onto itself exactly.
  batch = np.stack([_image(i) for i in range(8)])
  np.testing.assert_array_equal(_run(batch, AugmentConfig(crop=True, crop_scale=(1.0, 1.0))), batch)


def test_resample_is_pils_crop_and_bilinear_resize():
  img = _image(3, 24)
  for y, x, ch, cw in [(0, 0, 24, 24), (3, 5, 13, 17), (10, 2, 9, 20), (0, 7, 24, 11)]:
    box = tuple(jnp.float32(v) for v in (y, x, ch, cw))
    got = np.asarray(jnp.round(device_augment._resample(jnp.asarray(img), box, False, False)))
    crop = Image.fromarray(img[y : y + ch, x : x + cw])
    want = np.asarray(crop.resize((24, 24), Image.BILINEAR), np.float32)
    assert np.abs(got - want).max() <= 1, (y, x, ch, cw)


def _host(img, cfg, n):
  rng = np.random.default_rng(0)
  return np.stack(
    [
      images.augment(
        img,
        rng,
        crop=cfg.crop,
        hflip=cfg.hflip,
        vflip=cfg.vflip,
        crop_scale=cfg.crop_scale,
        jitter=cfg.color_jitter,
      )
      for _ in range(n)
    ]
  )


def test_crop_statistics_match_the_host():
  """A horizontal ramp: the spread of a crop's first row measures its width, its mean the crop's
  position; both distributions agree with the host's (same area and aspect ranges)."""
  ramp = np.broadcast_to(np.linspace(0, 255, 32).astype(np.uint8)[None, :, None], (32, 32, 3))
  cfg = AugmentConfig(crop=True, crop_scale=(0.3, 1.0))
  n = 400
  dev = _run(np.stack([ramp] * n), cfg).astype(np.float32)
  host = _host(np.ascontiguousarray(ramp), cfg, n).astype(np.float32)
  for stat in (lambda x: np.ptp(x[:, 0, :, 0], axis=1), lambda x: x[:, 0, :, 0].mean(1)):
    a, b = stat(dev), stat(host)  # tolerances ~5 standard errors of these 400 draws
    assert abs(a.mean() - b.mean()) < 0.05 * 255, (a.mean(), b.mean())
    assert abs(a.std() - b.std()) < 0.05 * 255, (a.std(), b.std())


def test_color_jitter_statistics_match_the_host():
  img = _image(5)
  cfg = AugmentConfig(color_jitter=0.4)
  n = 300
  dev = _run(np.stack([img] * n), cfg).astype(np.float32)
  host = _host(img, cfg, n).astype(np.float32)
  for stat in (lambda x: x.mean((1, 2, 3)), lambda x: x.std((1, 2, 3))):
    a, b = stat(dev), stat(host)  # tolerances ~4 standard errors of these 300 draws
    assert abs(a.mean() - b.mean()) < 8 and abs(a.std() - b.std()) < 5, (a.mean(), b.mean())
  # A grey image: contrast and saturation leave it as it is, brightness scales it by [0.6, 1.4].
  grey = _run(np.full((n, 4, 4, 3), 100, np.uint8), cfg)
  assert grey.min() >= 60 and grey.max() <= 140 and grey.std() > 10
  assert (grey == grey[:, :1, :1, :1]).all()  # still one grey level per image


def test_keys_come_from_seed_step_and_index_only():
  batch = np.stack([_image(i) for i in range(6)])
  cfg = AugmentConfig(crop=True, hflip=True, color_jitter=0.2)
  a = _run(batch, cfg, step=3, index=[10, 11, 12, 13, 14, 15])
  np.testing.assert_array_equal(_run(batch, cfg, step=3, index=[10, 11, 12, 13, 14, 15]), a)
  # The same examples in another order (another process's rows): each gets its own draw again.
  perm = [5, 0, 3, 1, 4, 2]
  b = _run(batch[perm], cfg, step=3, index=np.array([10, 11, 12, 13, 14, 15])[perm])
  np.testing.assert_array_equal(b, a[perm])
  assert not np.array_equal(_run(batch, cfg, step=4, index=[10, 11, 12, 13, 14, 15]), a)
  assert not np.array_equal(_run(batch, cfg, step=3, index=[10, 11, 12, 13, 14, 15], seed=1), a)
