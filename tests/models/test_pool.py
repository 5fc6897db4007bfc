"""The CPU max pool: same values as XLA's, gradient to the first maximum of each window."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxmm.models import pool


def _reference_grad(x, g, window, strides, pads):
  """numpy: each output's cotangent goes to the first (row-major) maximum of its window."""
  (kh, kw), (sh, sw) = window, strides
  xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=-np.inf)
  dxp = np.zeros_like(xp)
  n, ho, wo, c = g.shape
  for b, r, q, ch in np.ndindex(n, ho, wo, c):
    win = xp[b, r * sh : r * sh + kh, q * sw : q * sw + kw, ch]
    i, j = np.unravel_index(np.argmax(win), win.shape)  # argmax = first maximum
    dxp[b, r * sh + i, q * sw + j, ch] += g[b, r, q, ch]
  return dxp[:, pads[0][0] : pads[0][0] + x.shape[1], pads[1][0] : pads[1][0] + x.shape[2]]


@pytest.mark.parametrize(
  "shape,window,strides,pads",
  [
    ((2, 9, 8, 3), (3, 3), (2, 2), ((1, 1), (1, 1))),  # the ResNet stem pool, odd size
    ((1, 6, 6, 2), (2, 2), (2, 2), ((0, 0), (0, 0))),
    ((1, 7, 5, 1), (3, 2), (1, 2), ((1, 0), (0, 1))),
  ],
)
def test_taps_match_xla_forward_and_first_max_gradient(shape, window, strides, pads):
  rng = np.random.default_rng(0)
  # Rounded values and a ReLU-like floor make ties common: the case where pools disagree most.
  x = np.maximum(np.round(rng.normal(size=shape), 1), 0.0).astype(np.float32)
  ours = pool.max_pool(jnp.asarray(x), window, strides, pads, impl="taps")
  ref = nnx.max_pool(jnp.asarray(x), window, strides, pads)
  np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))
  g = rng.normal(size=ours.shape).astype(np.float32)
  _, vjp = jax.vjp(lambda v: pool.max_pool(v, window, strides, pads, impl="taps"), jnp.asarray(x))
  np.testing.assert_allclose(
    np.asarray(vjp(jnp.asarray(g))[0]),
    _reference_grad(x, g, window, strides, pads),
    rtol=0,
    atol=1e-6,
  )


def test_auto_and_xla_agree_without_ties():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
  f = lambda impl: jax.grad(
    lambda v: jnp.sum(pool.max_pool(v, (3, 3), (2, 2), ((1, 1), (1, 1)), impl=impl) ** 2)
  )(x)
  np.testing.assert_allclose(np.asarray(f("auto")), np.asarray(f("xla")), atol=1e-6)
  with pytest.raises(ValueError, match="impl"):
    pool.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)), impl="nope")
