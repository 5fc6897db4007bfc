"""Tests for image decoding, the prepared-image cache and augmentation (jaxmm/data/images.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from jaxmm.data import images as images_lib
from jaxmm.data.images import (
  ImageDataError,
  augment,
  cached_images,
  load_image,
  random_resized_crop,
)
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


@pytest.mark.parametrize(
  "name,mode,fmt",
  [
    ("a.jpg", "RGB", "JPEG"),
    ("a.png", "RGB", "PNG"),
    ("gray.jpg", "L", "JPEG"),
    ("gray.png", "L", "PNG"),
    ("cmyk.jpg", "CMYK", "JPEG"),
    ("rgba.png", "RGBA", "PNG"),
    ("png_named.jpg", "RGB", "PNG"),  # a PNG with a .jpg name: content decides, not the suffix
  ],
)
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


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_turns_the_picture_upright(tmp_path, fmt):
  # Stored sideways (left half red, right half blue), tagged 6: shown turned 90 degrees
  # clockwise, so upright the red half is on top. A phone's photo reaches the model as shown.
  pixels = np.zeros((32, 64, 3), np.uint8)
  pixels[:, :32, 0] = pixels[:, 32:, 2] = 255
  exif = Image.Exif()
  exif[images_lib.ORIENTATION_TAG] = 6
  path = str(tmp_path / f"phone.{fmt.lower()}")
  Image.fromarray(pixels).save(path, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
  upright = load_image(path, S).astype(int)
  assert upright[: S // 2 - 2, :, 0].min() > 200 and upright[: S // 2 - 2, :, 2].max() < 60
  assert upright[S // 2 + 2 :, :, 2].min() > 200 and upright[S // 2 + 2 :, :, 0].max() < 60
  Image.fromarray(pixels).save(path, fmt)  # untagged: as stored
  stored = load_image(path, S).astype(int)
  assert stored[:, : S // 2 - 2, 0].min() > 200 and stored[:, S // 2 + 2 :, 2].min() > 200


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
  """The image stores in a cache folder (one per fingerprint)."""
  stores = os.path.join(cache_dir, "jaxmm_images")
  return sorted(f for f in os.listdir(stores) if not f.endswith(".lock"))


def test_cache_build_then_hit(tmp_path):
  paths = _jpegs(tmp_path, 5)
  cache_dir = str(tmp_path / "cache")
  arr, ok = cached_images(paths, S, cache_dir=cache_dir, num_threads=2)
  assert arr.shape == (5, S, S, 3) and arr.dtype == np.uint8 and ok.all()
  for i, p in enumerate(paths):
    np.testing.assert_array_equal(arr[i], load_image(p, S))
  (key,) = _cache_files(cache_dir)
  info = os.path.join(arr.folder, "dataset_info.json")
  assert arr.folder.startswith(os.path.join(cache_dir, "jaxmm_images", key))
  mtime = os.stat(info).st_mtime_ns

  arr2, ok2 = cached_images(paths, S, cache_dir=cache_dir)
  assert _cache_files(cache_dir) == [key]
  assert os.stat(info).st_mtime_ns == mtime  # not rewritten: a cache hit
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
  assert arr.folder.startswith(str(tmp_path / "envcache") + os.sep)


def test_cache_key_depends_on_size_and_list(tmp_path):
  paths = _jpegs(tmp_path, 3)
  cache_dir = str(tmp_path / "cache")
  a, _ = cached_images(paths, S, cache_dir=cache_dir)
  b, _ = cached_images(paths, 8, cache_dir=cache_dir)
  c, _ = cached_images(paths[:2], S, cache_dir=cache_dir)
  assert b.shape == (3, 8, 8, 3) and c.shape == (2, S, S, 3)
  assert len({a.folder, b.folder, c.folder}) == 3
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
  assert ok2.all() and arr2.folder != arr.folder
  np.testing.assert_array_equal(arr2[1], load_image(paths[1], S))
  assert not np.array_equal(arr2[1], old[1])
  np.testing.assert_array_equal(arr2[0], old[0])

  # A touch alone (same bytes, new mtime) also makes a fresh cache.
  os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
  arr3, _ = cached_images(paths, S, cache_dir=cache_dir)
  assert arr3.folder not in (arr.folder, arr2.folder)
  np.testing.assert_array_equal(np.asarray(arr3), np.asarray(arr2))


def _corrupt_jpeg(path) -> str:
  _write(path, fmt="JPEG")
  data = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(data[: len(data) // 3])  # header intact, scan data cut short
  return str(path)


def test_truncated_jpeg_is_undecodable(tmp_path):
  path = _corrupt_jpeg(tmp_path / "t.jpg")
  with pytest.raises(OSError):
    load_image(path, S)


def test_bad_files_raise_at_open_naming_them(tmp_path, monkeypatch):
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
  assert msg.startswith("3 image(s) cannot be used (")
  assert "1 missing" in msg and "1 truncated" in msg and "1 not an image" in msg
  # One line per file, each with its own reason.
  assert f"\n  {missing}: missing\n" in msg
  assert f"\n  {corrupt}: truncated (" in msg
  assert (
    f"\n  {garbage}: not an image (no image format recognised; the file starts with "
    "b'not an image')" in msg
  )
  for p in paths:
    assert p not in msg
  assert "skip_bad" in msg

  # skip_bad: the good images are decoded, the bad ones flagged. The strict open above kept its
  # (complete) cache, so only the three bad files are looked at again.
  calls = []
  real = images_lib._try_load
  monkeypatch.setattr(images_lib, "_try_load", lambda p, *a: calls.append(p) or real(p, *a))
  arr, ok = cached_images(all_paths, S, cache_dir=cache_dir, skip_bad=True)
  assert sorted(calls) == sorted([missing, corrupt, garbage])
  np.testing.assert_array_equal(ok, [True, True, False, False, True, True, False])
  for i in np.flatnonzero(ok):
    np.testing.assert_array_equal(arr[i], load_image(all_paths[i], S))
  assert not [f for f in os.listdir(cache_dir) if f.endswith(".tmp")]

  # The cache remembers the bad files: a strict open still raises, from cache.
  with pytest.raises(ImageDataError, match="3 image"):
    cached_images(all_paths, S, cache_dir=cache_dir)
  _, ok2 = cached_images(all_paths, S, cache_dir=cache_dir, skip_bad=True)
  np.testing.assert_array_equal(ok2, ok)


def test_decode_images_returns_every_bad_file_with_its_reason(tmp_path):
  d = tmp_path / "imgs"
  d.mkdir()
  good = _write(d / "good.png", fmt="PNG")
  empty = d / "empty.jpg"
  empty.write_bytes(b"")
  png = _write(d / "cut.png", fmt="PNG")
  with open(png, "r+b") as f:
    f.truncate(os.path.getsize(png) // 2)
  (d / "folder.jpg").mkdir()
  paths = [good, str(d / "gone.jpg"), str(empty), png, str(d / "folder.jpg")]
  _, ok, bad = images_lib.decode_images(paths, S, cache_dir=str(tmp_path / "c"))
  np.testing.assert_array_equal(ok, [True, False, False, False, False])
  assert [(b.index, b.path, b.reason) for b in bad] == [
    (1, paths[1], "missing"),
    (2, paths[2], "empty file"),
    (3, png, "truncated"),
    (4, paths[4], images_lib.NOT_AN_IMAGE),
  ]
  assert bad[3].detail == "a folder, not a file"


def test_every_bad_file_is_listed_up_to_the_cap(tmp_path):
  paths = [str(tmp_path / f"missing{i}.jpg") for i in range(8)]
  with pytest.raises(ImageDataError) as e:
    cached_images(paths, S, cache_dir=str(tmp_path / "c"))
  msg = str(e.value)
  assert msg.startswith("8 image(s) cannot be used (8 missing):")
  assert all(f"  {p}: missing" in msg for p in paths)

  n = images_lib.MAX_LISTED + 5
  paths = [str(tmp_path / f"gone{i}.jpg") for i in range(n)]
  with pytest.raises(ImageDataError) as e:
    cached_images(paths, S, cache_dir=str(tmp_path / "c"))
  msg = str(e.value)
  assert msg.startswith(f"{n} image(s) cannot be used ({n} missing):")
  assert sum(line.endswith(": missing") for line in msg.splitlines()) == images_lib.MAX_LISTED
  assert "... and 5 more" in msg and "skipped.json" in msg


# --- data.max_image_pixels ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory) -> str:
  """A genuine 10000x10000 photo-sized JPEG (1e8 pixels): flat grey, so ~1 MB on disk and quick
  to decode at 1/8 scale."""
  path = tmp_path_factory.mktemp("big") / "big.jpg"
  Image.new("L", (10_000, 10_000), 128).save(path, quality=90)
  return str(path)


def _png_bomb(path, side: int) -> str:
  """A valid 1-bit PNG of side x side black pixels: a few KB that would decode to side^2 pixels."""
  import struct
  import zlib

  def chunk(kind: bytes, data: bytes) -> bytes:
    return (
      struct.pack(">I", len(data))
      + kind
      + data
      + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )

  z = zlib.compressobj(9)
  row = bytes(1 + (side + 7) // 8)  # filter byte + packed bits
  idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
  header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
  with open(path, "wb") as f:
    f.write(
      b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
  return str(path)


def test_big_genuine_jpeg_passes_by_default(big_jpeg, tmp_path):
  assert images_lib.MAX_IMAGE_PIXELS == 200_000_000
  img = load_image(big_jpeg, S)
  assert img.shape == (S, S, 3) and (np.abs(img.astype(int) - 128) <= 1).all()
  arr, ok = cached_images([big_jpeg], S, cache_dir=str(tmp_path / "c"))
  assert ok.all() and (np.abs(arr[0].astype(int) - 128) <= 1).all()


def test_max_image_pixels_works_both_ways(big_jpeg, tmp_path):
  cache_dir = str(tmp_path / "c")
  with pytest.raises(ImageDataError) as e:
    cached_images([big_jpeg], S, cache_dir=cache_dir, max_image_pixels=50_000_000)
  msg = str(e.value)
  assert (
    f"{big_jpeg}: too large (10000x10000 = 100,000,000 pixels, above "
    "data.max_image_pixels=50,000,000" in msg
  )
  assert "raise --config.data.max_image_pixels" in msg
  with pytest.raises(images_lib.ImageTooLargeError, match=rf"{big_jpeg}: too large"):
    load_image(big_jpeg, S, max_image_pixels=50_000_000)
  # Refused under the low limit, kept in the cache as bad; under the default it decodes from the
  # same (unchanged) file, so the cache is rebuilt rather than trusted.
  _, ok = cached_images(
    [big_jpeg], S, cache_dir=cache_dir, skip_bad=True, max_image_pixels=50_000_000
  )
  assert not ok.any()
  arr, ok = cached_images([big_jpeg], S, cache_dir=cache_dir, skip_bad=True)
  assert ok.all() and (np.abs(arr[0].astype(int) - 128) <= 1).all()
  with pytest.raises(ValueError, match="data.max_image_pixels must be a positive"):
    cached_images([big_jpeg], S, cache_dir=cache_dir, max_image_pixels=0)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [15_000, 30_000])  # over the limit, and over twice PIL's own
def test_decompression_bomb_is_refused_naming_file_and_key(tmp_path, side):
  bomb = _png_bomb(tmp_path / "bomb.png", side)
  assert os.path.getsize(bomb) < 1_000_000
  _, ok, bad = images_lib.decode_images([bomb], S, cache_dir=str(tmp_path / "c"))
  assert not ok.any()
  (b,) = bad
  assert b.reason == "too large" and "data.max_image_pixels=200,000,000" in b.detail
  assert f"{side * side:,} pixels" in b.detail
  with pytest.raises(
    ImageDataError, match=rf"{bomb}: too large \(.*--config.data.max_image_pixels"
  ):
    cached_images([bomb], S, cache_dir=str(tmp_path / "c"))


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
    out = augment(
      img, np.random.default_rng(seed), crop=False, hflip=kind == "hflip", vflip=kind == "vflip"
    )
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
  assert not np.array_equal(
    augment(img, np.random.default_rng(0), **kw), augment(img, np.random.default_rng(1), **kw)
  )


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
    assert 0.6**3 * img.mean() - 1 <= o.mean() <= 1.4**3 * img.mean() + 1
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
