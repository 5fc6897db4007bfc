"""GPU throughput of jaxmm's real train step, and a full epoch fed from the prepared image cache.

  python benchmarks/gpu_throughput.py                    # GPU: ResNet-50 + Bi-LSTM, 224 px, bf16
  python benchmarks/gpu_throughput.py --root ../shared/data/comp5329-dev   # epoch of real data
  python benchmarks/gpu_throughput.py --smoke            # CPU smoke run (tests/test_benchmarks.py)

1. step: images/s of `steps.make_train_step` on a batch already on the device (upper bound), with
   the step's device augmentation (random-resized crop + h-flip) as training runs it.
2. epoch: one epoch through the real input path, timed end to end: grain gathers uint8 rows of the
   split (read into memory once, timed apart, as PreparedSplit.load_resident does) on --threads
   host threads (or --workers processes), batches go to the device while the previous step runs
   (jax dispatch is asynchronous), the step crops, flips and trains. --where host puts the crop
   and flip back on the host threads (PIL) for comparison. With --root the prepared store is built
   from the JPEGs first (timed separately); without it (no data, no network) the split is
   --epoch-images random uint8 images in memory.
Targets on one H100-class GPU: >= 3,000 images/s for the step, a 30k-image epoch in <= 10 s.
The last line is one JSON object (with --json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from configs import default as default_config  # noqa: E402
from jaxmm import config as config_lib  # noqa: E402
from jaxmm import tasks  # noqa: E402
from jaxmm.data import comp5329, datasets, pipeline  # noqa: E402
from jaxmm.models import registry  # noqa: E402
from jaxmm.train import optim, steps  # noqa: E402
from jaxmm.train import state as state_lib  # noqa: E402


def make_config(args):
  c = default_config.get_config()
  c.model.mode = "fused"
  c.model.dtype = args.dtype
  c.model.image.update(name=args.image, stem="imagenet", num_filters=args.width)
  if args.smoke:  # one residual stage: every layer kind, compiled in seconds
    c.model.image.stage_sizes = (1,)
  c.model.text.update(
    name="lstm", embed_dim=args.text_width, hidden_size=args.text_width, pooling="last", dropout=0.0
  )
  c.model.head.update(hidden=(512,), dropout=0.2)
  c.optim.update(name="adam", lr=1e-3, schedule="constant", warmup_epochs=0.0)
  c.data.update(
    image_size=args.size,
    max_len=args.length,
    num_threads=args.threads,
    num_workers=args.workers,
    augment=dict(crop=True, hflip=True, vflip=False, crop_scale=(0.6, 1.0), where=args.where),
  )
  c.train.batch_size = args.batch
  return c


def build_step(c, vocab_size: int):
  """(the jitted train step with the config's device augmentation, if placed there; its state)."""
  model = registry.build_model(
    c.model, num_outputs=comp5329.NUM_LABELS, vocab_size=vocab_size, rngs=nnx.Rngs(0)
  )
  tx = optim.make_optimizer(c.optim, steps_per_epoch=100, total_steps=10**6)
  state = state_lib.from_model(model, tx)
  augment = pipeline.device_augmentation(pipeline.AugmentConfig.from_config(c.data))
  task = tasks.make(config_lib.default_config())
  return steps.make_train_step(task, seed=0, augment=augment), state


def random_batch(c, vocab_size: int, rng) -> dict[str, np.ndarray]:
  b, t, s = c.train.batch_size, c.data.max_len, c.data.image_size
  length = rng.integers(1, t + 1, b).astype(np.int32)
  tokens = np.where(np.arange(t)[None] < length[:, None], rng.integers(1, vocab_size, (b, t)), 0)
  return {
    "image": rng.integers(0, 256, (b, s, s, 3), np.uint8),
    "tokens": tokens.astype(np.int32),
    "length": length,
    "labels": (rng.random((b, comp5329.NUM_LABELS)) < 0.2).astype(np.float32),
    "index": np.arange(b, dtype=np.int32),
  }  # grain batches carry it: same jit signature


def step_rate(c, step, state, vocab_size: int, args):
  """-> (images/s of the train step alone, batch resident on the device; the state)."""
  batch = jax.device_put(random_batch(c, vocab_size, np.random.default_rng(0)))
  t0 = time.perf_counter()
  for _ in range(args.warmup):
    state, m = step(state, batch)
  jax.block_until_ready(m["loss"])
  print(f"  step warm-up (compile) {time.perf_counter() - t0:.1f} s", file=sys.stderr)
  rates = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    for _ in range(args.steps):
      state, m = step(state, batch)
    jax.block_until_ready(m["loss"])
    rates.append(args.steps * c.train.batch_size / (time.perf_counter() - t0))
  if not np.isfinite(float(m["loss"])):
    raise FloatingPointError("non-finite loss")
  return statistics.median(rates), state


def synthetic_split(c, n: int, vocab_size: int) -> pipeline.PreparedSplit:
  """n random uint8 images in memory (what a prepared split is once read), with tokens/labels."""
  s = c.data.image_size
  images = np.empty((n, s, s, 3), np.uint8)
  rng = np.random.default_rng(0)
  for i in range(0, n, 1024):  # chunked: a 30k x 224 px split is 4.5 GB
    images[i : i + 1024] = rng.integers(0, 256, images[i : i + 1024].shape, np.uint8)
  arrays = random_batch(c, vocab_size, rng)
  arrays = {
    k: np.resize(v, (n,) + v.shape[1:]) for k, v in arrays.items() if k not in ("image", "index")
  }
  return pipeline.PreparedSplit(
    ids=[str(i) for i in range(n)],
    image_cache=images,
    image_index=np.arange(n, dtype=np.int64),
    arrays=arrays,
  )


def epoch_time(c, split, step, state, args) -> tuple[float, int]:
  """Seconds for one epoch of `split` through grain + the (compiled) train step."""
  augment = pipeline.AugmentConfig.from_config(c.data)
  warm = next(iter(pipeline.train_dataset(split, batch_size=c.train.batch_size, seed=1, epoch=0)))
  state, m = step(state, warm)  # any retrace for the loader's dtypes happens outside the timing
  jax.block_until_ready(m["loss"])
  ds = pipeline.train_dataset(
    split, batch_size=c.train.batch_size, seed=0, epoch=0, augment=augment
  )
  t0, n = time.perf_counter(), 0
  for batch in pipeline.iterate(
    ds, num_threads=args.threads, num_workers=args.workers, prefetch=args.prefetch
  ):
    state, m = step(state, batch)
    n += c.train.batch_size
  jax.block_until_ready(m["loss"])
  return time.perf_counter() - t0, n


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--image", default="resnet50")
  p.add_argument("--width", type=int, default=64, help="ResNet num_filters")
  p.add_argument("--text-width", type=int, default=128, help="Bi-LSTM embedding and hidden size")
  p.add_argument("--size", type=int, default=224)
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--length", type=int, default=32)
  p.add_argument("--vocab", type=int, default=5000)
  p.add_argument("--dtype", default="auto", help="auto: bfloat16 on a GPU, float32 on CPU")
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--root", default="", help="COMP5329 folder for a real-data epoch")
  p.add_argument("--epoch-images", type=int, default=30000, help="synthetic epoch size")
  p.add_argument("--threads", type=int, default=os.cpu_count())
  p.add_argument("--workers", type=int, default=0)
  p.add_argument("--prefetch", type=int, default=8)
  p.add_argument(
    "--where", default="device", choices=("device", "host"), help="where crop + flip run"
  )
  p.add_argument("--no-epoch", action="store_true")
  p.add_argument("--smoke", "--tiny", action="store_true", help="CPU smoke sizes, seconds")
  p.add_argument("--json", action="store_true")
  args = p.parse_args(argv)
  if args.smoke:
    args.image, args.width, args.text_width, args.size, args.batch = "resnet18", 8, 16, 32, 8
    args.length, args.vocab, args.warmup, args.steps, args.repeats = 8, 50, 1, 2, 1
    args.epoch_images, args.threads = 48, 2
  if args.dtype == "auto":
    args.dtype = "bfloat16" if jax.default_backend() == "gpu" else "float32"
  c = make_config(args)
  dev = jax.devices()[0]
  print(
    f"# jax {jax.__version__}, {dev.platform} ({dev.device_kind}) x{jax.device_count()}, "
    f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; {args.image} + Bi-LSTM, "
    f"{args.size} px, batch {args.batch}, {args.dtype}",
    flush=True,
  )
  out = {
    "device": f"{dev.platform} ({dev.device_kind})",
    "image": args.image,
    "size": args.size,
    "batch": args.batch,
    "dtype": args.dtype,
    "augment_where": args.where,
  }
  with tempfile.TemporaryDirectory(prefix="jaxmm_gpu_") as tmp:
    split, vocab = None, args.vocab
    if args.root and not args.no_epoch:
      c.data.update(root=args.root, cache_dir=os.path.join(tmp, "cache"), split="last", val_size=0)
      t0 = time.perf_counter()
      data = datasets.prepare_comp5329(c.data, None)
      out["cache_build_s"] = round(time.perf_counter() - t0, 1)
      split, vocab = data.train, len(data.encoder.vocab)
      print(f"cache build: {out['cache_build_s']} s for {len(split)} images", flush=True)
    step, state = build_step(c, vocab)  # one model, compiled once, for both measurements
    rate, state = step_rate(c, step, state, vocab, args)
    out["step_images_per_s"] = round(rate, 1)
    print(f"train step: {rate:.0f} images/s", flush=True)
    if not args.no_epoch:
      if split is None:
        split = synthetic_split(c, args.epoch_images, vocab)
      t0 = time.perf_counter()
      if split.load_resident(args.threads):
        out["resident_load_s"] = round(time.perf_counter() - t0, 1)
      secs, n = epoch_time(c, split, step, state, args)
      out.update(epoch_s=round(secs, 2), epoch_images=n, epoch_images_per_s=round(n / secs, 1))
      print(
        f"epoch: {n} images in {secs:.1f} s ({n / secs:.0f} images/s, loading included)", flush=True
      )
  if args.json:
    print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
