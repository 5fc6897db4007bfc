"""jaxmm's real train step vs the same model in PyTorch eager, side by side on one machine.

jax side: `registry.build_model` + `optim.make_optimizer` + `steps.make_train_step` (what
`train.py` runs). torch side: the same architecture and sizes written in benchmarks/torch_models.py,
Adam, BCE-with-logits. Same batch (kept on the device for both), same image size, the same number
of threads (torch.set_num_threads = the cores XLA uses). Compilation and warm-up are excluded;
jax and torch take turns for each repeat (alternating who goes first) so background load hits both
alike, and steps/s is the median over repeats.

  python benchmarks/compare_torch.py                                 # all four models, CPU sizes
  python benchmarks/compare_torch.py --models bilstm --repeats 9 --json
  python benchmarks/compare_torch.py --models resnet18 --width 32 --batch 64 --json  # best.py
  python benchmarks/compare_torch.py --models resnet50_bilstm --image-size 224 --batch 256  # GPU
  python benchmarks/compare_torch.py --models bilstm --text-impl cudnn   # GPU: cuDNN LSTM

On a GPU: jax computes in bfloat16 (`model.dtype`), torch uses autocast(bfloat16) + channels_last.
`--json` prints, as the last line, a JSON list of {"model", "jax_steps_per_s", "torch_steps_per_s",
"ratio", "batch", "image_size", "device", "cpu_kernels"}; ratio = jax_steps_per_s /
torch_steps_per_s (medians); cpu_kernels: the kernels of jax's step on a CPU (None elsewhere).
The table also shows the median and quartiles of the per-repeat paired ratios and the process CPU
time per step of each side (less moved by other processes' load than wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

# jax would take 75 % of a GPU's memory at its first use; allocating as needed leaves torch's
# model, in this process, the rest.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from configs import default as default_config  # noqa: E402
from jaxmm import config as config_lib  # noqa: E402
from jaxmm import tasks  # noqa: E402
from jaxmm.data import comp5329  # noqa: E402
from jaxmm.models import registry  # noqa: E402
from jaxmm.train import cpu_kernels, optim, steps  # noqa: E402
from jaxmm.train import state as state_lib  # noqa: E402

# name -> (image tower, text tower, default batch)
MODELS = {
  "resnet18_bilstm": ("resnet18", "lstm", 32),
  "resnet50_bilstm": ("resnet50", "lstm", 32),
  "bilstm": (None, "lstm", 128),
  "bigru_attention": (None, "gru_attention", 128),
  "resnet18": ("resnet18", None, 32),  # image tower alone (diagnostic, not in the default list)
}
DEFAULT_MODELS = ("resnet18_bilstm", "resnet50_bilstm", "bilstm", "bigru_attention")


def machine_line() -> str:
  """Where and under what load the figures were taken."""
  dev = jax.devices()[0]
  return (
    f"jax {jax.__version__} on {dev.platform} ({dev.device_kind}), {os.cpu_count()} CPUs, "
    f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
  )


def num_threads() -> int:
  """Cores XLA:CPU's thread pool uses: the ones this process may run on."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def keep_heap_buffers() -> None:
  """glibc: serve large allocations from the heap, not a fresh mmap each (see text_towers.py)."""
  import ctypes

  libc = ctypes.CDLL("libc.so.6")
  libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
  libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD


def jax_config(name: str, args):
  image, text, _ = MODELS[name]
  c = default_config.get_config()
  m = c.model
  m.mode = "fused" if image and text else ("image" if image else "text")
  if image:
    m.image.update(name=image, stem="imagenet", num_filters=args.width, conv_impl="auto")
  if text:
    m.text.update(name=text, embed_dim=args.embed, hidden_size=args.hidden, dropout=0.0)
  if text == "lstm":
    m.text.update(num_layers=1, bidirectional=True, pooling="last", impl=args.text_impl)
  elif text:
    for k in ("num_layers", "pooling"):
      del m.text[k]
  m.head.update(hidden=(512,), dropout=0.2, feature_dropout=0.0, norm="")
  m.dtype = args.dtype
  c.optim.update(name="adam", lr=1e-3, schedule="constant", warmup_epochs=0.0)
  return c


def make_batch(name: str, batch: int, args, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  length = rng.integers(4, args.length + 1, size=batch).astype(np.int32)
  tokens = rng.integers(1, args.vocab, size=(batch, args.length)).astype(np.int32)
  tokens[np.arange(args.length)[None, :] >= length[:, None]] = 0
  out = {
    "tokens": tokens,
    "length": length,
    "labels": (rng.random((batch, comp5329.NUM_LABELS)) < 0.2).astype(np.float32),
  }
  if MODELS[name][0]:
    out["image"] = rng.integers(0, 256, (batch, args.image_size, args.image_size, 3), np.uint8)
  return out


class JaxRunner:
  """run(n): n steps of a jitted train step on one resident batch, blocking at the end; keeps the
  state between calls; returns the last loss."""

  def __init__(self, step, state, batch):
    self.step, self.state, self.batch = step, state, batch

  def __call__(self, n: int) -> float:
    state = self.state
    for _ in range(n):
      state, metrics = self.step(state, self.batch)
    jax.block_until_ready(metrics["loss"])
    self.state = state
    return float(metrics["loss"])


def jax_runner(name: str, batch_np: dict, args):
  """-> run(n): n train steps of jaxmm's real step, blocking at the end."""
  c = jax_config(name, args)
  model = registry.build_model(
    c.model, num_outputs=comp5329.NUM_LABELS, vocab_size=args.vocab, rngs=nnx.Rngs(0)
  )
  tx = optim.make_optimizer(
    c.optim, steps_per_epoch=100, total_steps=10**6, params=nnx.state(model, nnx.Param)
  )
  state = state_lib.from_model(model, tx)
  # One device, as torch gets one: the comparison is per device.
  task = tasks.make(config_lib.default_config())

  def make_step(kernels: str):
    return steps.make_train_step(task, seed=0, cpu_kernels=kernels)

  batch = jax.device_put(batch_np)
  # The CPU kernels train.py's default ('auto') would choose for this step, or the ones asked for.
  kernels = args.cpu_kernels
  if kernels == "auto":
    kernels, train_step = cpu_kernels.choose(make_step, state, batch)
  else:
    train_step = make_step(kernels)
  run = JaxRunner(train_step, state, batch)
  run.cpu_kernels = kernels if jax.default_backend() == "cpu" else None
  return run


def torch_runner(name: str, batch_np: dict, args, threads: int):
  import torch
  import torch_models

  image, text, _ = MODELS[name]
  return torch_models.train_runner(
    image,
    text,
    batch_np,
    vocab=args.vocab,
    embed=args.embed,
    hidden=args.hidden,
    width=args.width,
    cuda=torch.cuda.is_available() and jax.default_backend() == "gpu",
    threads=threads,
  )


def compare(name: str, args, threads: int) -> dict:
  batch = args.batch or MODELS[name][2]
  batch_np = make_batch(name, batch, args)
  runners = {
    "jax": jax_runner(name, batch_np, args),
    "torch": torch_runner(name, batch_np, args, threads),
  }
  for label, run in runners.items():
    t0 = time.perf_counter()
    loss = run(args.warmup)  # the first jax step compiles
    print(
      f"  {name}: {label} warm-up {time.perf_counter() - t0:.1f} s, loss {loss:.4f}",
      file=sys.stderr,
      flush=True,
    )
  rates, cpu_ms = ({k: [] for k in runners} for _ in range(2))
  for r in range(args.repeats):
    order = list(runners) if r % 2 == 0 else list(runners)[::-1]
    for label in order:
      t0, c0 = time.perf_counter(), time.process_time()
      runners[label](args.steps)
      rates[label].append(args.steps / (time.perf_counter() - t0))
      cpu_ms[label].append((time.process_time() - c0) / args.steps * 1e3)
      time.sleep(args.pause)  # lets torch's OpenMP workers stop spinning before jax runs
  jax_rate, torch_rate = (statistics.median(rates[k]) for k in ("jax", "torch"))
  # Each repeat times jax and torch back to back, under about the same background load: the
  # median of these paired ratios is the figure least moved by load drifting over the run.
  paired = sorted(j / t for j, t in zip(rates["jax"], rates["torch"]))
  dev = jax.devices()[0]
  return {
    "model": name,
    "jax_steps_per_s": round(jax_rate, 3),
    "torch_steps_per_s": round(torch_rate, 3),
    "ratio": round(jax_rate / torch_rate, 3),
    "batch": batch,
    "image_size": args.image_size if MODELS[name][0] else None,
    "device": f"{dev.platform} ({dev.device_kind})",
    "cpu_kernels": runners["jax"].cpu_kernels,
    "_spread": {k: (round(min(v), 2), round(max(v), 2)) for k, v in rates.items()},
    "_cpu_ms": {k: round(statistics.median(v)) for k, v in cpu_ms.items()},
    "_paired": (
      round(statistics.median(paired), 2),
      round(paired[len(paired) // 4], 2),
      round(paired[(3 * len(paired)) // 4], 2),
    ),
  }


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default=",".join(DEFAULT_MODELS), help=f"comma list of {list(MODELS)}")
  p.add_argument("--image-size", type=int, default=64)
  p.add_argument("--batch", type=int, default=0, help="0: 32 for image models, 128 for text ones")
  p.add_argument("--width", type=int, default=64, help="ResNet num_filters (64 = torchvision)")
  p.add_argument("--vocab", type=int, default=5000)
  p.add_argument("--embed", type=int, default=128)
  p.add_argument("--hidden", type=int, default=128)
  p.add_argument("--length", type=int, default=32)
  p.add_argument(
    "--dtype", default="auto", help="jax compute dtype: auto (bf16 on GPU), float32, bfloat16"
  )
  p.add_argument("--text-impl", default="fused", help="jax LSTM: fused | cudnn (NVIDIA GPU)")
  p.add_argument(
    "--cpu-kernels",
    default="auto",
    choices=["auto", "ynnpack", "eigen"],
    help="XLA:CPU's conv/matmul kernels; auto: the faster of a timed step each, as train.py",
  )
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--steps", type=int, default=5, help="steps per timed repeat")
  p.add_argument("--repeats", type=int, default=7)
  p.add_argument("--threads", type=int, default=0, help="torch threads (0: the cores XLA uses)")
  p.add_argument("--pause", type=float, default=0.2)
  p.add_argument(
    "--omp-wait-policy",
    default="PASSIVE",
    help="torch's OpenMP workers: PASSIVE sleep at barriers, the stable choice on a "
    "shared machine (spinning ones collapse under load); '' = libgomp default",
  )
  p.add_argument("--no-mmap", action="store_true", help="glibc keeps big buffers in the heap")
  p.add_argument("--json", action="store_true", help="print a JSON list as the last line")
  args = p.parse_args(argv)
  if args.no_mmap:
    keep_heap_buffers()
  if args.omp_wait_policy and "OMP_WAIT_POLICY" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy  # read when torch loads libgomp
  if args.dtype == "auto":
    args.dtype = "bfloat16" if jax.default_backend() == "gpu" else "float32"
  threads = args.threads or num_threads()
  names = args.models.split(",")
  unknown = [n for n in names if n not in MODELS]
  if unknown:
    raise SystemExit(f"unknown model(s) {unknown}; known: {list(MODELS)}")
  print(
    f"# {machine_line()}; torch threads {threads}, OMP_WAIT_POLICY="
    f"{os.environ.get('OMP_WAIT_POLICY', '')}; jax dtype {args.dtype}; median of "
    f"{args.repeats} x {args.steps} steps after {args.warmup} warm-up",
    flush=True,
  )
  rows = []
  for name in names:
    row = compare(name, args, threads)
    rows.append(row)
    print(
      f"{name:<16} batch {row['batch']:>4} img {row['image_size'] or '-':>4}  jax "
      f"{row['jax_steps_per_s']:7.2f}  torch {row['torch_steps_per_s']:7.2f} steps/s  ratio "
      f"{row['ratio']:.2f}x  (paired ratios median {row['_paired'][0]}, quartiles "
      f"{row['_paired'][1]}-{row['_paired'][2]}; min-max jax {row['_spread']['jax']}, torch "
      f"{row['_spread']['torch']}; CPU ms/step jax {row['_cpu_ms']['jax']}, torch "
      f"{row['_cpu_ms']['torch']})",
      flush=True,
    )
  print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
  if args.json:
    print(json.dumps([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]))
  return rows


if __name__ == "__main__":
  main()
