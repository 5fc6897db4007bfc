"""The prepared-image store: a split's images decoded once, as a TFDS ArrayRecord dataset.

Each distinct (file list, image size) becomes one TFDS dataset, `jaxmm_images/<fingerprint>/1.0.0`
under the cache folder, written with `file_format='array_record'` and read back through TFDS's
ArrayRecord data source (random access, no TensorFlow). The images are stored as raw uint8 bytes
(TFDS's BYTES encoding, which here writes and reads several times faster than its default), in
file order (shuffling disabled: record i is file i). Files that cannot be used get an all-zero
image and are listed, with their reasons, in the dataset's metadata.

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
VERSION = "1.0.0"
SPLIT = "images"
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
        return {SPLIT: self._generate_examples()}

      def _generate_examples(self):
        blank = np.zeros((self._size, self._size, 3), np.uint8)
        for i, (img, why) in enumerate(_decoded(self._load, self._n, self._threads)):
          if img is None:
            self.bad.append((i, *why))
          yield i, {"image": blank if img is None else img}
        self.info.metadata["bad"] = [list(b) for b in self.bad]

    _BUILDER = JaxmmImages
  return _BUILDER


_BUILDER = None


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
          self._source = builder.as_data_source(split=SPLIT)
    return self._source

  def __len__(self) -> int:
    return len(self._open())

  @property
  def shape(self) -> tuple[int, ...]:
    n = len(self._open())
    return (n, *self._shape)

  def bad(self) -> list[tuple[int, str, str]]:
    """(index, reason, detail) of every file that could not be used when the store was written."""
    self._open()
    return [tuple(b) for b in self._meta.get("bad", [])]

  def __getitem__(self, i) -> np.ndarray:
    """One image (an int) or a stack of them (a slice or a sequence of ints)."""
    source = self._open()
    if isinstance(i, (int, np.integer)):
      return source[int(i)]["image"]
    rows = range(len(self))[i] if isinstance(i, slice) else [int(k) for k in np.asarray(i)]
    if len(rows) == 0:
      return np.zeros((0, *self._shape), np.uint8)
    return np.stack([source[k]["image"] for k in rows])

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
