"""Input pipeline speed: JPEG decoding vs the prepared uint8 cache vs the grain train pipeline,
against the images/s of the train step it has to feed.

  python benchmarks/loader.py                      # real COMP5329 dev data if present, 64 px
  python benchmarks/loader.py --size 224 --n 3000  # the GPU image size
  python benchmarks/loader.py --synthetic          # generated JPEGs (no real data needed)

Rows (images/s): decode+resize with PIL (1 thread, --threads threads: what building the cache costs
and what a loader without a cache pays every epoch); random-order reads from the cache (one
thread; the memory-mapped .npy of jaxmm/data/images.py); the full grain train pipeline of
`configs/comp5329_dev.py` (shuffle, random-resized crop + flip, batching) with --threads threads
and with --workers worker processes; and the jitted train step of the config's model at its batch
size. The pipeline must deliver >= 5x the step's images/s so that it never starves the step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from jaxmm import config as config_lib  # noqa: E402
from jaxmm.data import datasets, images, pipeline  # noqa: E402

REAL = os.path.join(
  os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "comp5329-dev"
)


def _rate(fn, n: int, repeats: int) -> float:
  """Median items/s of `fn()` (which handles n items) over repeats."""
  rates = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    rates.append(n / (time.perf_counter() - t0))
  return statistics.median(rates)


def decode_rate(paths, size: int, threads: int, repeats: int) -> float:
  if threads == 1:
    return _rate(lambda: [images.load_image(p, size) for p in paths], len(paths), repeats)
  with ThreadPoolExecutor(threads) as pool:
    return _rate(
      lambda: list(pool.map(lambda p: images.load_image(p, size), paths, chunksize=32)),
      len(paths),
      repeats,
    )


def cache_read_rate(split, n: int, repeats: int) -> float:
  source = pipeline.SplitSource(split)
  order = np.random.default_rng(0).permutation(len(split))[:n]
  return _rate(lambda: [source[int(i)] for i in order], len(order), repeats)


def pipeline_rate(
  split, cfg, *, batch: int, threads: int, workers: int, max_batches: int, repeats: int
) -> float:
  aug = cfg.data.augment
  augment = pipeline.AugmentConfig(
    crop=aug.crop, hflip=aug.hflip, vflip=aug.vflip, crop_scale=tuple(aug.crop_scale)
  )
  rates = []
  for epoch in range(repeats):
    ds = pipeline.train_dataset(split, batch_size=batch, seed=0, epoch=epoch, augment=augment)
    it = pipeline.iterate(ds, num_threads=threads, num_workers=workers)
    next(it)  # start-up (worker processes, first prefetch) is paid once per epoch, not per batch
    t0, n = time.perf_counter(), 0
    for batch_ in it:
      n += len(batch_["index"])
      if n >= max_batches * batch:
        break
    rates.append(n / (time.perf_counter() - t0))
  return statistics.median(rates)


def train_step_rate(cfg, *, vocab_size: int, batch: int, size: int, repeats: int) -> float:
  import jax
  from flax import nnx

  from jaxmm import tasks
  from jaxmm.models import registry
  from jaxmm.train import optim, steps
  from jaxmm.train import state as state_lib

  model = registry.build_model(cfg.model, num_outputs=18, vocab_size=vocab_size, rngs=nnx.Rngs(0))
  tx = optim.make_optimizer(cfg.optim, steps_per_epoch=100, total_steps=10_000)
  state = state_lib.from_model(model, tx)
  step = steps.make_train_step(tasks.make(config_lib.default_config()), seed=0)
  rng = np.random.default_rng(0)
  b = {
    "image": rng.integers(0, 256, (batch, size, size, 3), np.uint8),
    "tokens": rng.integers(1, vocab_size, (batch, cfg.data.max_len)).astype(np.int32),
    "length": np.full(batch, cfg.data.max_len // 2, np.int32),
    "labels": (rng.random((batch, 18)) < 0.2).astype(np.float32),
  }
  holder = [state]

  def run(n=3):
    for _ in range(n):
      holder[0], m = step(holder[0], b)
    jax.block_until_ready(m["loss"])

  run(2)  # compile
  return _rate(run, 3 * batch, repeats)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--root", default=REAL)
  p.add_argument("--synthetic", action="store_true", help="generated JPEGs even if --root exists")
  p.add_argument(
    "--config", default=os.path.join(os.path.dirname(__file__), "..", "configs", "comp5329_dev.py")
  )
  p.add_argument("--size", type=int, default=0, help="image size (0: the config's)")
  p.add_argument("--n", type=int, default=2000, help="JPEGs decoded per decode repeat")
  p.add_argument("--limit", type=int, default=0, help="records to cache (0: all)")
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--workers", type=int, default=2)
  p.add_argument("--batch", type=int, default=0, help="0: the config's train.batch_size")
  p.add_argument("--max-batches", type=int, default=60)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--no-step", action="store_true", help="skip the train-step row")
  p.add_argument("--json", action="store_true")
  args = p.parse_args(argv)

  cfg = config_lib.load_config_file(args.config)
  size = args.size or cfg.data.image_size
  batch = args.batch or cfg.train.batch_size
  tmp = tempfile.mkdtemp(prefix="jaxmm_loader_")
  real = os.path.exists(os.path.join(args.root, "train.csv")) and not args.synthetic
  if not real:
    from jaxmm.data import synthetic

    args.root = os.path.join(tmp, "synthetic")
    synthetic.make_comp5329_synthetic(
      args.root, n_train=max(args.n, 2000), n_test=10, image_size=max(size, 64), seed=0
    )
  cfg.data.update(
    root=args.root,
    image_size=size,
    cache_dir=os.path.join(tmp, "cache"),
    limit=args.limit,
    num_threads=args.threads,
  )
  if not real:
    cfg.data.update(split="random", val_size=0.1)
  print(
    f"# {'real COMP5329 dev' if real else 'synthetic'} data at {args.root}, {size} px, "
    f"batch {batch}, {os.cpu_count()} CPUs, load average "
    f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
    flush=True,
  )

  names = sorted(os.listdir(os.path.join(args.root, cfg.data.images_dir)))[: args.n]
  paths = [os.path.join(args.root, cfg.data.images_dir, n) for n in names]
  rows = {}
  rows["jpeg decode+resize, 1 thread"] = decode_rate(paths, size, 1, args.repeats)
  rows[f"jpeg decode+resize, {args.threads} threads"] = decode_rate(
    paths, size, args.threads, args.repeats
  )
  t0 = time.perf_counter()
  data = datasets.prepare_comp5329(cfg.data, None)
  build_s = time.perf_counter() - t0
  n_cached = len(data.train) + (len(data.val) if data.val is not None else 0)
  print(
    f"# cache build (decode {n_cached} images with {args.threads} threads, write the .npy): "
    f"{build_s:.1f} s",
    flush=True,
  )
  rows["cache read, random order, 1 thread"] = cache_read_rate(data.train, 5000, args.repeats)
  rows[f"grain train pipeline (crop+flip), {args.threads} threads"] = pipeline_rate(
    data.train,
    cfg,
    batch=batch,
    threads=args.threads,
    workers=0,
    max_batches=args.max_batches,
    repeats=args.repeats,
  )
  if args.workers:
    rows[f"grain train pipeline (crop+flip), {args.workers} worker processes"] = pipeline_rate(
      data.train,
      cfg,
      batch=batch,
      threads=args.threads,
      workers=args.workers,
      max_batches=args.max_batches,
      repeats=args.repeats,
    )
  if not args.no_step:
    rows[f"train step ({cfg.model.image.name} + {cfg.model.text.name}, batch {batch})"] = (
      train_step_rate(
        cfg, vocab_size=len(data.encoder.vocab), batch=batch, size=size, repeats=args.repeats
      )
    )
  for label, rate in rows.items():
    print(f"{label:<60} {rate:10.0f} images/s", flush=True)
  step = [r for k, r in rows.items() if k.startswith("train step")]
  if step:
    best = max(r for k, r in rows.items() if k.startswith("grain"))
    print(f"# pipeline / train step: {best / step[0]:.1f}x (must be >= 5x)")
  print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
  if args.json:
    print(
      json.dumps(
        {"size": size, "batch": batch, "real": real, "cache_build_s": build_s, "images_per_s": rows}
      )
    )
  return rows


if __name__ == "__main__":
  main()
