"""im2col / auto conv paths agree with lax.conv_general_dilated."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from jaxmm.models import conv

_DN = ("NHWC", "HWIO", "NHWC")

# (lhs NxHxWxC, kernel k, out O, stride, padding, groups)
_CASES = [
  ((2, 5, 5, 3), 3, 4, 1, "SAME", 1),
  ((2, 6, 7, 4), 3, 6, 2, "SAME", 1),
  ((2, 8, 8, 4), 1, 5, 2, "VALID", 1),
  ((2, 9, 9, 3), 7, 4, 2, ((3, 3), (3, 3)), 1),  # imagenet stem
  ((2, 8, 8, 4), 3, 8, 2, ((1, 1), (1, 1)), 1),
  ((2, 2, 2, 8), 3, 8, 1, ((1, 1), (1, 1)), 1),  # the tiny-map case
  ((2, 4, 4, 8), 3, 8, 1, "SAME", 4),  # grouped (ResNeXt)
  ((2, 6, 5, 8), 3, 4, 2, ((1, 0), (0, 1)), 2),  # grouped, strided
  ((2, 6, 6, 2), 3, 3, 1, ((-1, 0), (0, -1)), 1),  # negative pads crop
]


def _inputs(lhs_shape, k, out, groups, seed=0):
  # numpy, not jax.random: each new shape would compile a threefry kernel.
  rng = np.random.default_rng(seed)
  lhs = rng.standard_normal(lhs_shape, np.float32)
  rhs = rng.standard_normal((k, k, lhs_shape[-1] // groups, out), np.float32)
  return jnp.asarray(lhs), jnp.asarray(rhs)


def _check_fwd_and_grads(fn, lhs, rhs, **conv_kwargs):
  def run(f):
    def loss(lhs, rhs):
      y = f(lhs, rhs, dimension_numbers=_DN, **conv_kwargs)
      return jnp.sum(jnp.sin(y)), y  # sin: non-trivial cotangent

    # jit: one compile instead of one per eager op (dozens of slices).
    grad_fn = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))
    (_, y), grads = grad_fn(lhs, rhs)
    return y, grads

  y_ref, g_ref = run(lax.conv_general_dilated)
  y, g = run(fn)
  assert y.shape == y_ref.shape
  np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
  for a, b in zip(g, g_ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("lhs_shape,k,out,stride,padding,groups", _CASES)
def test_im2col_matches_xla(lhs_shape, k, out, stride, padding, groups):
  lhs, rhs = _inputs(lhs_shape, k, out, groups)
  _check_fwd_and_grads(
    conv.im2col_conv,
    lhs,
    rhs,
    window_strides=(stride, stride),
    padding=padding,
    feature_group_count=groups,
  )


@pytest.mark.parametrize(
  "lhs_shape,k,out,dilation,padding",
  [
    ((2, 4, 5, 3), 4, 4, 2, ((2, 2), (2, 2))),  # ConvTranspose(4, 2, SAME)
    ((2, 5, 5, 3), 3, 2, 2, ((1, 2), (2, 1))),
    ((2, 3, 4, 2), 2, 3, 3, ((0, 1), (1, 0))),
    ((2, 6, 6, 2), 5, 3, 3, ((4, 4), (3, 4))),
  ],
)
def test_im2col_transposed_matches_xla(lhs_shape, k, out, dilation, padding):
  lhs, rhs = _inputs(lhs_shape, k, out, 1, seed=1)
  _check_fwd_and_grads(
    conv.im2col_conv,
    lhs,
    rhs,
    window_strides=(1, 1),
    padding=padding,
    lhs_dilation=(dilation, dilation),
  )


def test_dilated_conv_equals_conv_transpose():
  """The autoencoder's upsampling layer == nnx.ConvTranspose(4, 2, 'SAME')."""
  x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 4, 4, 6)), jnp.float32)
  ref = nnx.ConvTranspose(6, 5, (4, 4), strides=(2, 2), padding="SAME", rngs=nnx.Rngs(0))
  for impl in conv.IMPLS:
    up = nnx.Conv(
      6,
      5,
      (4, 4),
      input_dilation=(2, 2),
      padding=((2, 2), (2, 2)),
      conv_general_dilated=conv.make_conv_fn(impl),
      rngs=nnx.Rngs(0),
    )
    assert up.kernel.shape == ref.kernel.shape
    up.kernel[...] = ref.kernel[...]
    up.bias[...] = ref.bias[...]
    np.testing.assert_allclose(up(x), ref(x), rtol=1e-5, atol=1e-5)


def _conv_prims(fn, lhs, rhs, **kwargs):
  jaxpr = jax.make_jaxpr(lambda a, b: fn(a, b, dimension_numbers=_DN, **kwargs))(lhs, rhs)
  return [e.primitive.name for e in jaxpr.jaxpr.eqns if e.primitive.name == "conv_general_dilated"]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="CPU rule")
def test_auto_dispatch_on_cpu():
  auto = conv.make_conv_fn("auto")
  # Small output map -> im2col (no conv primitive in the graph).
  lhs, rhs = _inputs((2, 4, 4, 8), 3, 8, 1)
  assert not _conv_prims(auto, lhs, rhs, window_strides=(1, 1), padding="SAME")
  # Large map -> XLA's conv.
  lhs, rhs = _inputs((2, 32, 32, 8), 3, 8, 1)
  assert _conv_prims(auto, lhs, rhs, window_strides=(1, 1), padding="SAME")
  # ...unless the threshold says otherwise.
  big = conv.make_conv_fn("auto", max_hw=32 * 32)
  assert not _conv_prims(big, lhs, rhs, window_strides=(1, 1), padding="SAME")
  # 1x1 convs always go to the matmul path on CPU, strided ones too.
  lhs1, rhs1 = _inputs((2, 32, 32, 8), 1, 8, 1)
  for stride in ((1, 1), (2, 2)):
    assert not _conv_prims(auto, lhs1, rhs1, window_strides=stride, padding="VALID")
  # Grouped convs always go to im2col on CPU.
  lhs, rhs = _inputs((2, 32, 32, 8), 3, 8, 4)
  assert not _conv_prims(
    auto, lhs, rhs, window_strides=(1, 1), padding="SAME", feature_group_count=4
  )
  # Kernel dilation is not supported by im2col: auto falls back to XLA.
  lhs, rhs = _inputs((2, 4, 4, 8), 3, 8, 1)
  assert _conv_prims(auto, lhs, rhs, window_strides=(1, 1), padding="SAME", rhs_dilation=(2, 2))
  # Transposed convs go to the sub-pixel path, except grouped ones.
  pads = ((2, 2), (2, 2))
  assert not _conv_prims(auto, lhs, rhs, window_strides=(1, 1), padding=pads, lhs_dilation=(2, 2))
  lhs, rhs = _inputs((2, 4, 4, 8), 3, 8, 2)
  assert _conv_prims(
    auto, lhs, rhs, window_strides=(1, 1), padding=pads, lhs_dilation=(2, 2), feature_group_count=2
  )


def test_im2col_rejects_unsupported():
  lhs, rhs = _inputs((2, 4, 4, 8), 3, 8, 1)
  with pytest.raises(NotImplementedError):
    conv.im2col_conv(lhs, rhs, (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=_DN)
  with pytest.raises(NotImplementedError):  # NCHW layout
    conv.im2col_conv(lhs, rhs, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
  with pytest.raises(NotImplementedError):  # lax rejects this one too
    conv.im2col_conv(lhs, rhs, (1, 1), "SAME", lhs_dilation=(2, 2), dimension_numbers=_DN)


def test_make_conv_fn():
  assert conv.make_conv_fn("xla") is lax.conv_general_dilated
  assert conv.make_conv_fn("im2col") is conv.im2col_conv
  # Cached: equal arguments give one object, so NNX graphdefs compare equal.
  assert conv.make_conv_fn("auto", max_hw=4) is conv.make_conv_fn("auto", max_hw=4)
  with pytest.raises(ValueError):
    conv.make_conv_fn("cudnn")


def test_nnx_conv_impls_share_params_and_outputs():
  x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 6, 6, 4)), jnp.float32)
  outs, states = [], []
  for impl in conv.IMPLS:
    layer = nnx.Conv(
      4,
      8,
      (3, 3),
      strides=(2, 2),
      feature_group_count=2,
      conv_general_dilated=conv.make_conv_fn(impl),
      rngs=nnx.Rngs(0),
    )
    outs.append(nnx.jit(lambda m, x: m(x))(layer, x))
    states.append(nnx.state(layer, nnx.Param))
  for out, state in zip(outs[1:], states[1:]):
    np.testing.assert_allclose(out, outs[0], rtol=1e-5, atol=1e-5)
    jax.tree.map(np.testing.assert_array_equal, state, states[0])


_PATHS = {
  "xla": lax.conv_general_dilated,
  "xla_padded": conv.padded_conv,
  "im2col": conv.im2col_conv,
}


@pytest.mark.parametrize("lhs_shape,k,out,stride,padding,groups", _CASES)
def test_chosen_paths_per_backend_match_lax(lhs_shape, k, out, stride, padding, groups):
  """'auto' on a GPU or TPU is XLA's conv for every shape; on a CPU its chosen path computes the
  conv and its gradients as lax does."""
  lhs, rhs = _inputs(lhs_shape, k, out, groups)
  kw = dict(window_strides=(stride, stride), padding=padding, feature_group_count=groups)
  for backend in ("gpu", "tpu"):
    assert conv.choose_path(lhs.shape, rhs.shape, dimension_numbers=_DN, backend=backend, **kw) == (
      "xla"
    )
  path = conv.choose_path(lhs.shape, rhs.shape, dimension_numbers=_DN, backend="cpu", **kw)
  y = jax.eval_shape(lambda: lax.conv_general_dilated(lhs, rhs, dimension_numbers=_DN, **kw))
  small = y.shape[1] * y.shape[2] <= conv.AUTO_MAX_HW
  if groups > 1 or k == 1 or small:
    assert path == "im2col"
  else:  # the RGB convs over zero-padded channels
    assert path == ("xla_padded" if lhs_shape[-1] < conv.AUTO_PAD_CHANNELS else "xla")
  _check_fwd_and_grads(_PATHS[path], lhs, rhs, **kw)


def test_choose_path_cpu_rule():
  def cpu(lhs_shape, rhs_shape, **kw):
    kw = {"window_strides": (1, 1), "padding": "SAME", **kw}
    return conv.choose_path(lhs_shape, rhs_shape, dimension_numbers=_DN, backend="cpu", **kw)

  assert cpu((8, 4, 4, 64), (3, 3, 64, 64)) == "im2col"  # 16 output pixels
  assert cpu((8, 5, 5, 64), (3, 3, 64, 64)) == "xla"
  assert cpu((8, 8, 8, 64), (3, 3, 64, 64), window_strides=(2, 2)) == "im2col"  # 4x4 out
  assert cpu((8, 32, 32, 64), (1, 1, 64, 128)) == "im2col"  # 1x1: the matmul path
  assert cpu((8, 32, 32, 64), (3, 3, 16, 64), feature_group_count=4) == "im2col"
  assert cpu((8, 4, 4, 64), (3, 3, 64, 64), rhs_dilation=(2, 2)) == "xla"  # im2col cannot
  assert cpu((8, 32, 32, 64), (3, 3, 64, 64)) == "xla"
  assert cpu((8, 64, 64, 3), (7, 7, 3, 32), window_strides=(2, 2)) == "xla_padded"  # RGB stem
  assert (
    conv.choose_path(
      (8, 32, 32, 64),
      (3, 3, 64, 64),
      (1, 1),
      "SAME",
      dimension_numbers=_DN,
      backend="cpu",
      max_hw=1024,
    )
    == "im2col"
  )
