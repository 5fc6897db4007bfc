"""Image decoding, the prepared-image cache and train-time augmentation (numpy + PIL, no JAX).

Images are decoded and resized once into a fixed-size uint8 array (the cache); augmentation then
works on those small arrays, and float conversion + normalisation happen inside the jitted step,
so the host only moves uint8 bytes.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import os
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from jaxmm.data import store as store_lib

log = logging.getLogger("jaxmm")

# 2: 16-bit and float images rescaled, no longer clipped; 3: a TFDS ArrayRecord store (not .npy);
# 4: EXIF orientation applied
CACHE_VERSION = 4
# ImageNet statistics: the usual choice, and what imported ImageNet weights expect.
MEAN_RGB = (0.485, 0.456, 0.406)
STD_RGB = (0.229, 0.224, 0.225)


class ImageDataError(ValueError):
  """Images that are missing or cannot be decoded; the message lists them."""


# Default of data.max_image_pixels: above PIL's own bomb limit (~89 Mpx, which rejects an ordinary
# 10000x10000 photo), still far below what a decompression bomb claims.
MAX_IMAGE_PIXELS = 200_000_000
ORIENTATION_TAG = 0x0112  # EXIF: how the stored pixels are turned against the upright picture
# Bad files named one per line in an error; past this the counts stay exact and the rest is elided.
MAX_LISTED = 100
# Reasons a file cannot be used, as skipped.json and the error messages give them.
MISSING, EMPTY, NOT_AN_IMAGE, TRUNCATED, TOO_LARGE, UNREADABLE, UNDECODABLE = (
  "missing",
  "empty file",
  "not an image",
  "truncated",
  "too large",
  "unreadable",
  "undecodable",
)


@dataclasses.dataclass(frozen=True)
class BadImage:
  """One unusable file: its position in the path list, the short reason, PIL's words if any."""

  index: int
  path: str
  reason: str
  detail: str = ""

  def describe(self) -> str:
    return f"{self.path}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


class ImageTooLargeError(ImageDataError):
  """A file whose header claims more pixels than data.max_image_pixels allows."""

  def __init__(self, path: str, detail: str):
    super().__init__(f"{path}: too large: {detail}")
    self.detail = detail


def _to_8bit(im: Image.Image) -> Image.Image:
  """16-bit and float grayscale as 8-bit 'L': PIL's convert('RGB') would clip them to 0/255."""
  if not (im.mode.startswith("I;16") or im.mode in ("I", "F")):
    return im
  arr = np.asarray(im, np.float64)
  if im.mode == "F":
    top = 1.0 if arr.max() <= 1.0 else 255.0  # [0, 1] floats, else already 0..255
  else:
    top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
  return Image.fromarray(np.clip(np.round(arr * (255.0 / top)), 0, 255).astype(np.uint8), "L")


def _too_large_detail(pixels: int | None, size: tuple[int, int] | None, limit: int) -> str:
  dims = f"{size[0]}x{size[1]} = " if size else ""
  count = f"{pixels:,} pixels" if pixels is not None else "more pixels"
  return (
    f"{dims}{count}, above data.max_image_pixels={limit:,}; a decompression bomb "
    "is refused, but if the image is genuine raise --config.data.max_image_pixels"
  )


def _check_limit(max_image_pixels: int) -> None:
  if not max_image_pixels > 0:
    raise ValueError(
      f"data.max_image_pixels must be a positive pixel count, got "
      f"{max_image_pixels!r} (default {MAX_IMAGE_PIXELS:,})"
    )


def load_image(path: str, size: int, *, max_image_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
  """Decodes any PIL-readable file (JPEG, PNG, grayscale, CMYK, 16-bit...) to uint8 (size, size, 3).

  The content decides the format, not the name (a PNG called .jpg is fine); alpha is dropped. A file
  whose header claims more than `max_image_pixels` pixels is refused before any pixel is decoded.
  """
  _check_limit(max_image_pixels)
  # PIL refuses, on its own, images over twice its process-wide MAX_IMAGE_PIXELS while opening them:
  # raised (never lowered) to our limit, so that the limit asked for is the one that applies.
  if Image.MAX_IMAGE_PIXELS is not None and max_image_pixels > Image.MAX_IMAGE_PIXELS:
    Image.MAX_IMAGE_PIXELS = max_image_pixels
  try:
    im = Image.open(path)
  except Image.DecompressionBombError as e:  # over twice PIL's limit: refused before our own check
    pixels = re.search(r"\((\d+) pixels\)", str(e))
    raise ImageTooLargeError(
      path, _too_large_detail(int(pixels.group(1)) if pixels else None, None, max_image_pixels)
    ) from None
  with im:
    if im.width * im.height > max_image_pixels:
      raise ImageTooLargeError(
        path, _too_large_detail(im.width * im.height, im.size, max_image_pixels)
      )
    return to_array(im, size)


def to_array(im: Image.Image, size: int) -> np.ndarray:
  """A PIL image as load_image gives it: uint8 (size, size, 3), RGB, upright as its EXIF
  orientation says (a phone's photo as any viewer shows it), bilinear resize."""
  # draft() lets libjpeg decode at a reduced scale: several times faster for big-to-small resizes
  # (a JPEG opened but not yet decoded; an image already in memory is resized as it is).
  if im.format == "JPEG":
    im.draft("RGB", (size, size))
  if im.getexif().get(ORIENTATION_TAG, 1) != 1:
    im = ImageOps.exif_transpose(im)
  im = _to_8bit(im).convert("RGB")
  if im.size != (size, size):
    im = im.resize((size, size), Image.BILINEAR)
  return np.asarray(im, dtype=np.uint8)


def _classify(path: str, e: Exception) -> tuple[str, str]:
  """(reason, detail) for an exception raised while decoding `path`."""
  text = str(e)
  if isinstance(e, ImageTooLargeError):
    return TOO_LARGE, e.detail
  if isinstance(e, UnidentifiedImageError):
    try:
      with open(path, "rb") as f:
        head = f.read(16)
    except OSError:
      head = b""
    return NOT_AN_IMAGE, f"no image format recognised; the file starts with {head!r}"
  if isinstance(e, PermissionError):
    return UNREADABLE, f"permission denied: {e.strerror}"
  if "truncated" in text.lower():
    return TRUNCATED, f"{text}; a download or copy cut short?"
  cut = _lacks_end_marker(path)
  if cut:
    return TRUNCATED, (
      f"the file stops before the {cut} end marker ({text}); a download or copy cut short?"
    )
  return UNDECODABLE, f"{type(e).__name__}: {text}"


def _lacks_end_marker(path: str) -> str | None:
  """'JPEG' or 'PNG' when such a file lacks its end marker: cut short. PIL words that in several
  ways ('cannot load this image' when the cut falls inside the headers)."""
  try:
    with open(path, "rb") as f:
      head = f.read(8)
      f.seek(max(0, os.path.getsize(path) - 16))
      tail = f.read().rstrip(b"\0\r\n ")  # padding some writers leave after the end
  except OSError:
    return None
  if head.startswith(b"\xff\xd8") and not tail.endswith(b"\xff\xd9"):
    return "JPEG"
  if head.startswith(b"\x89PNG\r\n\x1a\n") and b"IEND" not in tail:
    return "PNG"
  return None


def _try_load(
  path: str, size: int, max_image_pixels: int = MAX_IMAGE_PIXELS
) -> tuple[np.ndarray | None, tuple[str, str] | None]:
  """(image, None) or (None, (reason, detail)): why a file cannot be used, never an exception."""
  if os.path.isdir(path):
    return None, (NOT_AN_IMAGE, "a folder, not a file")
  if not os.path.isfile(path):
    return None, (MISSING, "")
  try:
    if os.path.getsize(path) == 0:
      return None, (EMPTY, "0 bytes")
    return load_image(path, size, max_image_pixels=max_image_pixels), None
  except Exception as e:  # PIL raises many types for broken files: each is sorted into a reason
    return None, _classify(path, e)


def _fingerprint(paths: Sequence[str], size: int) -> str:
  """Key of a cache: the files (path, size, mtime) and the target size."""
  h = hashlib.sha1(f"v{CACHE_VERSION}:{size}:{len(paths)}".encode())
  for p in paths:
    try:
      st = os.stat(p)
      h.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    except OSError:
      h.update(f"{os.path.abspath(p)}|missing\n".encode())
  return h.hexdigest()[:20]


def default_cache_dir() -> str:
  return os.environ.get("JAXMM_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "jaxmm"))


def open_cache(cache) -> np.ndarray | store_lib.ImageStore:
  """A split's images (PreparedSplit.image_cache): a prepared store's folder, or an in-memory
  uint8 array (N, S, S, 3), e.g. images handed to jaxmm.load(...).predict."""
  return store_lib.ImageStore(cache) if isinstance(cache, (str, os.PathLike)) else cache


def decode_images(
  paths: Sequence[str],
  size: int,
  *,
  cache_dir: str | None = None,
  num_threads: int | None = None,
  desc: str = "images",
  max_image_pixels: int = MAX_IMAGE_PIXELS,
) -> tuple[store_lib.ImageStore, np.ndarray, list[BadImage]]:
  """(the files' ImageStore, ok_N bool, bad files), decoding every file once per fingerprint.

  The store is a TFDS ArrayRecord dataset in `cache_dir` (jaxmm.data.store), shared by every run
  and config with the same files and size. Never raises for a bad file: every one is checked and
  returned with its reason, so a caller can report all of them (of all its splits) at once. The
  store is kept even when some files are bad: a rerun with data.skip_bad=True then decodes nothing.
  A new one is made whenever a file's size or mtime, the file list or the size change.
  """
  _check_limit(max_image_pixels)  # here, not per file: a bad setting is not a bad image
  cache_dir = cache_dir or default_cache_dir()
  key = _fingerprint(paths, size)
  load = lambda i: _try_load(paths[i], size, max_image_pixels)
  threads = num_threads or os.cpu_count() or 1
  for attempt in range(2):
    folder = store_lib.prepare(
      cache_dir,
      key,
      size=size,
      n=len(paths),
      load=load,
      num_threads=threads,
      log=log.info if len(paths) >= 2000 else None,
    )
    images = store_lib.ImageStore(folder)
    # Bad files are looked at again (there are few): one that decodes now (a raised
    # max_image_pixels, a fixed permission: neither changes size or mtime) needs a new store, and
    # the others get their reason as this version words it.
    bad = []
    for i, _, _ in images.bad():
      img, why = _try_load(paths[i], size, max_image_pixels)
      if img is not None:
        break
      bad.append(BadImage(i, paths[i], *why))
    else:
      ok = np.ones(len(paths), bool)
      ok[[b.index for b in bad]] = False
      return images, ok, bad
    if attempt == 0:
      store_lib.remove(cache_dir, key)
  raise RuntimeError(f"the image store {folder} keeps a file as bad that now decodes")


def cached_images(
  paths: Sequence[str],
  size: int,
  *,
  cache_dir: str | None = None,
  skip_bad: bool = False,
  num_threads: int | None = None,
  desc: str = "images",
  max_image_pixels: int = MAX_IMAGE_PIXELS,
) -> tuple[np.ndarray, np.ndarray]:
  """Returns (the files' ImageStore, ok_N bool), decoding every file once per fingerprint.

  Every file is checked here, when the dataset is opened: missing or undecodable files raise
  ImageDataError listing every one with its reason, unless `skip_bad`, where they get ok=False.
  """
  arr, ok, bad = decode_images(
    paths,
    size,
    cache_dir=cache_dir,
    num_threads=num_threads,
    desc=desc,
    max_image_pixels=max_image_pixels,
  )
  if bad and not skip_bad:
    raise ImageDataError(bad_images_message([("", b) for b in bad]))
  return arr, ok


def reason_counts(reasons: Sequence[str]) -> str:
  """'2 missing, 1 truncated' (most frequent first)."""
  counts = collections.Counter(reasons)
  return ", ".join(f"{n} {reason}" for reason, n in counts.most_common())


def bad_images_message(items: Sequence[tuple[str, BadImage]], *, extra: str = "") -> str:
  """The error for unusable images: counts by reason, then one line per file (`where` prefixes
  it: a split, a CSV row), then what to do."""
  lines = [f"  {where}{b.describe()}" for where, b in items[:MAX_LISTED]]
  if len(items) > MAX_LISTED:
    lines.append(
      f"  ... and {len(items) - MAX_LISTED} more (with data.skip_bad=True, "
      "skipped.json in the workdir lists every one)"
    )
  return (
    f"{len(items)} image(s) cannot be used ({reason_counts([b.reason for _, b in items])}"
    f"{extra}):\n" + "\n".join(lines) + "\nFix or remove these files (or their rows), or set "
    "--config.data.skip_bad=True to train without them (skipped.json in the workdir then "
    "lists each one)."
  )


# Aspect-ratio range of the random-resized crop (torchvision's), on the host and on the device.
CROP_RATIO = (3 / 4, 4 / 3)


def random_resized_crop(
  img_HxWx3: np.ndarray,
  rng: np.random.Generator,
  *,
  scale: tuple[float, float] = (0.5, 1.0),
  ratio: tuple[float, float] = CROP_RATIO,
) -> np.ndarray:
  """torchvision-style RandomResizedCrop back to the input size."""
  h, w = img_HxWx3.shape[:2]
  area = h * w
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
    cw = int(round(np.sqrt(target * aspect)))
    ch = int(round(np.sqrt(target / aspect)))
    if 0 < cw <= w and 0 < ch <= h:
      y = int(rng.integers(0, h - ch + 1))
      x = int(rng.integers(0, w - cw + 1))
      break
  else:  # fall back to the whole image, as torchvision does (center crop)
    ch, cw, y, x = h, w, 0, 0
  crop = Image.fromarray(np.ascontiguousarray(img_HxWx3[y : y + ch, x : x + cw]))
  return np.asarray(crop.resize((w, h), Image.BILINEAR), dtype=np.uint8)


def color_jitter(img_HxWx3: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
  """torchvision-style ColorJitter(brightness=s, contrast=s, saturation=s) in a random order:
  each factor uniform in [1 - s, 1 + s]; contrast blends with the mean grey level, saturation
  with the per-pixel grey (ITU-R 601 luma). uint8 in, uint8 out."""
  x = img_HxWx3.astype(np.float32)
  factors = rng.uniform(max(0.0, 1 - strength), 1 + strength, size=3)
  for op in rng.permutation(3):
    f = factors[op]
    if op == 0:  # brightness
      x = x * f
    else:
      grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
      base = grey.mean() if op == 1 else grey[..., None]  # contrast / saturation
      x = base + f * (x - base)
    x = np.clip(x, 0, 255)
  return np.round(x).astype(np.uint8)


def augment(
  img_HxWx3: np.ndarray,
  rng: np.random.Generator,
  *,
  crop: bool,
  hflip: bool,
  vflip: bool,
  crop_scale: tuple[float, float] = (0.5, 1.0),
  jitter: float = 0.0,
) -> np.ndarray:
  """Train-time augmentation on a cached uint8 image; each part switchable (jitter 0 = off)."""
  if crop:
    img_HxWx3 = random_resized_crop(img_HxWx3, rng, scale=crop_scale)
  if hflip and rng.random() < 0.5:
    img_HxWx3 = img_HxWx3[:, ::-1]
  if vflip and rng.random() < 0.5:
    img_HxWx3 = img_HxWx3[::-1]
  if jitter > 0:
    img_HxWx3 = color_jitter(img_HxWx3, rng, jitter)
  return np.ascontiguousarray(img_HxWx3)
