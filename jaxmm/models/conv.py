"""Convolution back-ends for `nnx.Conv(conv_general_dilated=...)`.

XLA's CPU convolution is pathological for 3x3 kernels on tiny spatial maps (a
3x3 conv over a 32x2x2x512 input took ~270 ms vs ~2 ms in PyTorch), which makes
ResNets on small images crawl on CPU. `im2col_conv` computes the same
convolution as pad + strided slices + concatenate + one matmul, which XLA:CPU
turns into a fast GEMM. `make_conv_fn(impl)` picks between the two.

The choice only changes how the convolution is computed: the kernel keeps the
same HWIO shape and meaning, so parameters and checkpoints are interchangeable
across impls.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

ConvFn = Callable[..., jax.Array]

IMPLS = ("xla", "im2col", "auto")

# 'auto' uses im2col on CPU for grouped convs (XLA:CPU's grouped conv was
# 13-60x slower at every size measured), for transposed (lhs-dilated) convs
# (XLA's fwd+bwd 1.5-6x slower than the sub-pixel path at 4..16 px inputs),
# and for output maps with at most AUTO_MAX_HW pixels. 3x3/1 conv fwd+bwd,
# batch 32, XLA/im2col time (`conv_paths.py --per-conv`, 2 shared cores):
# 1x1x512 6.5, 2x2x256 15, 2x2x512 51, 3x3x512 1.4, 4x4 0.9-1.1 (a wash),
# 8x8 0.67-0.85, 16x16 and up 0.63-0.70. ResNet-18 train steps with
# thresholds 9, 16 and 64 were within noise of each other.
# 1x1 convs always take the matmul path on CPU: as a conv, XLA computes their kernel gradient with
# a transposed copy of both the activations and the output gradient; in a ResNet-50 train step at
# 64 px those transposes were 17% of the op time; the matmul path cut the step's CPU time by ~9%
# (benchmarks/RESULTS.md, "Speed"). Read at trace time (benchmarks/cpu_step_ablation.py turns it
# off).
AUTO_MAX_HW = 16
AUTO_POINTWISE = True
# XLA:CPU's conv over 3 input channels (the RGB stems) is ~4x slower than over 4: a 7x7/2 stem
# conv, batch 64 at 64 px, 32 filters: forward 42 -> 10 CPU ms, forward + kernel gradient 60 ->
# 44 ms with the image and kernel zero-padded to 4 channels (2026-12-03). 'auto' pads
# convs with fewer input channels to this many on CPU; 0 turns it off.
AUTO_PAD_CHANNELS = 4

_NHWC_SPEC = ("NHWC", "HWIO", "NHWC")


def _is_nhwc_hwio(lhs_shape, rhs_shape, dimension_numbers) -> bool:
  if len(lhs_shape) != 4 or len(rhs_shape) != 4:
    return False
  want = lax.conv_dimension_numbers(lhs_shape, rhs_shape, _NHWC_SPEC)
  got = lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
  return tuple(got) == tuple(want)


def _all_ones(xs: Sequence[int] | None) -> bool:
  return xs is None or all(int(x) == 1 for x in xs)


def _explicit_pads(
  in_hw: Sequence[int],
  k_hw: Sequence[int],
  strides: Sequence[int],
  padding: str | Sequence[tuple[int, int]],
) -> list[tuple[int, int]]:
  if isinstance(padding, str):
    # Same rule as lax (SAME puts the extra pixel at the end).
    return list(lax.padtype_to_pads(in_hw, k_hw, strides, padding))
  return [(int(lo), int(hi)) for lo, hi in padding]


def _out_hw(in_hw, k_hw, strides, pads, lhs_dilation=(1, 1)) -> tuple[int, int]:
  return tuple(
    ((n - 1) * d + 1 + lo + hi - k) // s + 1
    for n, k, s, (lo, hi), d in zip(in_hw, k_hw, strides, pads, lhs_dilation)
  )


def _unsupported(
  lhs_shape,
  rhs_shape,
  window_strides,
  padding,
  lhs_dilation,
  rhs_dilation,
  dimension_numbers,
  feature_group_count,
  batch_group_count,
) -> str | None:
  """Why `im2col_conv` cannot do this conv, or None if it can."""
  if not _is_nhwc_hwio(lhs_shape, rhs_shape, dimension_numbers):
    return "only 2-D NHWC/HWIO/NHWC convs"
  if not _all_ones(rhs_dilation):
    return "no kernel (rhs) dilation"
  if batch_group_count != 1:
    return "no batch_group_count"
  if not _all_ones(lhs_dilation) and (
    isinstance(padding, str) or not _all_ones(window_strides) or feature_group_count != 1
  ):
    # lax itself rejects string padding with lhs_dilation.
    return "lhs_dilation needs explicit pads, stride 1 and no groups"
  return None


def im2col_supported(
  lhs_shape,
  rhs_shape,
  window_strides=(1, 1),
  padding=((0, 0), (0, 0)),
  lhs_dilation=None,
  rhs_dilation=None,
  dimension_numbers=None,
  feature_group_count: int = 1,
  batch_group_count: int = 1,
) -> bool:
  """True if `im2col_conv` handles this conv (same arguments as lax's)."""
  return (
    _unsupported(
      lhs_shape,
      rhs_shape,
      window_strides,
      padding,
      lhs_dilation,
      rhs_dilation,
      dimension_numbers,
      feature_group_count,
      batch_group_count,
    )
    is None
  )


def _phase_taps(k: int, s: int, lo: int) -> tuple[np.ndarray, int]:
  """Selection S[a, r, t] = 1 if output phase r reads kernel tap t at offset a.

  For a stride-1 conv over an input dilated by s and padded by lo, output
  o = s*m + r reads x[m + (r + t - lo) / s] through tap t whenever that is an
  integer. Returns S (offsets x s x k) and the smallest offset.
  """
  offs = {(r, t): (r + t - lo) // s for r in range(s) for t in range(k) if (r + t - lo) % s == 0}
  lo_off = min(offs.values())
  sel = np.zeros((max(offs.values()) - lo_off + 1, s, k), np.float32)
  for (r, t), off in offs.items():
    sel[off - lo_off, r, t] = 1.0
  return sel, lo_off


def _subpixel_conv(lhs, rhs, pads, dilation, out_hw, **kwargs):
  """Conv over an lhs dilated by `dilation` (a transposed conv), sub-pixel.

  Instead of convolving a map that is mostly inserted zeros, each of the
  sh*sw output phases is a small stride-1 conv of the undilated input; all
  phases share one im2col GEMM with a (taps, taps, C, sh*sw*O) kernel, and a
  depth-to-space puts the phases back in place.
  """
  n, h, w, _ = lhs.shape
  kh, kw, c, o = rhs.shape
  (sh, sw), (ho, wo) = dilation, out_hw
  sel_h, off_h = _phase_taps(kh, sh, pads[0][0])
  sel_w, off_w = _phase_taps(kw, sw, pads[1][0])
  kernel = jnp.einsum("art,bqu,tuco->abcrqo", sel_h.astype(rhs.dtype), sel_w.astype(rhs.dtype), rhs)
  kernel = kernel.reshape(sel_h.shape[0], sel_w.shape[0], c, sh * sw * o)
  mh, mw = -(-ho // sh), -(-wo // sw)
  # Input rows m + off for m < mh and off in [off_h, off_h + taps): pad so
  # that a VALID stride-1 conv yields exactly mh x mw positions.
  pads2 = (
    (-off_h, mh - 1 + off_h + sel_h.shape[0] - 1 - (h - 1)),
    (-off_w, mw - 1 + off_w + sel_w.shape[0] - 1 - (w - 1)),
  )
  phases = im2col_conv(lhs, kernel, (1, 1), pads2, dimension_numbers=_NHWC_SPEC, **kwargs)
  out = phases.reshape(n, mh, mw, sh, sw, o).transpose(0, 1, 3, 2, 4, 5)
  return out.reshape(n, mh * sh, mw * sw, o)[:, :ho, :wo]


def im2col_conv(
  lhs: jax.Array,
  rhs: jax.Array,
  window_strides: Sequence[int],
  padding: str | Sequence[tuple[int, int]],
  lhs_dilation: Sequence[int] | None = None,
  rhs_dilation: Sequence[int] | None = None,
  dimension_numbers: Any = None,
  feature_group_count: int = 1,
  batch_group_count: int = 1,
  precision: Any = None,
  preferred_element_type: Any = None,
  out_sharding: Any = None,
) -> jax.Array:
  """Drop-in for `lax.conv_general_dilated` via patches + one matmul.

  lhs: images_NxHxWxC; rhs: kernel_KHxKWx(C/G)xO (HWIO);
  dimension_numbers must describe NHWC/HWIO/NHWC. Returns out_NxHoxWoxO.
  Grouped convs (G = feature_group_count) use one einsum batched over groups.
  lhs_dilation > 1 (transposed convs; stride 1, explicit pads, no groups) is
  computed sub-pixel, see `_subpixel_conv`.
  """
  why = _unsupported(
    lhs.shape,
    rhs.shape,
    window_strides,
    padding,
    lhs_dilation,
    rhs_dilation,
    dimension_numbers,
    feature_group_count,
    batch_group_count,
  )
  if why is not None:
    raise NotImplementedError(
      f"im2col_conv: {why}; got lhs {lhs.shape}, rhs {rhs.shape}, "
      f"strides={window_strides}, padding={padding}, "
      f"dimension_numbers={dimension_numbers}, lhs_dilation={lhs_dilation}, "
      f"rhs_dilation={rhs_dilation}, groups={feature_group_count}, "
      f"batch_group_count={batch_group_count}"
    )
  n, h, w, c = lhs.shape
  kh, kw, cg, o = rhs.shape
  g = int(feature_group_count)
  if c != cg * g or o % g:
    raise ValueError(f"channels {c} / out {o} do not split into {g} groups of kernel {rhs.shape}")
  sh, sw = (int(s) for s in window_strides)
  dh, dw = (1, 1) if lhs_dilation is None else (int(d) for d in lhs_dilation)
  kwargs = {}
  if precision is not None:
    kwargs["precision"] = precision
  if preferred_element_type is not None:
    kwargs["preferred_element_type"] = preferred_element_type
  if out_sharding is not None:
    kwargs["out_sharding"] = out_sharding

  if (dh, dw) != (1, 1):
    pads = _explicit_pads((h, w), (kh, kw), (1, 1), padding)
    out_hw = _out_hw((h, w), (kh, kw), (1, 1), pads, (dh, dw))
    return _subpixel_conv(lhs, rhs, pads, (dh, dw), out_hw, **kwargs)

  pads = _explicit_pads((h, w), (kh, kw), (sh, sw), padding)
  ho, wo = _out_hw((h, w), (kh, kw), (sh, sw), pads)
  # lax.pad also accepts negative (cropping) pads, as conv_general_dilated does.
  x = lax.pad(lhs, jnp.zeros((), lhs.dtype), [(0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)])
  # One strided slice per kernel tap; the (i, j, c) order of the concatenated
  # patch matches a row-major reshape of the HWIO kernel.
  taps = [
    lax.slice(x, (0, i, j, 0), (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c), (1, sh, sw, 1))
    for i in range(kh)
    for j in range(kw)
  ]
  patches = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)

  if g == 1:
    # (N*Ho*Wo, KH*KW*C) @ (KH*KW*C, O): a single GEMM.
    return jnp.einsum("nhwk,ko->nhwo", patches, rhs.reshape(kh * kw * c, o), **kwargs)
  og = o // g
  patches = patches.reshape(n, ho, wo, kh * kw, g, cg)
  kernel = rhs.reshape(kh * kw, cg, g, og)
  out = jnp.einsum("nhwkgc,kcgo->nhwgo", patches, kernel, **kwargs)
  return out.reshape(n, ho, wo, o)


def padded_conv(lhs: jax.Array, rhs: jax.Array, *args: Any, **kwargs: Any) -> jax.Array:
  """lax.conv_general_dilated of an NHWC/HWIO conv (no groups) with the input channels
  zero-padded to AUTO_PAD_CHANNELS: the same result; the zero channels meet zero kernel rows."""
  extra = AUTO_PAD_CHANNELS - lhs.shape[3]
  lhs = jnp.pad(lhs, ((0, 0), (0, 0), (0, 0), (0, extra)))
  rhs = jnp.pad(rhs, ((0, 0), (0, 0), (0, extra), (0, 0)))
  return lax.conv_general_dilated(lhs, rhs, *args, **kwargs)


def choose_path(
  lhs_shape: Sequence[int],
  rhs_shape: Sequence[int],
  window_strides: Sequence[int],
  padding: str | Sequence[tuple[int, int]],
  lhs_dilation: Sequence[int] | None = None,
  rhs_dilation: Sequence[int] | None = None,
  dimension_numbers: Any = None,
  feature_group_count: int = 1,
  batch_group_count: int = 1,
  *,
  backend: str,
  max_hw: int = AUTO_MAX_HW,
) -> str:
  """'xla', 'xla_padded' or 'im2col': the path 'auto' takes for this conv on `backend`.

  GPUs and TPUs: XLA's conv (cuDNN / the TPU's convolution units) always. CPU: im2col for grouped,
  transposed and 1x1 convs and for output maps of <= max_hw pixels; otherwise XLA's conv, over
  input channels zero-padded to AUTO_PAD_CHANNELS ('xla_padded') when there are fewer (the RGB
  stems); XLA's conv as it is for the convs im2col cannot do.
  """
  if backend != "cpu" or not im2col_supported(
    lhs_shape,
    rhs_shape,
    window_strides,
    padding,
    lhs_dilation,
    rhs_dilation,
    dimension_numbers,
    feature_group_count,
    batch_group_count,
  ):
    return "xla"
  kh, kw = rhs_shape[:2]
  strides = tuple(int(s) for s in window_strides)
  dilation = (1, 1) if lhs_dilation is None else tuple(lhs_dilation)
  pads = _explicit_pads(lhs_shape[1:3], (kh, kw), strides, padding)
  ho, wo = _out_hw(lhs_shape[1:3], (kh, kw), strides, pads, dilation)
  lhs_dilated = not _all_ones(lhs_dilation)
  pointwise = AUTO_POINTWISE and (kh, kw) == (1, 1)
  small = ho * wo <= max_hw
  if feature_group_count > 1 or lhs_dilated or pointwise or small:
    return "im2col"
  return "xla_padded" if rhs_shape[2] < AUTO_PAD_CHANNELS else "xla"


def auto_conv(
  lhs: jax.Array,
  rhs: jax.Array,
  window_strides: Sequence[int],
  padding: str | Sequence[tuple[int, int]],
  lhs_dilation: Sequence[int] | None = None,
  rhs_dilation: Sequence[int] | None = None,
  dimension_numbers: Any = None,
  feature_group_count: int = 1,
  batch_group_count: int = 1,
  *,
  max_hw: int = AUTO_MAX_HW,
  **kwargs: Any,
) -> jax.Array:
  """The conv on `choose_path`'s path for the backend this is traced for.

  Decided at trace time from static shapes and `jax.default_backend()`, so it costs nothing at
  run time; a model built with conv_impl='auto' runs XLA's convs on a GPU and the CPU's faster
  path per shape on a CPU, with the same parameters.
  """
  path = choose_path(
    lhs.shape,
    rhs.shape,
    window_strides,
    padding,
    lhs_dilation,
    rhs_dilation,
    dimension_numbers,
    feature_group_count,
    batch_group_count,
    backend=jax.default_backend(),
    max_hw=max_hw,
  )
  fn = {"im2col": im2col_conv, "xla_padded": padded_conv}.get(path, lax.conv_general_dilated)
  return fn(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=lhs_dilation,
    rhs_dilation=rhs_dilation,
    dimension_numbers=dimension_numbers,
    feature_group_count=feature_group_count,
    batch_group_count=batch_group_count,
    **kwargs,
  )


@functools.cache
def make_conv_fn(impl: str = "auto", *, max_hw: int | None = None) -> ConvFn:
  """Returns a `conv_general_dilated`-compatible function for `nnx.Conv`.

  impl: 'xla' (lax.conv_general_dilated), 'im2col' (always patches + matmul),
  or 'auto' (on CPU: im2col for grouped, transposed and 1x1 convs and for maps
  with <= max_hw pixels, default AUTO_MAX_HW; XLA otherwise and always on GPU).
  Cached, so equal arguments give the identical function object and thus
  identical NNX graphdefs.
  """
  if impl == "xla":
    return lax.conv_general_dilated
  if impl == "im2col":
    return im2col_conv
  if impl == "auto":
    if max_hw is None:
      return auto_conv
    return functools.partial(auto_conv, max_hw=int(max_hw))
  raise ValueError(f"conv impl must be one of {IMPLS}, got {impl!r}")


def torch_conv(
  in_features: int,
  out_features: int,
  kernel: int,
  stride: int = 1,
  *,
  groups: int = 1,
  kernel_init: Callable,
  conv_impl: str,
  dtype: Any,
  rngs: nnx.Rngs,
) -> nnx.Conv:
  """A bias-free square conv padded as torchvision pads it (kernel // 2 on each side, not
  'SAME'), on the conv path `conv_impl`: the conv of the ResNet, DenseNet and EfficientNet towers,
  so torchvision weights give torchvision's activations."""
  pad = kernel // 2
  return nnx.Conv(
    in_features,
    out_features,
    (kernel, kernel),
    strides=(stride, stride),
    padding=((pad, pad), (pad, pad)),
    feature_group_count=groups,
    use_bias=False,
    kernel_init=kernel_init,
    dtype=dtype,
    conv_general_dilated=make_conv_fn(conv_impl),
    rngs=rngs,
  )
