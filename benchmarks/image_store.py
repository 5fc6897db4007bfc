"""The prepared-image store, two formats side by side: a memory-mapped .npy array (what jaxmm used
before) and the TFDS ArrayRecord dataset of jaxmm/data/store.py (what it uses now).

  python benchmarks/image_store.py                    # 64 and 224 px, 2000 generated JPEGs
  python benchmarks/image_store.py --sizes 64 --n 500 --json

For each size: preparation time (decode the same JPEGs with the same threads, write the store),
disk bytes, random-order single-image reads per second (one thread), and the images/s of the grain
pipeline that gathers uint8 rows into batches (shuffle + batch, 2 threads, no augmentation): what
the host delivers to the train step. The two formats run interleaved, so load on the machine hits
both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from jaxmm.data import images, pipeline, store  # noqa: E402


def make_jpegs(folder: str, n: int, side: int = 256) -> list[str]:
  """n photo-like JPEGs (smooth gradients plus noise), `side` px square."""
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:side, 0:side] / side
  paths = []
  for i in range(n):
    base = np.stack(
      [xx * rng.uniform(0, 255), yy * rng.uniform(0, 255), (xx + yy) * rng.uniform(0, 128)], -1
    )
    img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    path = os.path.join(folder, f"{i:05d}.jpg")
    Image.fromarray(img).save(path, quality=90)
    paths.append(path)
  return paths


def prepare_npy(paths, size: int, folder: str, threads: int) -> str:
  """The .npy format: one (N,S,S,3) uint8 array written through a memmap."""
  path = os.path.join(folder, f"images_{size}.npy")
  out = np.lib.format.open_memmap(
    path, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3)
  )

  def work(i):
    out[i] = images.load_image(paths[i], size)

  with ThreadPoolExecutor(threads) as pool:
    list(pool.map(work, range(len(paths)), chunksize=32))
  out.flush()
  return path


def prepare_tfds(paths, size: int, folder: str, threads: int) -> str:
  def load(i):
    return images.load_image(paths[i], size), None

  return store.prepare(
    folder, f"bench{size}", size=size, n=len(paths), load=load, num_threads=threads
  )


def read_rate(get, n: int, reads: int, repeats: int) -> float:
  order = np.random.default_rng(1).integers(0, n, reads)
  rates = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for i in order:
      get(int(i))
    rates.append(reads / (time.perf_counter() - t0))
  return statistics.median(rates)


def pipeline_rate(split, batch: int, threads: int, repeats: int) -> float:
  rates = []
  for epoch in range(repeats):
    it = pipeline.iterate(
      pipeline.train_dataset(split, batch_size=batch, seed=0, epoch=epoch), num_threads=threads
    )
    next(it)  # start-up once per epoch
    t0, n = time.perf_counter(), 0
    for b in it:
      n += len(b["index"])
    rates.append(n / (time.perf_counter() - t0))
  return statistics.median(rates)


def split_over(image_cache, n: int) -> pipeline.PreparedSplit:
  return pipeline.PreparedSplit(
    ids=[str(i) for i in range(n)],
    image_cache=image_cache,
    image_index=np.arange(n),
    arrays={"labels": np.zeros((n, 18), np.float32)},
  )


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
  p.add_argument("--n", type=int, default=2000, help="images in the store")
  p.add_argument("--reads", type=int, default=2000, help="random single reads per repeat")
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--json", action="store_true", help="one JSON line instead of a table")
  args = p.parse_args(argv)
  tmp = tempfile.mkdtemp(prefix="jaxmm_store_bench_")
  try:
    os.makedirs(os.path.join(tmp, "jpg"))
    paths = make_jpegs(os.path.join(tmp, "jpg"), args.n)
    rows = []
    for size in args.sizes:
      row = {"size": size, "n": args.n}
      for fmt, prep in (("npy", prepare_npy), ("tfds", prepare_tfds)):
        folder = os.path.join(tmp, fmt)
        os.makedirs(folder, exist_ok=True)
        t0 = time.perf_counter()
        where = prep(paths, size, folder, args.threads)
        row[f"{fmt}_prepare_s"] = round(time.perf_counter() - t0, 2)
        if fmt == "npy":
          row["npy_disk_mb"] = round(os.path.getsize(where) / 2**20, 1)
          arr = np.load(where, mmap_mode="r")
          get = lambda i, arr=arr: np.asarray(arr[i])
          where = arr  # the pipeline takes an array (a memmap here) as its image cache
        else:
          row["tfds_disk_mb"] = round(store.disk_bytes(where) / 2**20, 1)
          st = store.ImageStore(where)
          get = st.__getitem__
        row[f"{fmt}_read_per_s"] = round(read_rate(get, args.n, args.reads, args.repeats))
        row[f"{fmt}_pipeline_per_s"] = round(
          pipeline_rate(split_over(where, args.n), args.batch, args.threads, args.repeats)
        )
      rows.append(row)
      if not args.json:
        print(json.dumps(row), flush=True)
    if args.json:
      print(json.dumps({"threads": args.threads, "batch": args.batch, "rows": rows}))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
