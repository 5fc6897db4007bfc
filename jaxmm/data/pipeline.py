"""grain pipelines over prepared example arrays.

A split is a `PreparedSplit`: per-example arrays (tokens, lengths, targets) plus an index into the
uint8 image cache. Train batches of epoch `e` are a pure function of (seed, e, batch index): the
order comes from a seeded shuffle and each example's augmentation from grain's per-index RNG (or,
placed on the device, from the step's key: jaxmm.data.device_augment), so a resumed run sees exactly
the batches an uninterrupted one would, whatever the worker count.

A split's images are read from the prepared store once and then kept in memory when they fit
(`PreparedSplit.load_resident`): the store reads ~1-2k images/s at 224 px on two cores, the
in-memory rows several times that, and every epoch reads every row again.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grain
import numpy as np

from jaxmm.data import images as images_lib


@dataclasses.dataclass
class PreparedSplit:
  """Everything the model needs for one split, indexable by example.

  image_cache: the folder of the prepared image store (jaxmm.data.store: M images (S,S,3) uint8),
    or those images as an in-memory array; image_index_N picks this split's rows.
  arrays: per-example arrays with leading dim N, e.g. tokens (N,T) int32, length (N,) int32,
    labels (N,18) float32 or label (N,) int32.
  """

  ids: list[str]
  image_cache: str | np.ndarray | None
  image_index: np.ndarray | None
  arrays: dict[str, np.ndarray]
  # This split's images in memory, row i = example i (load_resident); never pickled.
  resident: np.ndarray | None = dataclasses.field(default=None, init=False, repr=False)

  def __len__(self) -> int:
    return len(self.ids)

  def __getstate__(self):
    return {**self.__dict__, "resident": None}  # grain workers read the store themselves

  def load_resident(self, num_threads: int = 2) -> bool:
    """Reads this split's images from the store into memory once, if they fit the budget
    (RESIDENT_FRACTION of the machine's memory over all splits); whether they are in memory."""
    if self.resident is not None or self.image_cache is None:
      return self.resident is not None
    if isinstance(self.image_cache, np.ndarray):
      return False  # already in memory
    store = images_lib.open_cache(self.image_cache)
    nbytes = len(self) * int(np.prod(store.shape[1:]))
    with _RESIDENT_LOCK:
      if _RESIDENT_BYTES[0] + nbytes > RESIDENT_FRACTION * _memory_bytes():
        return False
      _RESIDENT_BYTES[0] += nbytes
    out = np.empty((len(self), *store.shape[1:]), np.uint8)
    chunks = [range(a, min(a + 256, len(self))) for a in range(0, len(self), 256)]

    def read(rows):
      out[rows.start : rows.stop] = store[self.image_index[rows.start : rows.stop]]

    with ThreadPoolExecutor(max(num_threads, 1)) as pool:
      list(pool.map(read, chunks))
    self.resident = out
    weakref.finalize(self, _release, nbytes)
    return True

  def take(self, rows) -> PreparedSplit:
    """The examples at `rows` (indices into this split), in that order; the image store is
    shared."""
    rows = np.asarray(rows, np.int64)
    return PreparedSplit(
      ids=[self.ids[i] for i in rows],
      image_cache=self.image_cache,
      image_index=None if self.image_index is None else self.image_index[rows],
      arrays={k: v[rows] for k, v in self.arrays.items()},
    )


# Splits kept in memory may use this fraction of the machine's memory together.
RESIDENT_FRACTION = 0.25
_RESIDENT_BYTES = [0]
_RESIDENT_LOCK = threading.Lock()


def _memory_bytes() -> int:
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError):  # not a POSIX system: assume 8 GiB
    return 8 << 30


def _release(nbytes: int) -> None:
  with _RESIDENT_LOCK:
    _RESIDENT_BYTES[0] -= nbytes


class SplitSource(grain.sources.RandomAccessDataSource):
  """grain source over a PreparedSplit; opens the image store lazily so it pickles cheaply."""

  def __init__(self, split: PreparedSplit):
    self._split = split
    self._images = None

  def __len__(self) -> int:
    return len(self._split)

  def __getitem__(self, i):
    i = int(i)
    ex = {k: v[i] for k, v in self._split.arrays.items()}
    if self._split.resident is not None:
      ex["image"] = self._split.resident[i]
    elif self._split.image_cache is not None:
      if self._images is None:
        self._images = images_lib.open_cache(self._split.image_cache)
      ex["image"] = np.asarray(self._images[int(self._split.image_index[i])])
    ex["index"] = np.int32(i)
    return ex

  def __getstate__(self):
    return {"_split": self._split, "_images": None}


# data.augment.where: 'host' (grain threads, PIL), 'device' (inside the jitted train step,
# jaxmm.data.device_augment) or 'auto' (augment_where's rule).
PLACEMENTS = ("auto", "device", "host")


# 'auto' on a CPU: the device from this image size. The device path costs a CPU less time per
# image at every size (crop + flip at 64 / 128 / 224 px: 42 / 149 / 441 us against PIL's 140 / 348
# / 1133 us); at 64 px the two placements trained equally fast end to end (the augmentation is a
# few percent of a CPU step either way), so below this size the host keeps it, where every run
# before the device path augmented (their workdirs resume with the same draws).
AUTO_DEVICE_MIN_SIZE_CPU = 128


def augment_where(where: str, image_size: int, backend: str | None = None) -> str:
  """'host' or 'device' for data.augment.where at `image_size` on `backend` (default: jax's).

  'auto': the device on a GPU or TPU (at 224 px PIL on the host gives ~1,000 images/s per 2 cores;
  on the device the host only gathers uint8 rows); on a CPU the device from
  AUTO_DEVICE_MIN_SIZE_CPU px, the host below (benchmarks/RESULTS.md, "Input pipeline"). The
  answer depends only on the backend and the image size, so a run resumed on the machine it
  started on augments as an uninterrupted one would.
  """
  if where not in PLACEMENTS:
    raise ValueError(
      f"data.augment.where={where!r} is not one of {PLACEMENTS}; 'auto' chooses by backend and "
      "image size"
    )
  if where != "auto":
    return where
  if backend is None:
    import jax  # deferred: the host pipeline itself needs no jax

    backend = jax.default_backend()
  if backend != "cpu":
    return "device"
  return "device" if image_size >= AUTO_DEVICE_MIN_SIZE_CPU else "host"


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  crop: bool = False
  hflip: bool = False
  vflip: bool = False
  crop_scale: tuple[float, float] = (0.5, 1.0)
  color_jitter: float = 0.0  # brightness / contrast / saturation strength (S2, S3)
  word_swap: float = 0.0  # probability of swapping each adjacent pair of caption tokens (S2)
  where: str = "host"  # where the image transforms run: 'host' or 'device' (augment_where)

  @classmethod
  def from_config(cls, data_config, backend: str | None = None) -> AugmentConfig:
    """From config.data (augment, image_size), the placement resolved for `backend` (default:
    jax's)."""
    aug = data_config.augment
    return cls(
      crop=aug.crop,
      hflip=aug.hflip,
      vflip=aug.vflip,
      crop_scale=tuple(aug.crop_scale),
      color_jitter=aug.color_jitter,
      word_swap=aug.word_swap,
      where=augment_where(aug.get("where", "host"), data_config.image_size, backend),
    )

  @property
  def images(self) -> bool:
    """Whether any image transform is on."""
    return self.crop or self.hflip or self.vflip or self.color_jitter > 0

  @property
  def any(self) -> bool:
    return self.images or self.word_swap > 0


def device_augmentation(augment: AugmentConfig, extra_map=None) -> AugmentConfig | None:
  """The image augmentation the train step applies, or None when the host does it (placement
  'host', or a task transform such as rotation that must see the augmented image)."""
  if augment.images and augment.where == "device" and extra_map is None:
    return augment
  return None


def swap_words(
  tokens_T: np.ndarray, length: int, rng: np.random.Generator, prob: float
) -> np.ndarray:
  """Random word swap: left to right, each adjacent pair of real tokens is swapped with
  probability `prob` (a token moves at most one place); padding is untouched."""
  out = np.array(tokens_T)
  i = 0
  draws = rng.random(max(int(length) - 1, 0))
  while i < int(length) - 1:
    if draws[i] < prob:
      out[i], out[i + 1] = out[i + 1], out[i]
      i += 2
    else:
      i += 1
  return out


class _Augment(grain.transforms.RandomMap):
  def __init__(self, cfg: AugmentConfig, images: bool):
    self.cfg = cfg
    self.images = images  # False: the train step augments the images

  def random_map(self, ex, rng: np.random.Generator):
    ex = dict(ex)
    if self.images and "image" in ex:
      ex["image"] = images_lib.augment(
        ex["image"],
        rng,
        crop=self.cfg.crop,
        hflip=self.cfg.hflip,
        vflip=self.cfg.vflip,
        crop_scale=self.cfg.crop_scale,
        jitter=self.cfg.color_jitter,
      )
    if self.cfg.word_swap > 0 and "tokens" in ex:
      ex["tokens"] = swap_words(ex["tokens"], ex["length"], rng, self.cfg.word_swap)
    return ex


def _epoch_seed(seed: int, epoch: int) -> int:
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] >> 1)


def steps_per_epoch(n: int, batch_size: int) -> int:
  return n // batch_size


def train_dataset(
  split: PreparedSplit,
  *,
  batch_size: int,
  seed: int,
  epoch: int,
  augment: AugmentConfig = AugmentConfig(),
  extra_map=None,
  shard: tuple[int, int] = (0, 1),
) -> grain.MapDataset:
  """Epoch `epoch` as a MapDataset of full batches (the remainder is dropped, as usual in training).

  `extra_map(example, rng) -> example` adds task-specific random transforms (pretext tasks).
  Image transforms placed on the device (device_augmentation) are left to the train step: the
  host then only gathers uint8 rows.
  shard=(index, count): multi-host data parallelism, `batch_size` rows per process. Process
  `index` reads rows [index*batch_size, (index+1)*batch_size) of each global batch of the shuffled,
  augmented epoch, so the global batch k that the processes' shards make up (in process order) is
  batch k of a one-process run with batch_size*count, row for row: what depends on a row's
  position (dropout masks) is the same too.
  """
  split.load_resident()
  ds = grain.MapDataset.source(SplitSource(split)).shuffle(seed=_epoch_seed(seed, epoch))
  host_images = augment.images and device_augmentation(augment, extra_map) is None
  if host_images or augment.word_swap > 0:
    ds = ds.random_map(_Augment(augment, host_images), seed=_epoch_seed(seed + 1, epoch))
  if extra_map is not None:
    ds = ds.random_map(extra_map, seed=_epoch_seed(seed + 2, epoch))
  index, count = shard
  if count > 1:  # whole global batches only, so every process has the same number of steps
    full = len(ds) // (batch_size * count) * batch_size * count
    # Batches of batch_size rows; global batch k is batches k*count .. k*count+count-1.
    return ds[:full].batch(batch_size, drop_remainder=True)[index::count]
  return ds.batch(batch_size, drop_remainder=True)


def eval_dataset(split: PreparedSplit, *, batch_size: int, extra_map=None) -> grain.MapDataset:
  """All examples in order, the last batch padded to `batch_size` with `mask`=0 rows."""
  split.load_resident()
  ds = grain.MapDataset.source(SplitSource(split))
  if extra_map is not None:
    ds = ds.random_map(extra_map, seed=0)  # fixed: evaluation is deterministic
  return ds.batch(batch_size, drop_remainder=False).map(_PadBatch(batch_size))


class _PadBatch(grain.transforms.Map):
  def __init__(self, batch_size: int):
    self.batch_size = batch_size

  def map(self, batch):
    n = len(batch["index"])
    pad = self.batch_size - n
    out = {
      k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) if pad else v
      for k, v in batch.items()
    }
    out["mask"] = (np.arange(self.batch_size) < n).astype(np.float32)
    return out


def iterate(
  ds: grain.MapDataset,
  *,
  start: int = 0,
  num_threads: int = 2,
  num_workers: int = 0,
  prefetch: int = 4,
) -> Iterator[dict[str, np.ndarray]]:
  """Iterates batches `start..` of a batched MapDataset with threads or worker processes."""
  if start:
    ds = ds.slice(slice(start, None))
  it_ds = ds.to_iter_dataset(
    grain.ReadOptions(num_threads=max(num_threads, 1), prefetch_buffer_size=prefetch)
  )
  if num_workers > 0:
    from absl import flags

    if not flags.FLAGS.is_parsed():  # grain reads its absl flags; outside app.run none were parsed
      flags.FLAGS.mark_as_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(it_ds)
