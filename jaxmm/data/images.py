"""Image decoding, the prepared-image cache and train-time augmentation (numpy + PIL, no JAX).

Images are decoded and resized once into a fixed-size uint8 array (the cache); augmentation then
works on those small arrays, and float conversion + normalisation happen inside the jitted step,
so the host only moves uint8 bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

CACHE_VERSION = 2  # 2: 16-bit and float images rescaled, no longer clipped
# ImageNet statistics: the usual choice, and what imported ImageNet weights expect.
MEAN_RGB = (0.485, 0.456, 0.406)
STD_RGB = (0.229, 0.224, 0.225)


class ImageDataError(ValueError):
  """Images that are missing or cannot be decoded; the message lists them."""


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


def load_image(path: str, size: int) -> np.ndarray:
  """Decodes any PIL-readable file (JPEG, PNG, grayscale, CMYK, 16-bit...) to uint8 (size, size, 3).

  The content decides the format, not the name (a PNG called .jpg is fine); alpha is dropped.
  """
  with Image.open(path) as im:
    # draft() lets libjpeg decode at a reduced scale: several times faster for big-to-small resizes.
    if im.format == "JPEG":
      im.draft("RGB", (size, size))
    im = _to_8bit(im).convert("RGB")
    if im.size != (size, size):
      im = im.resize((size, size), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def _try_load(path: str, size: int) -> tuple[np.ndarray | None, str | None]:
  if not os.path.isfile(path):
    return None, "missing"
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      return load_image(path, size), None
  except Exception as e:  # PIL raises many types for broken files; all mean "undecodable".
    return None, f"{type(e).__name__}: {e}"


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


def cached_images(paths: Sequence[str], size: int, *, cache_dir: str | None = None,
                  skip_bad: bool = False, num_threads: int | None = None,
                  desc: str = "images") -> tuple[np.ndarray, np.ndarray]:
  """Returns (images_NxSxSx3 uint8 memmap, ok_N bool), decoding every file once per fingerprint.

  Every file is checked here, when the dataset is opened: missing or undecodable files raise
  ImageDataError listing how many and the first few, unless `skip_bad`, where they get ok=False.
  The cache rebuilds whenever a file's size or mtime, the file list or the size change.
  """
  cache_dir = cache_dir or default_cache_dir()
  os.makedirs(cache_dir, exist_ok=True)
  key = _fingerprint(paths, size)
  arr_path = os.path.join(cache_dir, f"{key}.npy")
  meta_path = os.path.join(cache_dir, f"{key}.json")
  if os.path.exists(arr_path) and os.path.exists(meta_path):
    with open(meta_path) as f:
      meta = json.load(f)
    bad = meta["bad"]
    if bad and not skip_bad:
      _raise_bad(bad)
    ok = np.ones(len(paths), bool)
    ok[[b[0] for b in bad]] = False
    return np.load(arr_path, mmap_mode="r"), ok

  # Per-process temporary names: two runs opening the same new dataset at once each build a
  # complete file, and whichever renames last wins.
  tmp = f"{arr_path}.{os.getpid()}.tmp"
  out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                  shape=(len(paths), size, size, 3))
  bad: list[tuple[int, str, str]] = []
  from tqdm.auto import tqdm  # noqa: local import keeps `import jaxmm.data` light

  def work(i: int):
    img, err = _try_load(paths[i], size)
    if img is None:
      bad.append((i, paths[i], err))
    else:
      out[i] = img

  # PIL releases the GIL while decoding, so threads scale across cores.
  with ThreadPoolExecutor(num_threads or os.cpu_count() or 1) as pool:
    list(tqdm(pool.map(work, range(len(paths)), chunksize=64), total=len(paths),
              desc=f"decoding {desc}", disable=len(paths) < 2000 or not sys.stderr.isatty(), leave=False))
  bad.sort()
  if bad and not skip_bad:
    del out
    os.remove(tmp)
    _raise_bad(bad)
  out.flush()
  del out
  os.replace(tmp, arr_path)  # atomic: a killed build never leaves a half cache
  with open(f"{meta_path}.{os.getpid()}.tmp", "w") as f:
    json.dump({"n": len(paths), "size": size, "bad": bad}, f)
  os.replace(f"{meta_path}.{os.getpid()}.tmp", meta_path)
  ok = np.ones(len(paths), bool)
  ok[[b[0] for b in bad]] = False
  return np.load(arr_path, mmap_mode="r"), ok


def _raise_bad(bad: Sequence[Sequence]) -> None:
  missing = sum(1 for b in bad if b[2] == "missing")
  first = "\n".join(f"  {b[1]}: {b[2]}" for b in bad[:5])
  raise ImageDataError(
      f"{len(bad)} image(s) cannot be used ({missing} missing, {len(bad) - missing} undecodable); "
      f"first {min(5, len(bad))}:\n{first}\nFix or remove these files/rows, or set "
      "--config.data.skip_bad=True to train without them.")


def random_resized_crop(img_HxWx3: np.ndarray, rng: np.random.Generator, *,
                        scale: tuple[float, float] = (0.5, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
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
  crop = Image.fromarray(np.ascontiguousarray(img_HxWx3[y:y + ch, x:x + cw]))
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


def augment(img_HxWx3: np.ndarray, rng: np.random.Generator, *, crop: bool, hflip: bool,
            vflip: bool, crop_scale: tuple[float, float] = (0.5, 1.0),
            jitter: float = 0.0) -> np.ndarray:
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
