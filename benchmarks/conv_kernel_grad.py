"""XLA's conv gradient vs a hand-written kernel gradient, for the 3x3 convs that stay on XLA's path.

Each variant computes the forward and both gradients of one NHWC conv; the two `custom_vjp`
variants keep XLA's forward and input gradient and compute the kernel gradient themselves, as one
im2col matmul (patches^T x output gradient) or as one matmul per kernel tap. im2col_conv (the whole
conv as patches + matmul) is the fourth. The kernel gradients are checked against XLA's first.

  python benchmarks/conv_kernel_grad.py            # best.py's image tower shapes, batch 64

Prints one line per shape: median wall and process-CPU ms per call for each variant.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jaxmm.models import conv  # noqa: E402

DN = ("NHWC", "HWIO", "NHWC")
# (height = width, in channels, out channels, stride): the XLA-path 3x3 convs of a half-width
# ResNet-18 at 64 px (layer1 and layer2)
SHAPES = ((16, 32, 32, 1), (16, 32, 64, 2), (8, 64, 64, 1))


def _taps(x, dy, kshape, strides, pads):
  kh, kw, c, _ = kshape
  n = x.shape[0]
  _, ho, wo, _ = dy.shape
  sh, sw = strides
  xp = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)])
  return [
    lax.slice(
      xp, (0, i, j, 0), (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c), (1, sh, sw, 1)
    )
    for i in range(kh)
    for j in range(kw)
  ]


def kernel_grad_im2col(x, dy, kshape, strides, pads):
  patches = jnp.concatenate(_taps(x, dy, kshape, strides, pads), axis=-1)
  return jnp.einsum("nhwk,nhwo->ko", patches, dy).reshape(kshape)


def kernel_grad_per_tap(x, dy, kshape, strides, pads):
  taps = _taps(x, dy, kshape, strides, pads)
  return jnp.stack([jnp.einsum("nhwc,nhwo->co", t, dy) for t in taps]).reshape(kshape)


def with_kernel_grad(strides, pads, kernel_grad):
  """lax's conv whose kernel gradient is `kernel_grad(x, dy, kernel shape, strides, pads)`."""

  def xla(x, w):
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=DN)

  @jax.custom_vjp
  def f(x, w):
    return xla(x, w)

  def fwd(x, w):
    return xla(x, w), (x, w)

  def bwd(res, dy):
    x, w = res
    (dx,) = jax.vjp(lambda xx: xla(xx, w), x)[1](dy)
    return dx, kernel_grad(x, dy, w.shape, strides, pads)

  f.defvjp(fwd, bwd)
  return f


def _grads(conv_fn):
  """Jitted (d/dx, d/dw) of sum(conv_fn(x, w) * g): the forward and both gradients."""
  return jax.jit(jax.grad(lambda x, w, g: jnp.sum(conv_fn(x, w) * g), (0, 1)))


def variants_for(strides, pads) -> dict:
  def xla(x, w):
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=DN)

  def im2col(x, w):
    return conv.im2col_conv(x, w, strides, pads, dimension_numbers=DN)

  return {
    "xla": _grads(xla),
    "im2col_kernel_grad": _grads(with_kernel_grad(strides, pads, kernel_grad_im2col)),
    "per_tap_kernel_grad": _grads(with_kernel_grad(strides, pads, kernel_grad_per_tap)),
    "im2col_conv": _grads(im2col),
  }


def _time(fn, args, calls: int) -> tuple[float, float]:
  jax.block_until_ready(fn(*args))
  wall, cpu = [], []
  for _ in range(calls):
    t, c = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn(*args))
    wall.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
  return float(np.median(wall)) * 1e3, float(np.median(cpu)) * 1e3


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--calls", type=int, default=30)
  p.add_argument("--repeats", type=int, default=3, help="rounds over the variants, interleaved")
  args = p.parse_args()
  rng = np.random.default_rng(0)
  print(f"# jax {jax.__version__}, load average {os.getloadavg()[0]:.2f}; ms per call (wall / CPU)")
  for h, c, o, s in SHAPES:
    x = jnp.asarray(rng.standard_normal((args.batch, h, h, c)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, c, o)) * 0.1, jnp.float32)
    pads, ho = ((1, 1), (1, 1)), (h - 1) // s + 1
    g = jnp.asarray(rng.standard_normal((args.batch, ho, ho, o)), jnp.float32)

    variants = variants_for((s, s), pads)
    want = variants["xla"](x, w, g)
    for name, fn in variants.items():
      got = fn(x, w, g)
      for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-2, err_msg=name)
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
      for name, fn in variants.items():
        times[name].append(_time(fn, (x, w, g), args.calls))
    cells = ", ".join(
      f"{name} {np.median([t[0] for t in ts]):.1f} / {np.median([t[1] for t in ts]):.1f}"
      for name, ts in times.items()
    )
    print(f"{h}x{h}x{c} -> {o}, stride {s}: {cells}", flush=True)


if __name__ == "__main__":
  main()
