"""grain pipelines over prepared example arrays.

A split is a `PreparedSplit`: per-example arrays (tokens, lengths, targets) plus an index into the
uint8 image cache. Train batches of epoch `e` are a pure function of (seed, e, batch index): the
order comes from a seeded shuffle and each example's augmentation from grain's per-index RNG, so a
resumed run sees exactly the batches an uninterrupted one would, whatever the worker count.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

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

  def __len__(self) -> int:
    return len(self.ids)

  def take(self, rows) -> "PreparedSplit":
    """The examples at `rows` (indices into this split), in that order; the image cache is shared."""
    rows = np.asarray(rows, np.int64)
    return PreparedSplit(ids=[self.ids[i] for i in rows], image_cache=self.image_cache,
                         image_index=None if self.image_index is None else self.image_index[rows],
                         arrays={k: v[rows] for k, v in self.arrays.items()})


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
    if self._split.image_cache is not None:
      if self._images is None:
        self._images = images_lib.open_cache(self._split.image_cache)
      ex["image"] = np.asarray(self._images[int(self._split.image_index[i])])
    ex["index"] = np.int32(i)
    return ex

  def __getstate__(self):
    return {"_split": self._split, "_images": None}


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  crop: bool = False
  hflip: bool = False
  vflip: bool = False
  crop_scale: tuple[float, float] = (0.5, 1.0)
  color_jitter: float = 0.0  # brightness / contrast / saturation strength (S2, S3)
  word_swap: float = 0.0  # probability of swapping each adjacent pair of caption tokens (S2)

  @property
  def any(self) -> bool:
    return (self.crop or self.hflip or self.vflip or self.color_jitter > 0 or
            self.word_swap > 0)


def swap_words(tokens_T: np.ndarray, length: int, rng: np.random.Generator,
               prob: float) -> np.ndarray:
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

  def __init__(self, cfg: AugmentConfig):
    self.cfg = cfg

  def random_map(self, ex, rng: np.random.Generator):
    ex = dict(ex)
    if "image" in ex:
      ex["image"] = images_lib.augment(ex["image"], rng, crop=self.cfg.crop, hflip=self.cfg.hflip,
                                       vflip=self.cfg.vflip, crop_scale=self.cfg.crop_scale,
                                       jitter=self.cfg.color_jitter)
    if self.cfg.word_swap > 0 and "tokens" in ex:
      ex["tokens"] = swap_words(ex["tokens"], ex["length"], rng, self.cfg.word_swap)
    return ex


def _epoch_seed(seed: int, epoch: int) -> int:
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] >> 1)


def steps_per_epoch(n: int, batch_size: int) -> int:
  return n // batch_size


def train_dataset(split: PreparedSplit, *, batch_size: int, seed: int, epoch: int,
                  augment: AugmentConfig = AugmentConfig(), extra_map=None,
                  shard: tuple[int, int] = (0, 1)) -> grain.MapDataset:
  """Epoch `epoch` as a MapDataset of full batches (the remainder is dropped, as usual in training).

  `extra_map(example, rng) -> example` adds task-specific random transforms (pretext tasks).
  shard=(index, count): multi-host data parallelism, `batch_size` rows per process. Process
  `index` reads rows [index*batch_size, (index+1)*batch_size) of each global batch of the shuffled,
  augmented epoch, so the global batch k that the processes' shards make up (in process order) is
  batch k of a one-process run with batch_size*count, row for row: what depends on a row's
  position (dropout masks) is the same too.
  """
  ds = grain.MapDataset.source(SplitSource(split)).shuffle(seed=_epoch_seed(seed, epoch))
  if augment.any:
    ds = ds.random_map(_Augment(augment), seed=_epoch_seed(seed + 1, epoch))
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
    out = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) if pad else v
           for k, v in batch.items()}
    out["mask"] = (np.arange(self.batch_size) < n).astype(np.float32)
    return out


def iterate(ds: grain.MapDataset, *, start: int = 0, num_threads: int = 2, num_workers: int = 0,
            prefetch: int = 4) -> Iterator[dict[str, np.ndarray]]:
  """Iterates batches `start..` of a batched MapDataset with threads or worker processes."""
  if start:
    ds = ds.slice(slice(start, None))
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=max(num_threads, 1),
                                               prefetch_buffer_size=prefetch))
  if num_workers > 0:
    from absl import flags
    if not flags.FLAGS.is_parsed():  # grain reads its absl flags; outside app.run none were parsed
      flags.FLAGS.mark_as_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(it_ds)
