"""What each CPU optimisation of the train step buys: jaxmm's step with each one switched off.

  python benchmarks/cpu_step_ablation.py                      # resnet18_bilstm, 64 px, batch 32
  python benchmarks/cpu_step_ablation.py --model bilstm
  python benchmarks/cpu_step_ablation.py --model resnet18 --width 32 --batch 64   # best.py's tower

Variants (all traced in one process, timed in alternation, median of repeats):
  current      the library as it is
  xla_pool     the ResNet stem's max-pool through XLA's reduce-window (jaxmm.models.pool impl='xla')
  no_region    the step without XLA:CPU copy-insertion region analysis (steps.compiler_options)
  xla_1x1      1x1 convs through XLA's conv instead of the matmul path (conv.AUTO_POINTWISE)
  rgb3         the RGB stem conv over its 3 channels, not zero-padded to 4 (conv.AUTO_PAD_CHANNELS)
  nnx_bn       nnx.BatchNorm's autodiff instead of the hand-written backward (batchnorm.CPU_FAST)
  before       all five switched off: the step without any of these optimisations
Switches are applied while the step is traced (its first call), so they change only that variant.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import compare_torch  # noqa: E402

from jaxmm.models import batchnorm, conv, pool  # noqa: E402
from jaxmm.train import steps  # noqa: E402


@contextlib.contextmanager
def xla_pool():
  original = pool.max_pool

  def patched(*args, **kwargs):
    return original(*args, **{**kwargs, "impl": "xla"})

  pool.max_pool = patched
  try:
    yield
  finally:
    pool.max_pool = original


@contextlib.contextmanager
def no_region():
  saved = dict(steps._COMPILER_OPTIONS)
  steps._COMPILER_OPTIONS.clear()
  try:
    yield
  finally:
    steps._COMPILER_OPTIONS.update(saved)


@contextlib.contextmanager
def xla_1x1():
  conv.AUTO_POINTWISE = False
  try:
    yield
  finally:
    conv.AUTO_POINTWISE = True


@contextlib.contextmanager
def rgb3():
  saved = conv.AUTO_PAD_CHANNELS
  conv.AUTO_PAD_CHANNELS = 0
  try:
    yield
  finally:
    conv.AUTO_PAD_CHANNELS = saved


@contextlib.contextmanager
def nnx_bn():
  batchnorm.CPU_FAST = False
  try:
    yield
  finally:
    batchnorm.CPU_FAST = True


@contextlib.contextmanager
def before():
  with xla_pool(), no_region(), xla_1x1(), rgb3(), nnx_bn():
    yield


VARIANTS = {
  "current": contextlib.nullcontext,
  "xla_pool": xla_pool,
  "no_region": no_region,
  "xla_1x1": xla_1x1,
  "rgb3": rgb3,
  "nnx_bn": nnx_bn,
  "before": before,
}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="resnet18_bilstm", choices=list(compare_torch.MODELS))
  p.add_argument("--variants", default=",".join(VARIANTS))
  p.add_argument("--image-size", type=int, default=64)
  p.add_argument("--width", type=int, default=64, help="ResNet num_filters (best.py: 32)")
  p.add_argument("--batch", type=int, default=0, help="0: compare_torch's default for the model")
  p.add_argument(
    "--cpu-kernels",
    default="ynnpack",
    choices=["ynnpack", "eigen"],
    help="XLA:CPU's conv/matmul kernels, the same for every variant (jaxmm.train.cpu_kernels)",
  )
  p.add_argument("--repeats", type=int, default=9)
  p.add_argument("--steps", type=int, default=3)
  args = p.parse_args(argv)
  ns = argparse.Namespace(
    image_size=args.image_size,
    vocab=5000,
    embed=128,
    hidden=128,
    length=32,
    dtype="float32",
    width=args.width,
    text_impl="fused",
    cpu_kernels=args.cpu_kernels,  # the same kernels for every variant
  )
  batch_size = args.batch or compare_torch.MODELS[args.model][2]
  batch = compare_torch.make_batch(args.model, batch_size, ns)
  names = args.variants.split(",")
  runs = {}
  for name in names:
    with VARIANTS[name]():
      runs[name] = compare_torch.jax_runner(args.model, batch, ns)
      runs[name](2)  # traces and compiles under the switch
  rates, cpu = ({n: [] for n in names} for _ in range(2))
  for r in range(args.repeats):
    for name in names if r % 2 == 0 else names[::-1]:
      t0, c0 = time.perf_counter(), time.process_time()
      runs[name](args.steps)
      rates[name].append(args.steps / (time.perf_counter() - t0))
      cpu[name].append((time.process_time() - c0) / args.steps * 1e3)
  print(
    f"# {compare_torch.machine_line()}; {args.model}, median of {args.repeats} x {args.steps} steps"
  )
  for name in names:
    print(
      f"{name:<10} {statistics.median(rates[name]):6.2f} steps/s  "
      f"{statistics.median(cpu[name]):6.0f} CPU ms/step"
    )


if __name__ == "__main__":
  main()
