"""ConvAutoencoder: shapes, output range, and that a few Adam steps help."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxmm.models.autoencoder import ConvAutoencoder


def _images01(shape, seed=0):
  """Smooth-ish images in [0, 1] (a learnable signal, unlike pure noise)."""
  rng = np.random.default_rng(seed)
  b, h, w, c = shape
  yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
  freq = rng.uniform(1, 3, size=(b, 1, 1, c))
  phase = rng.uniform(0, 2 * np.pi, size=(b, 1, 1, c))
  img = 0.5 + 0.4 * np.sin(2 * np.pi * freq * (xx + yy)[None, :, :, None] + phase)
  return jnp.asarray(img, jnp.float32)


def test_shapes():
  # Default widths as in S0; abstract build + trace is enough for shapes.
  model = nnx.eval_shape(lambda: ConvAutoencoder(rngs=nnx.Rngs(0)))
  assert model.out_features == 128
  for size in (32, 64, 128):
    images = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    recon = nnx.eval_shape(lambda m, x: m.reconstruct(x), model, images)
    assert recon.shape == (2, size, size, 3)
    feats = nnx.eval_shape(lambda m, x: m.encode(x), model, images)
    assert feats.shape == (2, 128)
    latent = nnx.eval_shape(lambda m, x: m.latent_map(x), model, images)
    assert latent.shape == (2, size // 8, size // 8, 128)


def test_forward_range_and_errors():
  # Same widths as the Adam test, so the init kernels compile once.
  model = ConvAutoencoder((8, 16), latent_dim=16, rngs=nnx.Rngs(0))
  x = _images01((2, 32, 32, 3))
  recon = nnx.jit(lambda m, x: m(x))(model, x)
  assert recon.shape == x.shape
  assert float(recon.min()) >= 0.0 and float(recon.max()) <= 1.0  # sigmoid
  feats = nnx.jit(lambda m, x: m.encode(x))(model, x)
  assert feats.shape == (2, 16) and model.out_features == 16
  with pytest.raises(ValueError):  # 30 is not divisible by 2**2
    model.reconstruct(jnp.zeros((1, 30, 30, 3)))
  with pytest.raises(ValueError):
    ConvAutoencoder(output="tanh", rngs=nnx.Rngs(0))
  linear = nnx.eval_shape(
    lambda: ConvAutoencoder((8, 16), output="linear", in_channels=1, rngs=nnx.Rngs(0))
  )
  out = nnx.eval_shape(lambda m, x: m(x), linear, jax.ShapeDtypeStruct((2, 32, 32, 1), jnp.float32))
  assert out.shape == (2, 32, 32, 1)


def test_adam_reduces_mae():
  model = ConvAutoencoder((8, 16), latent_dim=16, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
  x = _images01((8, 32, 32, 3))

  @nnx.jit
  def train_step(model, optimizer, x):
    def loss_fn(model):
      return jnp.mean(jnp.abs(model.reconstruct(x) - x))

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  losses = [float(train_step(model, optimizer, x)) for _ in range(30)]
  assert all(np.isfinite(losses))
  assert losses[-1] < 0.7 * losses[0], losses
