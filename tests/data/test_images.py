"""Tests for image decoding, the prepared-image cache and augmentation (jaxmm/data/images.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from jaxmm.data import images as images_lib
from jaxmm.data.images import ImageDataError, augment, cached_images, load_image, random_resized_crop
from tests.conftest import COMP5329_DEV, requires

S = 16


def _pattern(h: int = 24, w: int = 20, seed: int = 0) -> np.ndarray:
  """A smooth RGB gradient plus noise (JPEG-friendly, but not constant)."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:h, 0:w]
  img = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 4 % 256], -1)
  return np.clip(img + rng.integers(0, 20, img.shape), 0, 255).astype(np.uint8)


def _write(path, mode: str = "RGB", fmt: str | None = None, seed: int = 0) -> str:
  im = Image.fromarray(_pattern(seed=seed))
  if mode != "RGB":
    im = im.convert(mode)
  im.save(path, format=fmt)
  return str(path)


def _jpegs(tmp_path, n: int, sub: str = "imgs") -> list[str]:
  d = tmp_path / sub
  d.mkdir(exist_ok=True)
  return [_write(d / f"{i}.jpg", seed=i) for i in range(n)]


# --- load_image -------------------------------------------------------------------------------


@pytest.mark.parametrize("name,mode,fmt", [
    ("a.jpg", "RGB", "JPEG"),
    ("a.png", "RGB", "PNG"),
    ("gray.jpg", "L", "JPEG"),
    ("gray.png", "L", "PNG"),
    ("cmyk.jpg", "CMYK", "JPEG"),
    ("rgba.png", "RGBA", "PNG"),
    ("png_named.jpg", "RGB", "PNG"),  # a PNG with a .jpg name: content decides, not the suffix
])
def test_load_image_formats(tmp_path, name, mode, fmt):
  path = _write(tmp_path / name, mode=mode, fmt=fmt)
  with Image.open(path) as im:
    assert im.mode == mode and im.format == fmt
  img = load_image(path, S)
  assert img.shape == (S, S, 3) and img.dtype == np.uint8
  assert img.std() > 0  # decoded content, not a blank array


def test_load_image_png_matches_pil_resize(tmp_path):
  path = _write(tmp_path / "a.png", fmt="PNG")
  want = np.asarray(Image.fromarray(_pattern()).resize((S, S), Image.BILINEAR))
  np.testing.assert_array_equal(load_image(path, S), want)


def test_load_image_same_size_is_exact(tmp_path):
  img = _pattern(S, S)
  path = tmp_path / "a.png"
  Image.fromarray(img).save(path)
  np.testing.assert_array_equal(load_image(str(path), S), img)


def test_load_image_grayscale_has_equal_channels(tmp_path):
  img = load_image(_write(tmp_path / "g.png", mode="L", fmt="PNG"), S)
  np.testing.assert_array_equal(img[..., 0], img[..., 1])
  np.testing.assert_array_equal(img[..., 0], img[..., 2])


def test_png_bytes_in_a_jpg_lose_nothing(tmp_path):
  img = _pattern(S, S)
  path = tmp_path / "really_a_png.jpg"
  Image.fromarray(img).save(path, format="PNG")
  np.testing.assert_array_equal(load_image(str(path), S), img)  # lossless: every pixel kept


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_grayscale_and_cmyk_jpegs_keep_their_content(tmp_path, mode):
  img = _pattern(S, S)
  path = tmp_path / f"{mode}.jpg"
  Image.fromarray(img).convert(mode).save(path, format="JPEG", quality=95)
  want = np.asarray(Image.fromarray(img).convert(mode).convert("RGB"), np.float64)
  got = load_image(str(path), S).astype(np.float64)
  assert np.abs(got - want).mean() < 4  # JPEG's loss only, no colour or level change


def test_16bit_grayscale_is_rescaled_not_clipped(tmp_path):
  # PIL's own convert("RGB") maps a 16-bit image to two levels (0 and 255).
  levels = (np.arange(S * S).reshape(S, S) * 257).astype(np.uint16)  # 0..65535 in 256 steps
  path = tmp_path / "deep.png"
  Image.fromarray(levels).save(path)
  with Image.open(path) as im:
    assert im.mode.startswith("I")
  img = load_image(str(path), S)
  np.testing.assert_array_equal(img[..., 0], levels // 257)
  np.testing.assert_array_equal(img[..., 0], img[..., 2])


# --- cached_images ----------------------------------------------------------------------------


def _cache_files(cache_dir) -> list[str]:
  return sorted(f for f in os.listdir(cache_dir) if f.endswith(".npy"))


def test_cache_build_then_hit(tmp_path):
  paths = _jpegs(tmp_path, 5)
  cache_dir = str(tmp_path / "cache")
  arr, ok = cached_images(paths, S, cache_dir=cache_dir, num_threads=2)
  assert arr.shape == (5, S, S, 3) and arr.dtype == np.uint8 and ok.all()
  for i, p in enumerate(paths):
    np.testing.assert_array_equal(arr[i], load_image(p, S))
  (npy,) = _cache_files(cache_dir)
  assert not [f for f in os.listdir(cache_dir) if f.endswith(".tmp")]
  mtime = os.stat(os.path.join(cache_dir, npy)).st_mtime_ns

  arr2, ok2 = cached_images(paths, S, cache_dir=cache_dir)
  assert _cache_files(cache_dir) == [npy]
  assert os.stat(os.path.join(cache_dir, npy)).st_mtime_ns == mtime  # not rewritten: a cache hit
  np.testing.assert_array_equal(np.asarray(arr2), np.asarray(arr))
  assert ok2.all()


def test_cache_hit_does_not_decode(tmp_path, monkeypatch):
  paths = _jpegs(tmp_path, 3)
  cached_images(paths, S, cache_dir=str(tmp_path / "c"))
  monkeypatch.setattr(images_lib, "_try_load", lambda *a: pytest.fail("decoded on a cache hit"))
  arr, ok = cached_images(paths, S, cache_dir=str(tmp_path / "c"))
  assert arr.shape == (3, S, S, 3) and ok.all()


def test_cache_default_dir_is_env(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXMM_CACHE", str(tmp_path / "envcache"))
  arr, _ = cached_images(_jpegs(tmp_path, 2), S)
  assert os.path.dirname(arr.filename) == str(tmp_path / "envcache")


def test_cache_key_depends_on_size_and_list(tmp_path):
  paths = _jpegs(tmp_path, 3)
  cache_dir = str(tmp_path / "cache")
  a, _ = cached_images(paths, S, cache_dir=cache_dir)
  b, _ = cached_images(paths, 8, cache_dir=cache_dir)
  c, _ = cached_images(paths[:2], S, cache_dir=cache_dir)
  assert b.shape == (3, 8, 8, 3) and c.shape == (2, S, S, 3)
  assert len({a.filename, b.filename, c.filename}) == 3
  np.testing.assert_array_equal(np.asarray(c), np.asarray(a[:2]))


def test_cache_rebuilds_when_file_changes(tmp_path):
  paths = _jpegs(tmp_path, 3)
  cache_dir = str(tmp_path / "cache")
  arr, _ = cached_images(paths, S, cache_dir=cache_dir)
  old = np.asarray(arr).copy()

  # Rewrite one file with different content (and a surely different mtime).
  _write(paths[1], seed=99)
  st = os.stat(paths[1])
  os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
  arr2, ok2 = cached_images(paths, S, cache_dir=cache_dir)
  assert ok2.all() and arr2.filename != arr.filename
  np.testing.assert_array_equal(arr2[1], load_image(paths[1], S))
  assert not np.array_equal(arr2[1], old[1])
  np.testing.assert_array_equal(arr2[0], old[0])

  # A touch alone (same bytes, new mtime) also makes a fresh cache.
  os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
  arr3, _ = cached_images(paths, S, cache_dir=cache_dir)
  assert arr3.filename not in (arr.filename, arr2.filename)
  np.testing.assert_array_equal(np.asarray(arr3), np.asarray(arr2))


def _corrupt_jpeg(path) -> str:
  _write(path, fmt="JPEG")
  data = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 3])  # header intact, scan data cut short
  return str(path)


def test_truncated_jpeg_is_undecodable(tmp_path):
  path = _corrupt_jpeg(tmp_path / "t.jpg")
  with pytest.raises(OSError):
    load_image(path, S)


def test_bad_files_raise_at_open_naming_them(tmp_path):
  paths = _jpegs(tmp_path, 4)
  missing = str(tmp_path / "imgs" / "nope.jpg")
  corrupt = _corrupt_jpeg(tmp_path / "imgs" / "broken.jpg")
  garbage = str(tmp_path / "imgs" / "text.jpg")
  open(garbage, "w").write("not an image")
  all_paths = paths[:2] + [missing, corrupt] + paths[2:] + [garbage]
  cache_dir = str(tmp_path / "cache")
  with pytest.raises(ImageDataError) as e:
    cached_images(all_paths, S, cache_dir=cache_dir)
  msg = str(e.value)
  assert "3 image(s)" in msg and "1 missing" in msg and "2 undecodable" in msg
  for p in (missing, corrupt, garbage):
    assert p in msg
  for p in paths:
    assert p not in msg
  assert "skip_bad" in msg
  assert os.listdir(cache_dir) == []  # nothing half-built left behind

  # skip_bad: the good images are decoded, the bad ones flagged.
  arr, ok = cached_images(all_paths, S, cache_dir=cache_dir, skip_bad=True)
  np.testing.assert_array_equal(ok, [True, True, False, False, True, True, False])
  for i in np.flatnonzero(ok):
    np.testing.assert_array_equal(arr[i], load_image(all_paths[i], S))

  # The cache built with skip_bad remembers the bad files: a strict open still raises, from cache.
  with pytest.raises(ImageDataError, match="3 image"):
    cached_images(all_paths, S, cache_dir=cache_dir)
  _, ok2 = cached_images(all_paths, S, cache_dir=cache_dir, skip_bad=True)
  np.testing.assert_array_equal(ok2, ok)


def test_many_bad_files_message_lists_first_five(tmp_path):
  paths = [str(tmp_path / f"missing{i}.jpg") for i in range(8)]
  with pytest.raises(ImageDataError) as e:
    cached_images(paths, S, cache_dir=str(tmp_path / "c"))
  msg = str(e.value)
  assert "8 image(s)" in msg and "8 missing" in msg and "first 5" in msg
  assert all(p in msg for p in paths[:5]) and paths[7] not in msg


@pytest.mark.realdata
@requires(COMP5329_DEV)
def test_cache_real_jpegs(tmp_path):
  paths = [os.path.join(COMP5329_DEV, "data", f"{i}.jpg") for i in range(4)]
  arr, ok = cached_images(paths, 32, cache_dir=str(tmp_path / "c"))
  assert arr.shape == (4, 32, 32, 3) and ok.all()
  assert all(arr[i].std() > 0 for i in range(4))


# --- augmentation -----------------------------------------------------------------------------


def _img(seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (S, S, 3), dtype=np.uint8)


def test_random_resized_crop_shape_and_determinism():
  img = _img()
  a = random_resized_crop(img, np.random.default_rng(3))
  b = random_resized_crop(img, np.random.default_rng(3))
  assert a.shape == img.shape and a.dtype == np.uint8
  np.testing.assert_array_equal(a, b)
  outs = [random_resized_crop(img, np.random.default_rng(s)) for s in range(6)]
  assert any(not np.array_equal(outs[0], o) for o in outs[1:])


def test_random_resized_crop_non_square():
  img = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
  out = random_resized_crop(img, np.random.default_rng(0), scale=(0.2, 0.6))
  assert out.shape == (12, 20, 3) and out.dtype == np.uint8


def test_random_resized_crop_full_scale_is_identity():
  # scale=(1, 1) with ratio 1 crops the whole image: resizing back changes nothing.
  img = _img()
  out = random_resized_crop(img, np.random.default_rng(0), scale=(1.0, 1.0), ratio=(1.0, 1.0))
  np.testing.assert_array_equal(out, img)


def test_random_resized_crop_fallback_whole_image():
  # An impossible crop (area 4x the image) falls back to the whole image.
  img = _img()
  out = random_resized_crop(img, np.random.default_rng(0), scale=(4.0, 4.0))
  np.testing.assert_array_equal(out, img)


def test_augment_off_is_identity():
  img = _img()
  out = augment(img, np.random.default_rng(0), crop=False, hflip=False, vflip=False)
  np.testing.assert_array_equal(out, img)
  assert out.flags.c_contiguous


@pytest.mark.parametrize("kind", ["hflip", "vflip"])
def test_flips_are_exact(kind):
  img = _img()
  flipped = img[:, ::-1] if kind == "hflip" else img[::-1]
  seen = set()
  for seed in range(20):
    out = augment(img, np.random.default_rng(seed), crop=False, hflip=kind == "hflip",
                  vflip=kind == "vflip")
    assert out.shape == img.shape and out.dtype == np.uint8 and out.flags.c_contiguous
    if np.array_equal(out, img):
      seen.add("same")
    else:
      np.testing.assert_array_equal(out, flipped)
      seen.add("flipped")
  assert seen == {"same", "flipped"}  # both outcomes happen over 20 seeds


def test_augment_both_flips():
  img = _img()
  allowed = [img, img[:, ::-1], img[::-1], img[::-1, ::-1]]
  for seed in range(10):
    out = augment(img, np.random.default_rng(seed), crop=False, hflip=True, vflip=True)
    assert any(np.array_equal(out, a) for a in allowed)


def test_augment_deterministic_per_seed():
  img = _img()
  kw = dict(crop=True, hflip=True, vflip=True, crop_scale=(0.3, 1.0))
  for seed in range(5):
    a = augment(img, np.random.default_rng(seed), **kw)
    b = augment(img, np.random.default_rng(seed), **kw)
    assert a.shape == img.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(augment(img, np.random.default_rng(0), **kw),
                            augment(img, np.random.default_rng(1), **kw))


def test_augment_does_not_modify_input():
  img = _img()
  keep = img.copy()
  augment(img, np.random.default_rng(0), crop=True, hflip=True, vflip=True)
  np.testing.assert_array_equal(img, keep)


def test_augment_read_only_memmap_input(tmp_path):
  # Cache rows are read-only memmap slices; augmentation must work on them.
  paths = _jpegs(tmp_path, 2)
  arr, _ = cached_images(paths, S, cache_dir=str(tmp_path / "c"))
  row = np.asarray(arr[0])
  assert not row.flags.writeable
  out = augment(row, np.random.default_rng(0), crop=True, hflip=True, vflip=True)
  assert out.shape == (S, S, 3) and out.dtype == np.uint8


def test_color_jitter_brightness_contrast_saturation_bounds():
  rng = np.random.default_rng(0)
  img = rng.integers(40, 200, size=(16, 16, 3), dtype=np.uint8)
  out = images_lib.color_jitter(img, np.random.default_rng(1), 0.4)
  assert out.dtype == np.uint8 and out.shape == img.shape and not np.array_equal(out, img)
  np.testing.assert_array_equal(out, images_lib.color_jitter(img, np.random.default_rng(1), 0.4))
  # Each of the three factors is in [0.6, 1.4]: the mean level moves by at most that much.
  for seed in range(20):
    o = images_lib.color_jitter(img, np.random.default_rng(seed), 0.4).astype(float)
    assert 0.6 ** 3 * img.mean() - 1 <= o.mean() <= 1.4 ** 3 * img.mean() + 1
  # Grey stays grey (saturation has nothing to act on), and a tiny strength changes little.
  grey = np.repeat(img[..., :1], 3, axis=2)
  g = images_lib.color_jitter(grey, np.random.default_rng(2), 0.5).astype(int)
  assert (np.abs(g[..., 0] - g[..., 1]) <= 1).all() and (np.abs(g[..., 1] - g[..., 2]) <= 1).all()
  small = images_lib.color_jitter(img, np.random.default_rng(3), 0.01).astype(int)
  assert np.abs(small - img.astype(int)).max() <= 6


def test_augment_with_jitter_differs_only_in_colour():
  img = np.random.default_rng(0).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
  out = augment(img, np.random.default_rng(0), crop=False, hflip=False, vflip=False, jitter=0.3)
  assert out.shape == img.shape and not np.array_equal(out, img)
  # Brightness / contrast / saturation are monotone per pixel in the grey level: order is kept.
  luma = lambda x: x.astype(float) @ np.array([0.299, 0.587, 0.114])
  a, b = luma(img).ravel(), luma(out).ravel()
  hi, lo = np.argmax(a), np.argmin(a)
  assert b[hi] >= b[lo]
