"""jaxmm.models.batchnorm.BatchNorm computes what nnx.BatchNorm does: outputs, running statistics
and gradients in train mode, outputs in eval mode."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxmm.models import batchnorm


def _pair(features=6, dtype=None):
  kw = dict(use_running_average=False, momentum=0.9, epsilon=1e-5, dtype=dtype, rngs=nnx.Rngs(0))
  ref, ours = nnx.BatchNorm(features, **kw), batchnorm.BatchNorm(features, **kw)
  rng = np.random.default_rng(0)
  for bn in (ref, ours):  # non-trivial affine parameters and running statistics
    bn.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, features), jnp.float32)
    bn.bias[...] = jnp.asarray(rng.normal(size=features), jnp.float32)
    rng = np.random.default_rng(0)
  return ref, ours


def _loss_and_grads(bn, x):
  def loss(bn, x):
    y = bn(x)
    return jnp.sum(jnp.sin(y.astype(jnp.float32)) * jnp.arange(y.shape[-1])), y

  (_, y), (g_bn, g_x) = jax.jit(nnx.value_and_grad(loss, argnums=(0, 1), has_aux=True))(bn, x)
  return y, g_x, g_bn


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the hand-written path is the CPU's")
def test_train_mode_matches_nnx_batchnorm():
  x = jnp.asarray(np.random.default_rng(1).normal(2.0, 3.0, (4, 5, 5, 6)), jnp.float32)
  ref, ours = _pair()
  y_ref, gx_ref, g_ref = _loss_and_grads(ref, x)
  y, gx, g = _loss_and_grads(ours, x)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(gx, gx_ref, rtol=1e-4, atol=1e-5)
  for name in ("scale", "bias"):
    np.testing.assert_allclose(g[name][...], g_ref[name][...], rtol=1e-4, atol=1e-5)
  ref, ours = _pair()
  np.testing.assert_allclose(ours(x), ref(x), rtol=1e-5, atol=1e-5)
  for name in ("mean", "var"):  # the running statistics moved alike
    np.testing.assert_allclose(getattr(ours, name)[...], getattr(ref, name)[...], rtol=1e-5)
  assert not np.allclose(ours.mean[...], 0.0)
  # Eval mode: nnx's own path, on the running statistics.
  ref.use_running_average = ours.use_running_average = True
  np.testing.assert_allclose(ours(x), ref(x), rtol=1e-6, atol=1e-6)


def test_bfloat16_compute_dtype_keeps_float32_statistics():
  x = jnp.asarray(np.random.default_rng(2).normal(size=(8, 3, 3, 6)), jnp.bfloat16)
  ref, ours = _pair(dtype=jnp.bfloat16)
  y_ref, gx_ref, _ = _loss_and_grads(ref, x)
  y, gx, _ = _loss_and_grads(ours, x)
  assert y.dtype == y_ref.dtype == jnp.bfloat16 and gx.dtype == jnp.bfloat16
  assert ours.mean[...].dtype == jnp.float32
  np.testing.assert_allclose(y.astype(np.float32), y_ref.astype(np.float32), atol=0.05)
