"""Batch normalisation with a hand-written backward pass for XLA:CPU, a drop-in nnx.BatchNorm.

In train mode on a CPU, `BatchNorm` normalises as one multiply-add per element (x * a + b, with a
and b per channel) and computes its gradient in one pass over the saved input: autodiff of
nnx.BatchNorm keeps x - mean as a separate array and reads the activations more often (a
half-width ResNet-18 train step at 64 px, batch 64: 356 -> 345 CPU ms, 4.26 -> 4.49 steps/s;
benchmarks/RESULTS.md, "Speed"). Parameters, batch statistics and their names are nnx.BatchNorm's
(checkpoints and imported weights are the same); eval mode, masks and other backends take
nnx.BatchNorm's own path.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

# Read at trace time (benchmarks/cpu_step_ablation.py turns it off to measure what it buys).
CPU_FAST = True


def _stats(x32):
  """Per-channel mean and biased variance over all but the last axis (nnx's fast variance)."""
  axes = tuple(range(x32.ndim - 1))
  mean = jnp.mean(x32, axes)
  var = jnp.maximum(jnp.mean(jnp.square(x32), axes) - jnp.square(mean), 0.0)
  return mean, var


@jax.custom_vjp
def normalize_train(x, scale, bias, epsilon: float):
  """(y, mean, var): x normalised with its own batch statistics, float32 inside."""
  return _forward(x, scale, bias, epsilon)[0]


def _forward(x, scale, bias, epsilon):
  mean, var = _stats(x.astype(jnp.float32))
  inv = jax.lax.rsqrt(var + epsilon)
  a = scale * inv
  y = x.astype(jnp.float32) * a + (bias - mean * a)
  return (y, mean, var), (x, mean, inv, scale)


def _backward(residuals, cotangents):
  dy, _, _ = cotangents  # the statistics feed only the running averages: no gradient
  x, mean, inv, scale = residuals
  axes = tuple(range(x.ndim - 1))
  n = x.size // x.shape[-1]
  xhat = (x.astype(jnp.float32) - mean) * inv
  dbias = jnp.sum(dy, axes)
  dscale = jnp.sum(dy * xhat, axes)
  dx = (scale * inv) * (dy - (dbias + xhat * dscale) / n)
  return dx.astype(x.dtype), dscale, dbias, None


normalize_train.defvjp(_forward, _backward)


class BatchNorm(nnx.BatchNorm):
  """nnx.BatchNorm over the last axis; in train mode on a CPU, `normalize_train`."""

  def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
    if use_running_average is None:
      use_running_average = self.use_running_average
    fast = (
      not use_running_average
      and mask is None
      and self.axis in (-1, x.ndim - 1)
      and self.axis_name is None
      and self.scale is not None
      and self.bias is not None
      and CPU_FAST
      and jax.default_backend() == "cpu"
    )
    if not fast:
      return super().__call__(x, use_running_average, mask=mask)
    scale = self.scale[...].astype(jnp.float32)
    bias = self.bias[...].astype(jnp.float32)
    y, mean, var = normalize_train(x, scale, bias, self.epsilon)
    m = self.momentum
    self.mean[...] = m * self.mean[...] + (1 - m) * mean
    self.var[...] = m * self.var[...] + (1 - m) * var
    return y.astype(self.dtype or jnp.result_type(x, self.scale[...]))  # as nnx promotes
