"""The prepared-image store: a split's images decoded once, as a TFDS ArrayRecord dataset.

Each distinct (file list, image size) becomes one TFDS dataset, `jaxmm_images/<fingerprint>/1.0.0`
under the cache folder, written with `file_format='array_record'` and read back through TFDS's
ArrayRecord data source (random access, no TensorFlow). The images are stored as raw uint8 bytes
(TFDS's BYTES encoding, which here writes and reads several times faster than its default), in
file order (shuffling disabled: record i is file i). Files that cannot be used get an all-zero
image and are listed, with their reasons, in the dataset's metadata.

The images are written as consecutive splits `part0`, `part1`, ... of at most PART_BYTES each:
TFDS's writer holds a split in memory up to 1 GB and past that spills it to temporary files
through TensorFlow, which jaxmm does not install. Parts keep every split in memory and the
writer's memory bounded, whatever the dataset's size.

Runs and configs with the same files and size share one store; several processes opening a new one
at once build it once (a file lock), so hosts on shared storage all read the same prepared data.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

NAME = "jaxmm_images"
VERSION = "1.1.0"
PART_BYTES = 256 << 20  # per split: well under TFDS's 1 GB in-memory limit
# Decode this many files ahead of the writer: enough to keep every thread busy, bounded memory.
_AHEAD = 256


def _builder_class():
  """The TFDS builder (defined on first use: importing TFDS costs ~1 s, and --help stays fast)."""
  global _BUILDER
  if _BUILDER is None:
    import tensorflow_datasets as tfds

    class JaxmmImages(tfds.core.GeneratorBasedBuilder):
      """Decoded uint8 images at one size; one builder config per (file list, size)."""

      VERSION = tfds.core.Version(VERSION)
      code_path = None  # no checksums file or metadata folder beside the code: nothing to download

      def __init__(
        self,
        *,
        size: int,
        load: Callable[[int], tuple] | None = None,
        n: int = 0,
        num_threads: int = 1,
        **kwargs,
      ):
        self._size, self._load, self._n, self._threads = size, load, n, num_threads
        self.bad: list[tuple[int, str, str]] = []
        super().__init__(**kwargs)

      # TFDS prints these on stdout; jaxmm logs its own line (prepare's `log`) instead.
      def _log_download_bytes(self):
        pass

      def _log_download_done(self):
        pass

      def _info(self):
        image = tfds.features.Tensor(
          shape=(self._size, self._size, 3), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES
        )
        return tfds.core.DatasetInfo(
          builder=self,
          features=tfds.features.FeaturesDict({"image": image}),
          disable_shuffling=True,
          metadata=tfds.core.MetadataDict(),
        )

      def _split_generators(self, dl_manager):
        bounds = part_bounds(self._n, self._size)
        return {f"part{k}": self._generate_examples(a, b) for k, (a, b) in enumerate(bounds)}

      def _generate_examples(self, start: int, stop: int):
        blank = np.zeros((self._size, self._size, 3), np.uint8)
        load = lambda i: self._load(start + i)
        for i, (img, why) in enumerate(_decoded(load, stop - start, self._threads), start):
          if img is None:
            self.bad.append((i, *why))
          yield i, {"image": blank if img is None else img}
        self.info.metadata["bad"] = [list(b) for b in self.bad]

    _BUILDER = JaxmmImages
  return _BUILDER


_BUILDER = None


def part_bounds(n: int, size: int, part_bytes: int | None = None) -> list[tuple[int, int]]:
  """[start, stop) of each split: consecutive, at most `part_bytes` (PART_BYTES) of images each,
  at least one split (an empty store has one empty part)."""
  per_part = max(1, (part_bytes or PART_BYTES) // (size * size * 3))
  return [(a, min(a + per_part, n)) for a in range(0, n, per_part)] or [(0, 0)]


def _decoded(load: Callable[[int], tuple], n: int, threads: int) -> Iterator[tuple]:
  """load(0), load(1), ... in order, decoded by `threads` threads a bounded window ahead (PIL
  releases the GIL while it decodes)."""
  with ThreadPoolExecutor(max(1, threads)) as pool:
    pending = [pool.submit(load, i) for i in range(min(_AHEAD, n))]
    for i in range(n):
      result = pending[i].result()
      pending[i] = None  # frees the image once written
      if i + _AHEAD < n:
        pending.append(pool.submit(load, i + _AHEAD))
      yield result


@contextlib.contextmanager
def _locked(path: str):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def store_dir(cache_dir: str, key: str) -> str:
  """The folder of the prepared dataset for fingerprint `key`."""
  return os.path.join(cache_dir, NAME, key, VERSION)


def prepare(
  cache_dir: str,
  key: str,
  *,
  size: int,
  n: int,
  load: Callable[[int], tuple],
  num_threads: int = 1,
  log: Callable[[str], None] | None = None,
) -> str:
  """Writes the store for `key` unless it exists; returns its folder.

  load(i) -> (uint8 image SxSx3, None) or (None, (reason, detail)): never raises for a bad file.
  """
  import tensorflow_datasets as tfds

  folder = store_dir(cache_dir, key)
  with _locked(os.path.join(cache_dir, NAME, f"{key}.lock")):
    if not os.path.exists(os.path.join(folder, "dataset_info.json")):
      if log:
        log(f"preparing {n} images at {size} px into {folder}")
      from tensorflow_datasets.core.utils import tqdm_utils

      # TFDS warns "Using custom data configuration" for every store: one per fingerprint is the
      # design here. Its progress bars show only where jaxmm would show one.
      absl_log, level, shown = logging.getLogger("absl"), logging.getLogger("absl").level, None
      absl_log.setLevel(logging.ERROR)
      try:
        with _no_leftover_tempdirs():
          builder = _builder_class()(
            size=size,
            load=load,
            n=n,
            num_threads=num_threads,
            data_dir=cache_dir,
            config=tfds.core.BuilderConfig(name=key),
            file_format="array_record",
          )
        shown = tqdm_utils._active
        tfds.display_progress_bar(n >= 2000 and sys.stderr.isatty())
        builder.download_and_prepare()
      finally:
        absl_log.setLevel(level)
        if shown is not None:
          tfds.display_progress_bar(shown)
  return folder


@contextlib.contextmanager
def _no_leftover_tempdirs() -> Iterator[None]:
  """Removes the empty `tmp*tfds` folder TFDS makes (and leaves) when it builds a new dataset's
  info: it would fetch that info from Google Cloud Storage into it, which is off (GCS access is
  disabled by default), so the folder stays empty; one per store would pile up in the temp
  folder. Only empty folders that appeared during the block are removed."""
  import glob
  import tempfile

  pattern = os.path.join(tempfile.gettempdir(), "tmp*tfds")
  before = set(glob.glob(pattern))
  try:
    yield
  finally:
    for path in set(glob.glob(pattern)) - before:
      with contextlib.suppress(OSError):  # not empty, or gone: not ours to remove
        os.rmdir(path)


def remove(cache_dir: str, key: str) -> None:
  """Deletes the store of `key` (e.g. to rebuild it), under its lock."""
  import shutil

  with _locked(os.path.join(cache_dir, NAME, f"{key}.lock")):
    shutil.rmtree(os.path.join(cache_dir, NAME, key), ignore_errors=True)


class ImageStore:
  """Random access to a prepared store's images; pickles as its folder (grain workers reopen it)."""

  dtype = np.dtype(np.uint8)

  def __init__(self, folder: str):
    self.folder = folder
    self._source = None
    self._lock = threading.Lock()

  def _open(self):
    if self._source is None:
      with self._lock:
        if self._source is None:
          import tensorflow_datasets as tfds

          builder = tfds.builder_from_directory(self.folder)
          self._meta = builder.info.metadata or {}
          self._shape = builder.info.features["image"].shape
          parts = sorted(builder.info.splits, key=lambda name: int(name.removeprefix("part")))
          sources = [builder.as_data_source(split=name) for name in parts]
          # starts[k]: the index of part k's first image
          self._starts = np.cumsum([0] + [len(src) for src in sources])
          self._source = sources
    return self._source

  def __len__(self) -> int:
    self._open()
    return int(self._starts[-1])

  @property
  def shape(self) -> tuple[int, ...]:
    return (len(self), *self._shape)

  def _get(self, i: int) -> np.ndarray:
    sources = self._open()
    if not 0 <= i < len(self):
      raise IndexError(f"image {i} out of range for a store of {len(self)} ({self.folder})")
    k = int(np.searchsorted(self._starts, i, side="right")) - 1
    return sources[k][i - int(self._starts[k])]["image"]

  def bad(self) -> list[tuple[int, str, str]]:
    """(index, reason, detail) of every file that could not be used when the store was written."""
    self._open()
    return [tuple(b) for b in self._meta.get("bad", [])]

  def __getitem__(self, i) -> np.ndarray:
    """One image (an int) or a stack of them (a slice or a sequence of ints)."""
    self._open()
    if isinstance(i, (int, np.integer)):
      return self._get(int(i) + len(self) if i < 0 else int(i))
    rows = range(len(self))[i] if isinstance(i, slice) else [int(k) for k in np.asarray(i)]
    if len(rows) == 0:
      return np.zeros((0, *self._shape), np.uint8)
    return np.stack([self._get(k) for k in rows])

  def __array__(self, dtype=None, copy=None):
    out = self[:]
    return out if dtype is None else out.astype(dtype)

  def __getstate__(self):
    return {"folder": self.folder}

  def __setstate__(self, state):
    self.__init__(state["folder"])

  def __repr__(self) -> str:
    return f"ImageStore({self.folder!r})"


def disk_bytes(folder: str) -> int:
  return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
