"""Input pipeline speed: JPEG decoding, the prepared store, the grain train pipeline with its
augmentation on the host or on the device, against the images/s of the train step it has to feed.

  python benchmarks/loader.py                      # real COMP5329 dev data if present, 64 px
  python benchmarks/loader.py --size 224 --json    # the GPU image size; one JSON line at the end
  python benchmarks/loader.py --synthetic          # generated JPEGs (no real data needed)
  python benchmarks/loader.py --size 128 --feed 20 # + the train step fed by each placement

Rows (images/s): decode+resize with PIL (1 thread, --threads threads: what building the store costs
and what a loader without one pays every epoch); random-order reads from the prepared store (one
thread) and the one-time read of the train split into memory (PreparedSplit.load_resident); the
grain train pipeline of --config (`configs/comp5329_dev.py`: shuffle, random-resized crop + h-flip,
batching) with --threads threads (and --workers worker processes) augmenting on the host; the same
pipeline with the augmentation placed on the device, where the host only gathers uint8 rows; the
jitted device augmentation alone (`jaxmm.data.device_augment`, on this backend: on a CPU the
"device" is the same cores); the jitted train step of the config's model at its batch size; and
with --feed N, N steps of that train step fed by the pipeline for each placement (the end-to-end
rate; the two placements alternate, median of --repeats). The pipeline must deliver >= 5x the
step's images/s so that it never starves the step.

The JSON line: {"size", "batch", "backend", "where" (what data.augment.where='auto' picks here),
"host_images_per_s" (the host part of that placement), "device_augment_images_per_s", "rows"}.
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


def store_read_rate(split, n: int, repeats: int) -> float:
  store = images.open_cache(split.image_cache)
  order = split.image_index[np.random.default_rng(0).permutation(len(split))[:n]]
  return _rate(lambda: [store[int(i)] for i in order], len(order), repeats)


def augment_config(cfg, where: str) -> pipeline.AugmentConfig:
  """The config's augmentation with its images placed on `where` ('host' or 'device')."""
  cfg = cfg.copy_and_resolve_references()
  cfg.data.augment.where = where
  return pipeline.AugmentConfig.from_config(cfg.data)


def pipeline_rate(
  split, augment, *, batch: int, threads: int, workers: int, max_batches: int, repeats: int
) -> float:
  """Host images/s of the train pipeline (what the host does for `augment`'s placement)."""
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


def device_augment_rate(augment, *, batch: int, size: int, repeats: int) -> float:
  """images/s of the jitted device augmentation alone, batch resident on the device."""
  import jax

  from jaxmm.train import steps

  rng = np.random.default_rng(0)
  images_ = jax.device_put(rng.integers(0, 256, (batch, size, size, 3), np.uint8))
  fn = jax.jit(lambda b, step: steps.augment_images(b, 0, step, augment)["image"])
  index = jax.device_put(np.arange(batch, dtype=np.int32))
  fn({"image": images_, "index": index}, 0).block_until_ready()  # compile
  counter = iter(range(1, 10**9))

  def run(k=5):
    for _ in range(k):
      out = fn({"image": images_, "index": index}, next(counter))
    out.block_until_ready()

  return _rate(run, 5 * batch, repeats)


def build_step(cfg, *, vocab_size: int, augment=None):
  """(jitted train step of the config's model, its fresh state)."""
  from flax import nnx

  from jaxmm import tasks
  from jaxmm.models import registry
  from jaxmm.train import optim, steps
  from jaxmm.train import state as state_lib

  model = registry.build_model(cfg.model, num_outputs=18, vocab_size=vocab_size, rngs=nnx.Rngs(0))
  tx = optim.make_optimizer(cfg.optim, steps_per_epoch=100, total_steps=10_000)
  step = steps.make_train_step(tasks.make(config_lib.default_config()), seed=0, augment=augment)
  return step, state_lib.from_model(model, tx)


def train_step_rate(cfg, *, vocab_size: int, batch: int, size: int, repeats: int) -> float:
  import jax

  step, state = build_step(cfg, vocab_size=vocab_size)
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


def fed_rates(cfg, split, *, vocab_size: int, batch: int, threads: int, steps: int, repeats: int):
  """{placement: images/s of `steps` train steps fed by the pipeline}, placements alternating."""
  import jax

  runs = {}
  for where in ("host", "device"):
    augment = augment_config(cfg, where)
    step, state = build_step(
      cfg, vocab_size=vocab_size, augment=pipeline.device_augmentation(augment)
    )
    warm = next(iter(pipeline.train_dataset(split, batch_size=batch, seed=0, epoch=0)))
    state, m = step(state, warm)  # compile outside the timing
    jax.block_until_ready(m["loss"])
    runs[where] = [augment, step, state]
  rates = {where: [] for where in runs}
  for r in range(repeats):
    for where in list(runs) if r % 2 == 0 else list(runs)[::-1]:
      augment, step, state = runs[where]
      ds = pipeline.train_dataset(split, batch_size=batch, seed=0, epoch=r + 1, augment=augment)
      t0, n = time.perf_counter(), 0
      for b in pipeline.iterate(ds, num_threads=threads):
        state, m = step(state, b)
        n += batch
        if n >= steps * batch:
          break
      jax.block_until_ready(m["loss"])
      rates[where].append(n / (time.perf_counter() - t0))
      runs[where][2] = state
  return {where: statistics.median(v) for where, v in rates.items()}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--root", default=REAL)
  p.add_argument("--synthetic", action="store_true", help="generated JPEGs even if --root exists")
  p.add_argument(
    "--config", default=os.path.join(os.path.dirname(__file__), "..", "configs", "comp5329_dev.py")
  )
  p.add_argument("--size", type=int, default=0, help="image size (0: the config's)")
  p.add_argument("--n", type=int, default=2000, help="JPEGs decoded per decode repeat")
  p.add_argument("--limit", type=int, default=0, help="records to prepare (0: all)")
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--workers", type=int, default=0, help="also time N grain worker processes")
  p.add_argument("--batch", type=int, default=0, help="0: the config's train.batch_size")
  p.add_argument("--max-batches", type=int, default=60)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--no-step", action="store_true", help="skip the train-step rows")
  p.add_argument("--feed", type=int, default=0, help="N steps fed by each placement (0: skip)")
  p.add_argument("--json", action="store_true", help="print one JSON line at the end")
  args = p.parse_args(argv)

  import jax

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
  where = pipeline.augment_where("auto", size)
  print(
    f"# {'real COMP5329 dev' if real else 'synthetic'} data at {args.root}, {size} px, "
    f"batch {batch}, {os.cpu_count()} CPUs, jax backend {jax.default_backend()} "
    f"(data.augment.where='auto' -> {where}), load average "
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
    f"# store build (decode {n_cached} images with {args.threads} threads, write the store): "
    f"{build_s:.1f} s",
    flush=True,
  )
  rows["store read, random order, 1 thread"] = store_read_rate(data.train, 2000, args.repeats)
  t0 = time.perf_counter()
  resident = data.train.load_resident(args.threads)
  resident_s = time.perf_counter() - t0
  print(
    f"# train split ({len(data.train)} images) read into memory once: {resident_s:.1f} s"
    if resident
    else "# train split too large to keep in memory: the pipeline reads the store",
    flush=True,
  )
  host_aug, device_aug = augment_config(cfg, "host"), augment_config(cfg, "device")
  kw = dict(batch=batch, max_batches=args.max_batches, repeats=args.repeats)
  host_label = f"grain train pipeline, augmentation on the host, {args.threads} threads"
  rows[host_label] = pipeline_rate(data.train, host_aug, threads=args.threads, workers=0, **kw)
  if args.workers:
    rows[f"grain train pipeline, augmentation on the host, {args.workers} worker processes"] = (
      pipeline_rate(data.train, host_aug, threads=args.threads, workers=args.workers, **kw)
    )
  gather_label = (
    f"grain train pipeline, augmentation on the device: host part, {args.threads} threads"
  )
  rows[gather_label] = pipeline_rate(data.train, device_aug, threads=args.threads, workers=0, **kw)
  device_label = f"device augmentation alone (jitted, {jax.default_backend()}, batch {batch})"
  rows[device_label] = device_augment_rate(device_aug, batch=batch, size=size, repeats=args.repeats)
  vocab_size = len(data.encoder.vocab)
  if not args.no_step:
    rows[f"train step ({cfg.model.image.name} + {cfg.model.text.name}, batch {batch})"] = (
      train_step_rate(cfg, vocab_size=vocab_size, batch=batch, size=size, repeats=args.repeats)
    )
  if args.feed:
    fed = fed_rates(
      cfg,
      data.train,
      vocab_size=vocab_size,
      batch=batch,
      threads=args.threads,
      steps=args.feed,
      repeats=args.repeats,
    )
    for placement, rate in fed.items():
      rows[f"train step fed by the pipeline, augmentation on the {placement}"] = rate
  for label, rate in rows.items():
    print(f"{label:<76} {rate:10.0f} images/s", flush=True)
  step = [r for k, r in rows.items() if k.startswith("train step (")]
  chosen = rows[gather_label if where == "device" else host_label]
  if step:
    print(f"# pipeline ({where}) / train step: {chosen / step[0]:.1f}x (must be >= 5x)")
  print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
  if args.json:
    out = {
      "size": size,
      "batch": batch,
      "real": real,
      "backend": jax.default_backend(),
      "augment": {k: v for k, v in cfg.data.augment.items() if k != "word_swap"},
      "where": where,
      "host_images_per_s": round(chosen),
      "device_augment_images_per_s": round(rows[device_label]),
      "store_build_s": round(build_s, 1),
      "resident_load_s": round(resident_s, 1) if resident else None,
      "rows": {k: round(v) for k, v in rows.items()},
    }
    print(json.dumps(out))
  return rows


if __name__ == "__main__":
  main()
