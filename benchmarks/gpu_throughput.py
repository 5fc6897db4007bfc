"""GPU throughput of jaxmm's real train step beside torch AMP, the cuDNN vs fused LSTM, and a full
epoch through jaxmm's input pipeline: one command, no data, no network.

  python benchmarks/gpu_throughput.py --json --out gpu_throughput.json   # GPU, all four parts
  python benchmarks/gpu_throughput.py --root ../shared/data/comp5329-dev --json  # real-data epoch
  python benchmarks/gpu_throughput.py --smoke --json     # CPU smoke run (tests/test_benchmarks.py)

1. step: images/s of `steps.make_train_step` (ResNet-50 + Bi-LSTM, fused, 224 px, bf16, batch
   256) on a batch already on the device, with the step's device augmentation (random-resized crop
   + h-flip) as training runs it.
2. torch: the same model in PyTorch (benchmarks/torch_models.py) on the same batch, Adam,
   autocast(bf16) + channels_last on a GPU, in a process of its own without jax, while this one
   keeps its GPU memory (jax allocates as needed here, XLA_PYTHON_CLIENT_PREALLOCATE=false,
   unless the environment says otherwise). torch does not augment, so `ratio_vs_torch` slightly
   favours torch (by FLOPs, the crop and flip of a 224 px batch are well under 1 % of a ResNet-50
   train step).
3. lstm: sequences/s of the text-only Bi-LSTM train step (batch --lstm-batch) with
   `model.text.impl='fused'` and 'cudnn' (jax.experimental.rnn; NVIDIA GPUs only: elsewhere its
   error is recorded), timed in turns; then torch's nn.LSTM (cuDNN on a GPU) as in 2.
4. epoch: one epoch through the real input path, timed end to end: grain gathers uint8 rows of the
   split (read into memory once, timed apart, as PreparedSplit.load_resident does) on --threads
   host threads (or --workers processes), batches go to the device while the previous step runs,
   the step of 1 crops, flips and trains. --where host puts the crop and flip back on the host
   threads (PIL). With --root the prepared store is built from the JPEGs first (timed apart);
   without it the split is --epoch-images random uint8 images in memory.
Targets on one H100/H200: >= 3,000 images/s for the step, >= 1.2x torch AMP, a 30k-image epoch in
<= 10 s. Each part that fails is recorded under "errors" and the others still run; a part that
would start after --budget-s seconds is skipped. With --out the JSON object is rewritten after each
part (what a timeout leaves is still there); with --json it is also the last line printed.

On a GPU machine without network access that has jax (CUDA), flax, optax, orbax and torch but not
grain or ml_collections, five wheels (4.4 MB) fetched where PyPI is reachable, into the git-ignored
.whl/, make up the difference; installed into a folder of their own, they touch nothing there:
  pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \\
    grain array-record cloudpickle portpicker ml-collections
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl   # there
  PYTHONPATH=/tmp/site python3 benchmarks/gpu_throughput.py --json --out gpu_throughput.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from types import SimpleNamespace

# jax would take 75 % of the GPU's memory at its first use; allocating as needed leaves the rest
# to torch's process (part 2): this step's buffers alone are ~32 GiB by XLA:CPU's analysis.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import compare_torch  # noqa: E402
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
  """The fused model compare_torch.py measures (and torch_models.py mirrors), on the train path."""
  c = default_config.get_config()
  c.model.mode = "fused"
  c.model.dtype = args.dtype
  c.model.image.update(name=args.image, stem="imagenet", num_filters=args.width, conv_impl="auto")
  if args.smoke:  # one residual stage: every layer kind, compiled in seconds
    c.model.image.stage_sizes = (1,)
  c.model.text.update(
    name="lstm",
    embed_dim=args.text_width,
    hidden_size=args.text_width,
    num_layers=1,
    bidirectional=True,
    pooling="last",
    dropout=0.0,
  )
  c.model.head.update(hidden=(512,), dropout=0.2, feature_dropout=0.0, norm="")
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


def timed_in_turns(runners: dict, args, errors: dict, prefix: str) -> dict[str, float]:
  """-> steps/s (median over repeats) of each runner after its warm-up; the runners take turns
  each repeat, who goes first alternating, so drifting load meets all alike. A runner other than
  the first that fails its warm-up is dropped, its error put in `errors[prefix + name]`."""
  runners = dict(runners)
  for i, (name, run) in enumerate(list(runners.items())):
    t0 = time.perf_counter()
    try:
      loss = run(args.warmup)  # a jax step compiles here
      if not np.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {loss}")
    except Exception as err:
      if i == 0:
        raise
      errors[f"{prefix}{name}"] = f"{type(err).__name__}: {err}"[:500]
      del runners[name]
      continue
    print(f"  {name} warm-up {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
  rates = {k: [] for k in runners}
  for r in range(args.repeats):
    for name in list(runners)[:: 1 if r % 2 == 0 else -1]:
      t0 = time.perf_counter()
      runners[name](args.steps)
      rates[name].append(args.steps / (time.perf_counter() - t0))
  return {k: statistics.median(v) for k, v in rates.items()}


def torch_rate(image: str | None, batch_np: dict, args, tmp: str) -> dict:
  """torch's train steps/s of the same model on the same batch, timed by benchmarks/torch_models.py
  in a process of its own (no jax there: the two frameworks' CUDA libraries never share a process,
  and a crash there cannot take jax's figures with it)."""
  path = os.path.join(tmp, f"torch_batch_{image or 'text'}.npz")
  np.savez(path, **{k: v for k, v in batch_np.items() if k != "index"})
  cmd = [
    sys.executable,
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_models.py"),
    f"--batch-npz={path}",
    f"--image={image or ''}",
    "--text=lstm",
    f"--vocab={args.vocab}",
    f"--embed={args.text_width}",
    f"--hidden={args.text_width}",
    f"--width={args.width}",
    f"--warmup={args.warmup}",
    f"--steps={args.steps}",
    f"--repeats={args.repeats}",
    "--json",
  ]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.torch_timeout_s)
  sys.stderr.write(proc.stderr[-2000:])
  if proc.returncode != 0:
    raise RuntimeError(f"torch_models.py exited {proc.returncode}: {proc.stderr[-400:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


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


def lstm_rates(args, errors: dict) -> tuple[dict[str, float], dict]:
  """-> (sequences/s of the text-only Bi-LSTM train step with the fused and the cuDNN layer,
  timed in turns; the batch)."""
  opts = SimpleNamespace(
    vocab=args.vocab,
    embed=args.text_width,
    hidden=args.text_width,
    width=args.width,
    length=args.length,
    image_size=args.size,
    dtype=args.dtype,
    cpu_kernels="ynnpack",  # XLA's default; the choice matters for convs, not this LSTM
  )
  batch_np = compare_torch.make_batch("bilstm", args.lstm_batch, opts)
  runners = {}
  for impl in ("fused", "cudnn"):  # cuDNN off an NVIDIA GPU: its error is recorded, not a rate
    runners[impl] = compare_torch.jax_runner(
      "bilstm", batch_np, SimpleNamespace(**vars(opts), text_impl=impl)
    )
  rates = timed_in_turns(runners, args, errors, "lstm_")
  return {k: v * args.lstm_batch for k, v in rates.items()}, batch_np


def memory_analysis(c, vocab: int) -> dict[str, float]:
  """XLA's buffer sizes (MiB) for the train step compiled on this backend."""
  step, state = build_step(c, vocab)
  m = step.lower(state, random_batch(c, vocab, np.random.default_rng(0))).compile()
  m = m.memory_analysis()
  names = ("temp", "argument", "output", "alias")
  return {f"{k}_mib": round(getattr(m, f"{k}_size_in_bytes") / 2**20, 1) for k in names}


def real_split(c, root: str, cache_dir: str, out: dict) -> tuple[pipeline.PreparedSplit, int]:
  """-> (the prepared store of every labelled record under `root`, built from its JPEGs (timed);
  its vocabulary size)."""
  c.data.update(root=root, cache_dir=cache_dir, split="last", val_size=0)
  t0 = time.perf_counter()
  data = datasets.prepare_comp5329(c.data, None)
  out["cache_build_s"] = round(time.perf_counter() - t0, 1)
  print(f"cache build: {out['cache_build_s']} s for {len(data.train)} images", flush=True)
  return data.train, len(data.encoder.vocab)


def measure_step(c, vocab: int, args, out: dict):
  """Part 1: jaxmm's step -> (the compiled step, its state, the batch)."""
  step, state = build_step(c, vocab)  # one model, compiled once, for the step and the epoch
  batch_np = random_batch(c, vocab, np.random.default_rng(0))
  run = compare_torch.JaxRunner(step, state, jax.device_put(batch_np))
  rate = timed_in_turns({"jaxmm": run}, args, out["errors"], "step_")["jaxmm"]
  out["step_images_per_s"] = round(rate * args.batch, 1)
  stats = jax.devices()[0].memory_stats() or {}  # None on CPU
  if "peak_bytes_in_use" in stats:
    out["step_peak_mib"] = round(stats["peak_bytes_in_use"] / 2**20, 1)
  print(f"train step: jaxmm {out['step_images_per_s']:.0f} images/s", flush=True)
  return step, run.state, batch_np


def measure_epoch(c, split, step, state, args, out: dict) -> None:
  """Part 4: one epoch of `split` through grain and the step."""
  t0 = time.perf_counter()
  if split.load_resident(args.threads):
    out["resident_load_s"] = round(time.perf_counter() - t0, 1)
  secs, n = epoch_time(c, split, step, state, args)
  out.update(epoch_s=round(secs, 2), epoch_images=n, epoch_images_per_s=round(n / secs, 1))
  print(f"epoch: {n} images in {secs:.1f} s ({n / secs:.0f} images/s, loading included)")


def measure_lstm(args, out: dict) -> dict:
  """Part 3: the Bi-LSTM's train step, fused vs cuDNN -> its batch."""
  out["lstm_batch"] = args.lstm_batch
  rates, batch_np = lstm_rates(args, out["errors"])
  for k, v in rates.items():
    out[f"lstm_{k}_sequences_per_s"] = round(v, 1)
  print("Bi-LSTM: " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()) + " sequences/s")
  return batch_np


def measure_torch(key: str, image: str | None, batch_np: dict, per_step: int, args, out: dict):
  """Part 2, and the end of part 3: torch's rate on the batch of part `key` ('step': ResNet +
  Bi-LSTM, 'lstm': Bi-LSTM alone); a failure is recorded under errors['torch_' + key]."""
  try:
    with tempfile.TemporaryDirectory(prefix="jaxmm_torch_") as tmp:
      res = torch_rate(image, batch_np, args, tmp)
  except Exception as err:
    out["errors"][f"torch_{key}"] = f"{type(err).__name__}: {err}"[:500]
    return
  out.update(torch=res["torch"], torch_amp_bf16=res["amp_bf16"])  # False: float32 on CPU
  rate = round(res["steps_per_s"] * per_step, 1)
  if key == "step":
    out["torch_amp_images_per_s"] = rate
    out["ratio_vs_torch"] = round(out["step_images_per_s"] / rate, 3)
    print(f"torch: {rate:.0f} images/s (jaxmm {out['ratio_vs_torch']:.2f}x)", flush=True)
  else:
    out["lstm_torch_sequences_per_s"] = rate
    print(f"torch Bi-LSTM: {rate:.0f} sequences/s", flush=True)


class Report:
  """The result object: parts add keys; rewritten to --out after each part."""

  def __init__(self, path: str, **fields):
    self.path, self.out, self.t0 = path, dict(fields, errors={}, skipped=[]), time.perf_counter()

  def elapsed(self) -> float:
    return time.perf_counter() - self.t0

  @contextlib.contextmanager
  def part(self, name: str, budget_s: float, ready: bool = True):
    """-> whether to run the part: not when past the budget or not `ready` (an earlier part it
    needs did not finish); then it is listed under "skipped". An exception in the part is
    recorded under "errors", not raised: the next part still runs."""
    run = ready and self.elapsed() <= budget_s
    if not run:
      self.out["skipped"].append(name)
      why = f"{self.elapsed():.0f} s > budget {budget_s:.0f} s" if ready else "no train step"
      print(f"{name}: skipped ({why})", flush=True)
    try:
      yield run
    except Exception as err:
      self.out["errors"][name] = f"{type(err).__name__}: {err}"[:500]
      traceback.print_exc()
    finally:
      self.save()

  def save(self):
    self.out["wall_s"] = round(self.elapsed(), 1)
    if self.path:
      tmp = self.path + ".tmp"
      with open(tmp, "w") as f:
        json.dump(self.out, f, indent=1)
      os.replace(tmp, self.path)


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
  p.add_argument("--lstm-batch", type=int, default=256)
  p.add_argument("--no-torch", action="store_true", help="jaxmm alone")
  p.add_argument("--torch-timeout-s", type=float, default=150.0, help="per torch model")
  p.add_argument("--no-epoch", action="store_true")
  p.add_argument("--no-lstm", action="store_true")
  p.add_argument("--budget-s", type=float, default=300.0, help="start no part after this")
  p.add_argument("--out", default="", help="JSON file, rewritten after each part")
  p.add_argument(
    "--memory-analysis",
    action="store_true",
    help="only compile the step and print XLA's memory analysis of it (MiB)",
  )
  p.add_argument("--smoke", "--tiny", action="store_true", help="CPU smoke sizes, seconds")
  p.add_argument("--json", action="store_true")
  args = p.parse_args(argv)
  if args.smoke:
    args.image, args.width, args.text_width, args.size, args.batch = "resnet18", 8, 16, 32, 8
    args.length, args.vocab, args.warmup, args.steps, args.repeats = 8, 50, 1, 2, 1
    args.epoch_images, args.threads, args.lstm_batch = 48, 2, 8
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
  report = Report(
    args.out,
    device=f"{dev.platform} ({dev.device_kind})",
    jax=jax.__version__,
    image=args.image,
    size=args.size,
    batch=args.batch,
    dtype=args.dtype,
    augment_where=args.where,
  )
  out = report.out
  if args.memory_analysis:
    out.update(memory_analysis(c, args.vocab))
    print(json.dumps(out) if args.json else out)
    return out
  with tempfile.TemporaryDirectory(prefix="jaxmm_gpu_") as tmp:
    split, vocab, trained = None, args.vocab, None
    if args.root and not args.no_epoch:
      with report.part("cache", args.budget_s) as run:
        if run:
          split, vocab = real_split(c, args.root, os.path.join(tmp, "cache"), out)
    with report.part("step", args.budget_s) as run:
      if run:
        step, state, step_batch = measure_step(c, vocab, args, out)
        trained = (step, state)
    if not args.no_torch:
      with report.part("torch", args.budget_s, ready=trained is not None) as run:
        if run:
          measure_torch("step", args.image, step_batch, args.batch, args, out)
    if not args.no_lstm:
      with report.part("lstm", args.budget_s) as run:
        if run:
          lstm_batch = measure_lstm(args, out)
          if not args.no_torch:
            measure_torch("lstm", None, lstm_batch, args.lstm_batch, args, out)
    if not args.no_epoch:
      with report.part("epoch", args.budget_s, ready=trained is not None) as run:
        if run:
          measure_epoch(
            c, split or synthetic_split(c, args.epoch_images, vocab), *trained, args, out
          )
  report.save()
  if args.json:
    print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
