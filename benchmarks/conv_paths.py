"""ResNet-18 train-step speed per conv path, to pick the 'auto' rule.

Times a jitted train step (forward + backward + Adam update, batch 32, a
linear 10-way softmax head on the tower) for image sizes x stems x
conv_impl, and prints steps/s as the median over repeats after warm-up.

  python benchmarks/conv_paths.py            # 32/64/96 px, both stems, 3 impls
  python benchmarks/conv_paths.py --quick    # 32/64 px, fewer repeats
  python benchmarks/conv_paths.py --sizes 64 --stems small --impls xla,auto
  python benchmarks/conv_paths.py --impls auto:16,auto:64   # try thresholds
  python benchmarks/conv_paths.py --per-conv  # single 3x3 convs, both paths

On a shared CPU the numbers are noisy: compare medians, not single runs.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from jaxmm.models import conv  # noqa: E402
from jaxmm.models.resnet import resnet_by_name  # noqa: E402


class _Classifier(nnx.Module):
  """Tower + linear head, just enough for a realistic train step."""

  def __init__(self, tower: nnx.Module, num_classes: int, *, rngs: nnx.Rngs):
    self.tower = tower
    self.head = nnx.Linear(tower.out_features, num_classes, rngs=rngs)

  def __call__(self, images_BxHxWxC: jax.Array) -> jax.Array:
    return self.head(self.tower.encode(images_BxHxWxC))


def make_step(model: nnx.Module, tx: optax.GradientTransformation):
  """Returns (step, state); step(state, images, labels) -> (state, loss)."""
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))

  # jax.jit over split/merge: no per-call graph traversal (DESIGN.md §4).
  @functools.partial(jax.jit, donate_argnums=0)
  def step(state, images_BxHxWxC, labels_B):
    model, optimizer = nnx.merge(graphdef, state)

    def loss_fn(model):
      logits_BxK = model(images_BxHxWxC)
      return optax.softmax_cross_entropy_with_integer_labels(logits_BxK, labels_B).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), loss

  return step, state


def build_config(arch: str, size: int, stem: str, impl: str, *, batch: int, max_hw: int | None):
  """Returns (step, state, images, labels) for one configuration.

  impl: 'xla' | 'im2col' | 'auto' | 'auto:N' ('auto' with max_hw=N).
  """
  if impl.startswith("auto:"):
    impl, max_hw = "auto", int(impl.split(":")[1])
  tower = resnet_by_name(arch)(stem=stem, conv_impl=impl, rngs=nnx.Rngs(0))
  if impl == "auto" and max_hw is not None:
    # The conv fn is a static attribute of each nnx.Conv: swap it in place.
    fn = conv.make_conv_fn("auto", max_hw=max_hw)
    for _, m in nnx.iter_graph(tower):
      if isinstance(m, nnx.Conv):
        m.conv_general_dilated = fn
  model = _Classifier(tower, 10, rngs=nnx.Rngs(1))
  model.train()
  step, state = make_step(model, optax.adam(1e-3))
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(batch, size, size, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 10, size=(batch,)), jnp.int32)
  return step, state, images, labels


def time_impls(
  arch: str,
  size: int,
  stem: str,
  impls: list[str],
  *,
  batch: int,
  warmup: int,
  repeats: int,
  max_hw: int | None,
) -> list[dict]:
  """Times all impls of one (size, stem), interleaving their repeats.

  Round-robin timing spreads the load of a shared machine evenly over the
  impls being compared, which matters more than the absolute numbers.
  """
  runs, compile_s = {}, {}
  for impl in impls:
    step, state, images, labels = build_config(arch, size, stem, impl, batch=batch, max_hw=max_hw)
    t0 = time.perf_counter()
    state, loss = step(state, images, labels)
    loss.block_until_ready()
    compile_s[impl] = time.perf_counter() - t0
    for _ in range(warmup - 1):
      state, loss = step(state, images, labels)
    loss.block_until_ready()
    runs[impl] = [step, state, images, labels]
  times = {impl: [] for impl in impls}
  for _ in range(repeats):
    for impl in impls:
      step, state, images, labels = runs[impl]
      t0 = time.perf_counter()
      state, loss = step(state, images, labels)
      loss.block_until_ready()
      times[impl].append(time.perf_counter() - t0)
      runs[impl][1] = state
      if not np.isfinite(float(loss)):
        raise FloatingPointError(f"non-finite loss: {arch} {size} {stem} {impl}")
  rows = []
  for impl in impls:
    med = statistics.median(times[impl])
    rows.append(
      dict(
        arch=arch,
        size=size,
        stem=stem,
        impl=impl,
        batch=batch,
        steps_per_s=1.0 / med,
        median_ms=med * 1e3,
        min_ms=min(times[impl]) * 1e3,
        max_ms=max(times[impl]) * 1e3,
        compile_s=compile_s[impl],
        repeats=repeats,
      )
    )
  return rows


# (channels, map side) of ResNet-18's 3x3 stride-1 convs at 32-128 px across
# both stems: layer1..layer4 have 64..512 channels.
_PER_CONV_SHAPES = [
  (64, 8),
  (64, 16),
  (64, 32),
  (128, 4),
  (128, 8),
  (128, 16),
  (256, 2),
  (256, 4),
  (256, 8),
  (512, 1),
  (512, 2),
  (512, 3),
  (512, 4),
]


def time_per_conv(batch: int, repeats: int) -> None:
  """fwd+bwd of single 3x3/1 convs, XLA vs im2col, interleaved repeats."""
  dn = ("NHWC", "HWIO", "NHWC")
  print(f"# per-conv 3x3/1 SAME fwd+bwd, batch {batch}, median of {repeats}")
  print(f"{'C':>4} {'HxW':>6} {'xla_ms':>8} {'im2col_ms':>9} {'xla/im2col':>10}", flush=True)
  rng = np.random.default_rng(0)
  for c, side in _PER_CONV_SHAPES:
    lhs = jnp.asarray(rng.normal(size=(batch, side, side, c)), jnp.float32)
    rhs = jnp.asarray(0.05 * rng.normal(size=(3, 3, c, c)), jnp.float32)
    fns = {}
    for name, fn in (("xla", jax.lax.conv_general_dilated), ("im2col", conv.im2col_conv)):

      def loss(lhs, rhs, fn=fn):
        y = fn(lhs, rhs, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn)
        return jnp.sum(y * y)

      fns[name] = jax.jit(jax.grad(loss, (0, 1)))
      jax.block_until_ready(fns[name](lhs, rhs))
    times = {name: [] for name in fns}
    for _ in range(repeats):
      for name, f in fns.items():
        t0 = time.perf_counter()
        jax.block_until_ready(f(lhs, rhs))
        times[name].append(time.perf_counter() - t0)
    xla, i2c = (statistics.median(times[n]) * 1e3 for n in ("xla", "im2col"))
    print(f"{c:>4} {f'{side}x{side}':>6} {xla:>8.1f} {i2c:>9.1f} {xla / i2c:>10.2f}", flush=True)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--arch", default="resnet18")
  p.add_argument("--sizes", default="32,64,96")
  p.add_argument("--stems", default="imagenet,small")
  p.add_argument(
    "--impls", default="xla,im2col,auto", help="comma list of xla, im2col, auto, auto:N (max_hw=N)"
  )
  p.add_argument("--batch", type=int, default=32)
  p.add_argument(
    "--warmup", type=int, default=2, help="steps before timing, the first one compiles"
  )
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument(
    "--max-hw", type=int, default=None, help="override conv.AUTO_MAX_HW for impl 'auto'"
  )
  p.add_argument("--quick", action="store_true", help="sizes 32,64 and 3 repeats")
  p.add_argument("--json", default=None, help="also append rows as JSONL")
  p.add_argument(
    "--per-conv", action="store_true", help="time single 3x3 convs (XLA vs im2col) instead"
  )
  args = p.parse_args(argv)
  if args.quick:
    args.sizes, args.repeats = "32,64", 3
  if args.per_conv:
    time_per_conv(args.batch, args.repeats)
    return

  print(
    f"# backend={jax.default_backend()} devices={jax.devices()} "
    f"jax={jax.__version__} auto_max_hw="
    f"{args.max_hw if args.max_hw is not None else conv.AUTO_MAX_HW}"
  )
  print(
    f"# {args.arch} train step (fwd+bwd+Adam), batch {args.batch}, "
    f"median of {args.repeats} interleaved repeats after {args.warmup} "
    "warm-up steps"
  )
  header = (
    f"{'size':>4} {'stem':>8} {'impl':>9} {'steps/s':>8} "
    f"{'median_ms':>9} {'min_ms':>8} {'max_ms':>8} {'compile_s':>9}"
  )
  print(header, flush=True)
  for size in (int(s) for s in args.sizes.split(",")):
    for stem in args.stems.split(","):
      rows = time_impls(
        args.arch,
        size,
        stem,
        args.impls.split(","),
        batch=args.batch,
        warmup=args.warmup,
        repeats=args.repeats,
        max_hw=args.max_hw,
      )
      for row in rows:
        print(
          f"{row['size']:>4} {row['stem']:>8} {row['impl']:>9} "
          f"{row['steps_per_s']:>8.2f} "
          f"{row['median_ms']:>9.0f} {row['min_ms']:>8.0f} "
          f"{row['max_ms']:>8.0f} {row['compile_s']:>9.1f}",
          flush=True,
        )
        if args.json:
          with open(args.json, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
  main()
