"""Train-step speed per conv path at the shipped configs' image-tower shapes, to set 'auto''s rule.

Times a jitted train step (forward + backward + Adam update, a linear head on the tower's
features, softmax CE; the autoencoder adds its reconstruction loss) of each shipped config's image
tower at its image size, width and batch, for each conv_impl, and prints steps/s as the median over
interleaved repeats after warm-up. Configs that share a tower shape are timed once.

  python benchmarks/conv_paths.py                        # every shipped config, xla/im2col/auto
  python benchmarks/conv_paths.py --configs best,demo --impls im2col,auto --repeats 9
  python benchmarks/conv_paths.py --configs best --impls auto,auto:64   # try thresholds
  python benchmarks/conv_paths.py --per-conv             # single 3x3 convs, both paths

On a GPU, 'auto' is XLA's conv at every shape (jaxmm.models.conv.choose_path); this sweep is the
CPU's. On a shared CPU the numbers are noisy: compare medians (and the CPU ms column), not single
runs.
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


def make_step(model: nnx.Module, tx: optax.GradientTransformation):
  """Returns (step, state); step(state, images, labels) -> (state, loss)."""
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))

  # jax.jit over split/merge: no per-call graph traversal (DESIGN.md §4).
  @functools.partial(jax.jit, donate_argnums=0)
  def step(state, images_BxHxWxC, labels_B):
    model, optimizer = nnx.merge(graphdef, state)

    def loss_fn(model):
      logits_BxK, extra = model(images_BxHxWxC)
      return optax.softmax_cross_entropy_with_integer_labels(logits_BxK, labels_B).mean() + extra

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), loss

  return step, state


SHIPPED = (
  "best",
  "demo",
  "s0_ae_lstm",
  "s1_bingi",
  "s2_xu",
  "s3_ren",
  "s4_liu",
  "best_gpu",
  "comp5329_dev",
  "s0_best",
  "s0_cnn_mlp",
  "s0_matching",
  "pretrain_rotation",
  "pretrain_autoencoder",
)


def tower_shapes(names: list[str]) -> dict[str, tuple]:
  """{config name: (image tower config, image size, batch)}, one config per distinct shape."""
  from jaxmm import config as config_lib

  root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
  shapes, seen = {}, set()
  for name in names:
    c = config_lib.load_config_file(os.path.join(root, f"{name}.py"))
    if c.model.mode == "text":
      continue
    tower = json.dumps(c.model.image.to_dict(), sort_keys=True)
    key = (tower, c.data.image_size, c.train.batch_size)
    if key not in seen:
      seen.add(key)
      shapes[name] = (c.model.image, c.data.image_size, c.train.batch_size)
  return shapes


class _Classifier(nnx.Module):
  """Tower + linear head (+ the reconstruction loss of an autoencoder tower)."""

  def __init__(self, tower: nnx.Module, num_classes: int, *, rngs: nnx.Rngs):
    self.tower = tower
    self.head = nnx.Linear(tower.out_features, num_classes, rngs=rngs)

  def __call__(self, images_BxHxWxC: jax.Array) -> tuple[jax.Array, jax.Array]:
    if hasattr(self.tower, "reconstruct"):
      recon = self.tower.reconstruct(images_BxHxWxC)
      extra = jnp.mean((recon - images_BxHxWxC) ** 2)
    else:
      extra = jnp.zeros(())
    # A dropout stream for the towers with stochastic depth (EfficientNet); the others ignore it.
    feats_BxD = self.tower.encode(images_BxHxWxC, rngs=nnx.Rngs(dropout=0))
    return self.head(feats_BxD), extra


def build_config(image_cfg, size: int, impl: str, *, batch: int):
  """Returns (step, state, images, labels) for one tower and conv path.

  impl: 'xla' | 'im2col' | 'auto' | 'auto:N' ('auto' with max_hw=N) | 'auto:nopad' ('auto'
  without padding 3-channel convs to conv.AUTO_PAD_CHANNELS; takes effect when traced).
  """
  from jaxmm.models import registry

  max_hw = None
  if impl == "auto:nopad":
    impl = "auto"
  elif impl.startswith("auto:"):
    impl, max_hw = "auto", int(impl.split(":")[1])
  cfg = image_cfg.copy_and_resolve_references()
  cfg.conv_impl = impl
  tower = registry.build_image_tower(cfg, rngs=nnx.Rngs(0))
  if max_hw is not None:
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
  name: str, image_cfg, size: int, impls: list[str], *, batch: int, warmup: int, repeats: int
) -> list[dict]:
  """Times all impls of one tower shape, interleaving their repeats.

  Round-robin timing spreads the load of a shared machine evenly over the
  impls being compared, which matters more than the absolute numbers.
  """
  runs, compile_s = {}, {}
  for impl in impls:
    step, state, images, labels = build_config(image_cfg, size, impl, batch=batch)
    t0 = time.perf_counter()
    pad = conv.AUTO_PAD_CHANNELS
    conv.AUTO_PAD_CHANNELS = 0 if impl == "auto:nopad" else pad
    try:  # the first call traces (and compiles) the step
      state, loss = step(state, images, labels)
    finally:
      conv.AUTO_PAD_CHANNELS = pad
    loss.block_until_ready()
    compile_s[impl] = time.perf_counter() - t0
    for _ in range(warmup - 1):
      state, loss = step(state, images, labels)
    loss.block_until_ready()
    runs[impl] = [step, state, images, labels]
  times, cpu = ({impl: [] for impl in impls} for _ in range(2))
  for r in range(repeats):
    for impl in impls if r % 2 == 0 else impls[::-1]:
      step, state, images, labels = runs[impl]
      t0, c0 = time.perf_counter(), time.process_time()
      state, loss = step(state, images, labels)
      loss.block_until_ready()
      times[impl].append(time.perf_counter() - t0)
      cpu[impl].append(time.process_time() - c0)
      runs[impl][1] = state
      if not np.isfinite(float(loss)):
        raise FloatingPointError(f"non-finite loss: {name} {impl}")
  rows = []
  for impl in impls:
    med = statistics.median(times[impl])
    rows.append(
      dict(
        config=name,
        tower=image_cfg.name,
        size=size,
        impl=impl,
        batch=batch,
        steps_per_s=1.0 / med,
        median_ms=med * 1e3,
        cpu_ms=statistics.median(cpu[impl]) * 1e3,
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
  p.add_argument("--configs", default=",".join(SHIPPED), help="shipped config names")
  p.add_argument(
    "--impls",
    default="xla,im2col,auto",
    help="comma list of xla, im2col, auto, auto:N (max_hw=N), auto:nopad",
  )
  p.add_argument("--batch", type=int, default=0, help="0: each config's train.batch_size")
  p.add_argument(
    "--warmup", type=int, default=2, help="steps before timing, the first one compiles"
  )
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--json", default=None, help="also append rows as JSONL")
  p.add_argument(
    "--per-conv", action="store_true", help="time single 3x3 convs (XLA vs im2col) instead"
  )
  args = p.parse_args(argv)
  if args.per_conv:
    time_per_conv(args.batch or 32, args.repeats)
    return

  print(
    f"# backend={jax.default_backend()} jax={jax.__version__} auto_max_hw={conv.AUTO_MAX_HW}, "
    f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
  )
  print(
    f"# image-tower train step (fwd+bwd+Adam) at each config's size and batch, median of "
    f"{args.repeats} interleaved repeats after {args.warmup} warm-up steps"
  )
  header = (
    f"{'config':<20} {'tower':<16} {'px':>4} {'batch':>5} {'impl':>9} {'steps/s':>8} "
    f"{'median_ms':>9} {'cpu_ms':>8} {'compile_s':>9}"
  )
  print(header, flush=True)
  for name, (image_cfg, size, batch) in tower_shapes(args.configs.split(",")).items():
    rows = time_impls(
      name,
      image_cfg,
      size,
      args.impls.split(","),
      batch=args.batch or batch,
      warmup=args.warmup,
      repeats=args.repeats,
    )
    for row in rows:
      print(
        f"{row['config']:<20} {row['tower']:<16} {row['size']:>4} {row['batch']:>5} "
        f"{row['impl']:>9} {row['steps_per_s']:>8.2f} {row['median_ms']:>9.0f} "
        f"{row['cpu_ms']:>8.0f} {row['compile_s']:>9.1f}",
        flush=True,
      )
      if args.json:
        with open(args.json, "a") as f:
          f.write(json.dumps(row) + "\n")
  print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
  main()
