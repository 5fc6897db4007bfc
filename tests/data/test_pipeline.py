"""Tests for the grain train/eval pipelines (jaxmm/data/pipeline.py)."""

from __future__ import annotations

import concurrent.futures
import itertools
import pickle
import threading

import numpy as np
import pytest
from PIL import Image

from jaxmm.data import pipeline
from jaxmm.data.images import cached_images, open_cache
from jaxmm.data.pipeline import (
  AugmentConfig,
  PreparedSplit,
  SplitSource,
  augment_where,
  device_augmentation,
  eval_dataset,
  iterate,
  steps_per_epoch,
  train_dataset,
)

N, S, T, L = 40, 8, 5, 18
BS = 8


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> PreparedSplit:
  """40 random 8x8 PNGs, cached; the split uses rows 1..40 of a 41-row cache (row 0 unused)."""
  d = tmp_path_factory.mktemp("pipeline")
  rng = np.random.default_rng(0)
  paths = []
  for i in range(N + 1):
    p = d / f"{i}.png"
    Image.fromarray(rng.integers(0, 256, (S, S, 3), dtype=np.uint8)).save(p)
    paths.append(str(p))
  cache, ok = cached_images(paths, S, cache_dir=str(d / "cache"), num_threads=1)
  assert ok.all()
  n = np.arange(N)
  arrays = {
    "tokens": (n[:, None] * 10 + np.arange(T)).astype(np.int32),
    "length": (n % T + 1).astype(np.int32),
    "labels": np.eye(L, dtype=np.float32)[n % L],
  }
  return PreparedSplit(
    ids=[f"{i}.png" for i in range(1, N + 1)],
    image_cache=cache.folder,
    image_index=np.arange(1, N + 1, dtype=np.int64),
    arrays=arrays,
  )


def _collect(ds, **kw) -> list[dict]:
  return [dict(b) for b in iterate(ds, **kw)]


def _assert_same(a: list[dict], b: list[dict]) -> None:
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_source_examples(split):
  src = SplitSource(split)
  assert len(src) == N
  cache = np.asarray(open_cache(split.image_cache))
  ex = src[3]
  assert set(ex) == {"tokens", "length", "labels", "image", "index"}
  np.testing.assert_array_equal(ex["image"], cache[4])  # image_index maps example 3 to row 4
  np.testing.assert_array_equal(ex["tokens"], split.arrays["tokens"][3])
  assert ex["index"] == 3 and ex["index"].dtype == np.int32
  # Pickles without the opened store (worker processes reopen it).
  src2 = pickle.loads(pickle.dumps(src))
  assert src2._images is None
  np.testing.assert_array_equal(src2[3]["image"], ex["image"])


def test_source_reads_right_from_racing_threads(split):
  """grain's reader threads make a source's first reads at once: each gets its own image."""
  src, start = SplitSource(split), threading.Barrier(8)

  def read(i):
    start.wait()
    return src[i]["image"]

  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    images = list(pool.map(read, range(8)))
  cache = np.asarray(open_cache(split.image_cache))
  for i, image in enumerate(images):
    np.testing.assert_array_equal(image, cache[split.image_index[i]])


def test_source_text_only(split):
  text_only = PreparedSplit(ids=split.ids, image_cache=None, image_index=None, arrays=split.arrays)
  ex = SplitSource(text_only)[0]
  assert "image" not in ex and set(ex) == {"tokens", "length", "labels", "index"}


def test_train_batches_shapes_and_drop_remainder(split):
  bs = 12  # 40 = 3 * 12 + 4: the remainder of 4 is dropped
  ds = train_dataset(split, batch_size=bs, seed=0, epoch=0)
  assert len(ds) == steps_per_epoch(N, bs) == 3
  batches = _collect(ds, num_threads=1)
  assert len(batches) == 3
  for b in batches:
    assert set(b) == {"tokens", "length", "labels", "image", "index"}
    assert b["tokens"].shape == (bs, T) and b["tokens"].dtype == np.int32
    assert b["length"].shape == (bs,) and b["length"].dtype == np.int32
    assert b["labels"].shape == (bs, L) and b["labels"].dtype == np.float32
    assert b["image"].shape == (bs, S, S, 3) and b["image"].dtype == np.uint8
    assert b["index"].shape == (bs,) and b["index"].dtype == np.int32
  # The fields of a row belong to the same example.
  cache = np.asarray(open_cache(split.image_cache))
  for b in batches:
    for j, i in enumerate(b["index"]):
      np.testing.assert_array_equal(b["tokens"][j], split.arrays["tokens"][i])
      np.testing.assert_array_equal(b["labels"][j], split.arrays["labels"][i])
      np.testing.assert_array_equal(b["image"][j], cache[split.image_index[i]])


def test_train_each_example_at_most_once_per_epoch(split):
  for epoch in range(3):
    idx = np.concatenate(
      [
        b["index"]
        for b in _collect(train_dataset(split, batch_size=12, seed=1, epoch=epoch), num_threads=1)
      ]
    )
    assert len(idx) == 36 and len(set(idx.tolist())) == 36 and idx.max() < N


def test_train_exact_multiple_covers_all(split):
  idx = np.concatenate(
    [
      b["index"]
      for b in _collect(train_dataset(split, batch_size=BS, seed=0, epoch=0), num_threads=1)
    ]
  )
  assert sorted(idx.tolist()) == list(range(N))
  assert idx.tolist() != list(range(N))  # shuffled


def test_train_deterministic_per_seed_epoch(split):
  a = _collect(train_dataset(split, batch_size=BS, seed=0, epoch=1), num_threads=1)
  b = _collect(train_dataset(split, batch_size=BS, seed=0, epoch=1), num_threads=2)
  _assert_same(a, b)
  order = lambda bs: np.concatenate([x["index"] for x in bs]).tolist()
  c = _collect(train_dataset(split, batch_size=BS, seed=0, epoch=2), num_threads=1)
  d = _collect(train_dataset(split, batch_size=BS, seed=1, epoch=1), num_threads=1)
  assert order(c) != order(a)  # another epoch, another order
  assert order(d) != order(a)  # another seed, another order


AUG = AugmentConfig(crop=True, hflip=True, vflip=True)


def test_train_augmentation_deterministic(split):
  a = _collect(train_dataset(split, batch_size=BS, seed=0, epoch=0, augment=AUG), num_threads=1)
  b = _collect(train_dataset(split, batch_size=BS, seed=0, epoch=0, augment=AUG), num_threads=2)
  _assert_same(a, b)
  plain = _collect(train_dataset(split, batch_size=BS, seed=0, epoch=0), num_threads=1)
  # Augmentation changes images only, not the order or the other fields.
  for x, y in zip(a, plain):
    np.testing.assert_array_equal(x["index"], y["index"])
    np.testing.assert_array_equal(x["tokens"], y["tokens"])
    assert x["image"].shape == y["image"].shape and x["image"].dtype == np.uint8
  assert any(not np.array_equal(x["image"], y["image"]) for x, y in zip(a, plain))
  # The same example gets a different augmentation in another epoch.
  c = _collect(train_dataset(split, batch_size=BS, seed=0, epoch=1, augment=AUG), num_threads=1)
  by_index = lambda bs: {int(i): img for b in bs for i, img in zip(b["index"], b["image"])}
  ia, ic = by_index(a), by_index(c)
  assert any(not np.array_equal(ia[i], ic[i]) for i in range(N))


def test_train_hflip_only_gives_exact_flips(split):
  aug = AugmentConfig(hflip=True)
  cache = np.asarray(open_cache(split.image_cache))
  flipped = 0
  for b in _collect(
    train_dataset(split, batch_size=BS, seed=0, epoch=0, augment=aug), num_threads=1
  ):
    for i, img in zip(b["index"], b["image"]):
      orig = cache[split.image_index[i]]
      if not np.array_equal(img, orig):
        np.testing.assert_array_equal(img, orig[:, ::-1])
        flipped += 1
  assert 0 < flipped < N


def test_extra_map_deterministic(split):

  def extra(ex, rng):
    ex = dict(ex)
    ex["noise"] = rng.integers(0, 1000, dtype=np.int32)
    return ex

  a = _collect(train_dataset(split, batch_size=BS, seed=0, epoch=0, extra_map=extra), num_threads=1)
  b = _collect(train_dataset(split, batch_size=BS, seed=0, epoch=0, extra_map=extra), num_threads=2)
  _assert_same(a, b)
  assert a[0]["noise"].shape == (BS,)


@pytest.mark.parametrize("augment", [AugmentConfig(), AUG], ids=["plain", "augment"])
def test_iterate_resume(split, augment):
  ds = train_dataset(split, batch_size=BS, seed=3, epoch=4, augment=augment)
  full = _collect(ds, num_threads=1)
  assert len(full) == 5
  for k in (1, 3, 4):
    _assert_same(_collect(ds, start=k, num_threads=1), full[k:])
    _assert_same(_collect(ds, start=k, num_threads=2), full[k:])
  # A fresh dataset object (a restarted process) resumes identically.
  ds2 = train_dataset(split, batch_size=BS, seed=3, epoch=4, augment=augment)
  _assert_same(_collect(ds2, start=2, num_threads=2, prefetch=1), full[2:])


def test_iterate_partial_then_resume(split):
  # Consume the first 2 batches, "crash", resume at 2: the concatenation equals a full epoch.
  ds = train_dataset(split, batch_size=BS, seed=0, epoch=0, augment=AUG)
  full = _collect(ds, num_threads=2)
  head = [dict(b) for b in itertools.islice(iterate(ds, num_threads=2), 2)]
  _assert_same(head + _collect(ds, start=2, num_threads=2), full)


def test_eval_all_in_order_padded(split):
  bs = 12  # 40 = 3 * 12 + 4: the last batch has 4 real rows and 8 padded ones
  ds = eval_dataset(split, batch_size=bs)
  batches = _collect(ds, num_threads=2)
  assert len(batches) == 4
  for b in batches:
    assert set(b) == {"tokens", "length", "labels", "image", "index", "mask"}
    assert b["image"].shape == (bs, S, S, 3) and b["image"].dtype == np.uint8
    assert b["tokens"].shape == (bs, T) and b["tokens"].dtype == np.int32
    assert b["labels"].shape == (bs, L) and b["labels"].dtype == np.float32
    assert b["mask"].shape == (bs,) and b["mask"].dtype == np.float32
  np.testing.assert_array_equal(np.concatenate([b["mask"] for b in batches[:3]]), 1.0)
  last = batches[-1]
  np.testing.assert_array_equal(last["mask"], [1] * 4 + [0] * 8)
  real = np.concatenate([b["index"][b["mask"] > 0] for b in batches])
  assert real.tolist() == list(range(N))  # every example once, in order
  for k in ("tokens", "length", "labels", "image"):
    assert not last[k][4:].any()  # padded rows are zeros
  np.testing.assert_array_equal(last["tokens"][:4], split.arrays["tokens"][36:])
  # Deterministic and resumable like train.
  _assert_same(_collect(ds, start=3, num_threads=1), batches[3:])


def test_eval_exact_multiple_no_padding(split):
  batches = _collect(eval_dataset(split, batch_size=BS), num_threads=1)
  assert len(batches) == N // BS
  for b in batches:
    np.testing.assert_array_equal(b["mask"], 1.0)


def test_eval_batch_larger_than_split(split):
  small = PreparedSplit(
    ids=split.ids[:3],
    image_cache=split.image_cache,
    image_index=split.image_index[:3],
    arrays={k: v[:3] for k, v in split.arrays.items()},
  )
  (b,) = _collect(eval_dataset(small, batch_size=BS), num_threads=1)
  np.testing.assert_array_equal(b["mask"], [1, 1, 1, 0, 0, 0, 0, 0])
  assert b["image"].shape == (BS, S, S, 3)


def test_worker_process_matches_threads(split):
  # A real grain worker process (mp_prefetch): same batches, same order, as the in-process threads.
  ds = train_dataset(split, batch_size=BS, seed=5, epoch=1, augment=AUG)
  full = _collect(ds, num_threads=1)
  _assert_same(_collect(ds, start=1, num_threads=1, num_workers=1), full[1:])


def test_process_shards_make_up_the_one_process_batches(split):
  """Multi-host: the shards of global batch k hold exactly batch k of a one-process run, with the
  same augmentation, and every process gets the same number of batches."""
  aug = AugmentConfig(crop=True, hflip=True)
  whole = list(train_dataset(split, batch_size=12, seed=3, epoch=1, augment=aug))
  shards = [
    list(train_dataset(split, batch_size=4, seed=3, epoch=1, augment=aug, shard=(i, 3)))
    for i in range(3)
  ]
  assert [len(s) for s in shards] == [len(whole)] * 3 == [40 // 12] * 3
  for k, batch in enumerate(whole):
    rows = np.concatenate([s[k]["index"] for s in shards])
    assert sorted(rows) == sorted(batch["index"])
    for i in range(len(rows)):
      j = int(np.flatnonzero(batch["index"] == rows[i])[0])
      got = np.concatenate([s[k]["image"] for s in shards])[i]
      np.testing.assert_array_equal(got, batch["image"][j])


def test_take_selects_rows_in_order_and_shares_the_cache(split):
  sub = split.take([5, 2])
  assert sub.ids == [split.ids[5], split.ids[2]] and sub.image_cache == split.image_cache
  np.testing.assert_array_equal(sub.image_index, split.image_index[[5, 2]])
  src, sub_src = SplitSource(split), SplitSource(sub)
  for i, j in ((0, 5), (1, 2)):
    for key, value in sub_src[i].items():
      if key != "index":  # the position within the split
        np.testing.assert_array_equal(value, src[j][key])


def test_swap_words():
  from jaxmm.data.pipeline import swap_words

  tokens = np.array([5, 6, 7, 8, 9, 0, 0])
  rng = np.random.default_rng(0)
  np.testing.assert_array_equal(swap_words(tokens, 5, rng, 0.0), tokens)
  np.testing.assert_array_equal(swap_words(tokens, 5, rng, 1.0), [6, 5, 8, 7, 9, 0, 0])
  for seed in range(20):
    out = swap_words(tokens, 5, np.random.default_rng(seed), 0.5)
    assert sorted(out[:5]) == [5, 6, 7, 8, 9] and (out[5:] == 0).all()
    assert all(abs(int(np.flatnonzero(out == t)[0]) - i) <= 1 for i, t in enumerate(tokens[:5]))
  np.testing.assert_array_equal(swap_words(tokens, 1, rng, 1.0), tokens)  # one word: nothing


def test_word_swap_and_jitter_apply_to_train_batches_only(split):
  plain = next(iter(train_dataset(split, batch_size=N, seed=0, epoch=0)))
  aug = AugmentConfig(color_jitter=0.3, word_swap=1.0)
  got = next(iter(train_dataset(split, batch_size=N, seed=0, epoch=0, augment=aug)))
  np.testing.assert_array_equal(got["index"], plain["index"])
  assert not np.array_equal(got["tokens"], plain["tokens"])
  np.testing.assert_array_equal(np.sort(got["tokens"], 1), np.sort(plain["tokens"], 1))
  assert not np.array_equal(got["image"], plain["image"])


def test_device_placement_leaves_images_to_the_step_and_swaps_words_on_the_host(split):
  plain = next(iter(train_dataset(split, batch_size=N, seed=0, epoch=0)))
  aug = AugmentConfig(crop=True, hflip=True, color_jitter=0.3, word_swap=1.0, where="device")
  assert device_augmentation(aug) is aug
  got = next(iter(train_dataset(split, batch_size=N, seed=0, epoch=0, augment=aug)))
  np.testing.assert_array_equal(got["image"], plain["image"])  # the host only gathers rows
  assert not np.array_equal(got["tokens"], plain["tokens"])
  # A task's host transform (rotation) must see augmented images: the host augments then, as it
  # does with augment.where='host'.
  extra = lambda ex, rng: ex
  assert device_augmentation(aug, extra) is None
  on_host = lambda a: next(
    iter(train_dataset(split, batch_size=N, seed=0, epoch=0, augment=a, extra_map=extra))
  )
  got = on_host(aug)
  assert not np.array_equal(got["image"], plain["image"])
  _assert_same(
    [got],
    [on_host(AugmentConfig(crop=True, hflip=True, color_jitter=0.3, word_swap=1.0, where="host"))],
  )
  assert device_augmentation(AugmentConfig(word_swap=1.0, where="device")) is None  # no images


def test_augment_where_auto_picks_by_backend_and_image_size():
  small, large = pipeline.AUTO_DEVICE_MIN_SIZE_CPU - 1, pipeline.AUTO_DEVICE_MIN_SIZE_CPU
  assert augment_where("auto", small, "cpu") == "host"
  assert augment_where("auto", large, "cpu") == "device"
  for backend in ("gpu", "tpu"):
    assert augment_where("auto", 16, backend) == augment_where("auto", 224, backend) == "device"
  assert augment_where("device", 16, "cpu") == "device"
  assert augment_where("host", 224, "gpu") == "host"
  with pytest.raises(ValueError, match="data.augment.where='gpu'"):
    augment_where("gpu", 64)
  from jaxmm.configs import default

  c = default.get_config()
  c.data.augment.update(crop=True, color_jitter=0.2)
  aug = AugmentConfig.from_config(c.data, backend="gpu")
  assert (aug.where, aug.crop, aug.color_jitter) == ("device", True, 0.2)
  assert AugmentConfig.from_config(c.data, backend="cpu").where == "host"  # 64 px
  c.data.image_size = 224
  assert AugmentConfig.from_config(c.data, backend="cpu").where == "device"


def test_split_read_into_memory_once(split, monkeypatch):
  store_only = split.take(range(N))
  monkeypatch.setattr(pipeline, "RESIDENT_FRACTION", 0.0)  # over budget: reads the store
  assert not store_only.load_resident() and store_only.resident is None
  from_store = _collect(
    train_dataset(store_only, batch_size=BS, seed=0, epoch=0, augment=AUG), num_threads=1
  )
  monkeypatch.undo()
  resident = split.take(range(N))
  assert resident.load_resident()
  np.testing.assert_array_equal(resident.resident, open_cache(split.image_cache)[1:])
  _assert_same(
    _collect(train_dataset(resident, batch_size=BS, seed=0, epoch=0, augment=AUG), num_threads=1),
    from_store,
  )
  assert pickle.loads(pickle.dumps(resident)).resident is None  # worker processes read the store
  in_memory = PreparedSplit(
    ids=split.ids,
    image_cache=np.asarray(resident.resident),
    image_index=np.arange(N),
    arrays=split.arrays,
  )
  assert not in_memory.load_resident()  # already an array
