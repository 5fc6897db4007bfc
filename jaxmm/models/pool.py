"""Max pooling that is fast on CPU: the window as strided slices, with a hand-written backward.

`nnx.max_pool`'s gradient on XLA:CPU is a variadic reduce-window over the input and four index
iotas of the padded input's size: in a ResNet-18 train step at 64 px (batch 32) the stem's 3x3/2
pool and its gradient took ~200 ms of ~1,200 ms of op time (benchmarks/RESULTS.md, "Speed").
Here the
forward is the maximum of kh*kw strided slices and the backward routes each output's cotangent to
the first maximal element of its window (row-major, as torch's and XLA's pools do), as a sum of
strided pads that XLA fuses into one loop. GPUs keep XLA's reduce-window (cuDNN-class kernels).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

Pads = tuple[tuple[int, int], tuple[int, int]]


def _taps(xp, window, strides, out_hw):
  """The kh*kw strided views of the padded NHWC input that one output pixel's window reads."""
  n, _, _, c = xp.shape
  (kh, kw), (sh, sw), (ho, wo) = window, strides, out_hw
  return [
    lax.slice(
      xp, (0, i, j, 0), (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c), (1, sh, sw, 1)
    )
    for i in range(kh)
    for j in range(kw)
  ]


def _geometry(x, window, strides, padding):
  (kh, kw), (sh, sw) = window, strides
  (pt, pb), (pl, pr) = padding
  h, w = x.shape[1] + pt + pb, x.shape[2] + pl + pr
  return ((h - kh) // sh + 1, (w - kw) // sw + 1)


def _pad(x, padding):
  (pt, pb), (pl, pr) = padding
  neg = jnp.array(-jnp.inf, x.dtype)
  return lax.pad(x, neg, ((0, 0, 0), (pt, pb, 0), (pl, pr, 0), (0, 0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool_taps(
  x_NxHxWxC: jax.Array, window: tuple[int, int], strides: tuple[int, int], padding: Pads
) -> jax.Array:
  """Max pool over NHWC with explicit (lo, hi) pads of -inf; -> (N, Ho, Wo, C)."""
  out_hw = _geometry(x_NxHxWxC, window, strides, padding)
  return functools.reduce(jnp.maximum, _taps(_pad(x_NxHxWxC, padding), window, strides, out_hw))


def _fwd(x, window, strides, padding):
  out = max_pool_taps(x, window, strides, padding)
  return out, (x, out)


def _bwd(window, strides, padding, saved, g_NxHoxWoxC):
  x, out = saved
  out_hw = out.shape[1:3]
  xp = _pad(x, padding)
  (_, kw), (sh, sw) = window, strides
  zero = jnp.zeros((), g_NxHoxWoxC.dtype)
  claimed = jnp.zeros(out.shape, bool)
  dxp = jnp.zeros(xp.shape, g_NxHoxWoxC.dtype)
  for k, tap in enumerate(_taps(xp, window, strides, out_hw)):
    i, j = divmod(k, kw)
    hit = (tap == out) & ~claimed  # first maximum of the window wins, as in torch
    claimed = claimed | hit
    # Transpose of the strided slice: put the values back at stride s from offset (i, j).
    hi_h = xp.shape[1] - (i + (out_hw[0] - 1) * sh + 1)
    hi_w = xp.shape[2] - (j + (out_hw[1] - 1) * sw + 1)
    dxp = dxp + lax.pad(
      jnp.where(hit, g_NxHoxWoxC, zero),
      zero,
      ((0, 0, 0), (i, hi_h, sh - 1), (j, hi_w, sw - 1), (0, 0, 0)),
    )
  (pt, _), (pl, _) = padding
  return (dxp[:, pt : pt + x.shape[1], pl : pl + x.shape[2]],)


max_pool_taps.defvjp(_fwd, _bwd)


def max_pool(
  x_NxHxWxC: jax.Array,
  window: Sequence[int],
  strides: Sequence[int],
  padding: Sequence[tuple[int, int]],
  *,
  impl: str = "auto",
) -> jax.Array:
  """NHWC max pool with explicit pads. impl: 'taps' (above), 'xla' (reduce-window, what
  `nnx.max_pool` does) or 'auto' (taps on CPU, xla elsewhere; chosen at trace time)."""
  window, strides = tuple(int(k) for k in window), tuple(int(s) for s in strides)
  padding = tuple((int(lo), int(hi)) for lo, hi in padding)
  if impl == "auto":
    impl = "taps" if jax.default_backend() == "cpu" else "xla"
  if impl == "taps":
    return max_pool_taps(x_NxHxWxC, window, strides, padding)
  if impl == "xla":
    # A Python -inf init lets jax recognise the max monoid (differentiable reduce_window_max).
    return lax.reduce_window(
      x_NxHxWxC, -jnp.inf, lax.max, (1, *window, 1), (1, *strides, 1), ((0, 0), *padding, (0, 0))
    )
  raise ValueError(f"max_pool impl must be 'auto', 'taps' or 'xla', got {impl!r}")
