"""Losses against hand-computed values on tiny inputs."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmm.train import losses

LOG2 = math.log(2.0)
SOFTPLUS2 = math.log1p(math.exp(2.0))  # -log(1 - sigmoid(2))
LOGITS = np.array([[0.0, 2.0]], np.float32)
LABELS = np.array([[1.0, 0.0]], np.float32)


def test_sigmoid_bce_hand_values():
  out = losses.sigmoid_bce(LOGITS, LABELS)
  assert out.shape == (1,)
  np.testing.assert_allclose(out, [(LOG2 + SOFTPLUS2) / 2], rtol=1e-6)
  out = losses.sigmoid_bce(LOGITS, LABELS, class_weights_L=np.array([2.0, 0.5]))
  np.testing.assert_allclose(out, [(2 * LOG2 + 0.5 * SOFTPLUS2) / 2], rtol=1e-6)
  # pos_weight scales only the positive term (torch's BCEWithLogitsLoss).
  out = losses.sigmoid_bce(LOGITS, LABELS, pos_weight_L=np.array([3.0, 3.0]))
  np.testing.assert_allclose(out, [(3 * LOG2 + SOFTPLUS2) / 2], rtol=1e-6)


def test_sigmoid_bce_matches_optax_and_is_stable():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(5, 18)).astype(np.float32) * 5
  labels = (rng.random((5, 18)) < 0.3).astype(np.float32)
  ref = optax.sigmoid_binary_cross_entropy(logits, labels).mean(-1)
  np.testing.assert_allclose(losses.sigmoid_bce(logits, labels), ref, rtol=1e-5)
  big = losses.sigmoid_bce(np.array([[100.0, -100.0]]), np.array([[0.0, 1.0]]))
  np.testing.assert_allclose(big, [100.0], rtol=1e-6)


def test_focal_hand_values():
  out = losses.focal_loss(LOGITS, LABELS, gamma=2.0, alpha=0.25)
  # label 1, p = 0.5: ce * (1 - 0.5)^2 * 0.25; label 0, p = s(2): ce * p^2 * 0.75.
  p = 1 / (1 + math.exp(-2.0))
  expected = (LOG2 * 0.25 * 0.25 + SOFTPLUS2 * p**2 * 0.75) / 2
  np.testing.assert_allclose(out, [expected], rtol=1e-6)


def test_focal_matches_optax_elementwise():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(4, 6)).astype(np.float32) * 3
  labels = (rng.random((4, 6)) < 0.4).astype(np.float32)
  ref = optax.sigmoid_focal_loss(logits, labels, alpha=0.25, gamma=2.0).mean(-1)
  np.testing.assert_allclose(losses.focal_loss(logits, labels), ref, rtol=1e-5)


def test_focal_reduces_to_bce():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(3, 5)).astype(np.float32)
  labels = (rng.random((3, 5)) < 0.5).astype(np.float32)
  bce = losses.sigmoid_bce(logits, labels)
  np.testing.assert_allclose(
    losses.focal_loss(logits, labels, gamma=0.0, alpha=None), bce, rtol=1e-6
  )
  # torchvision: a negative alpha switches the weighting off.
  np.testing.assert_allclose(
    losses.focal_loss(logits, labels, gamma=0.0, alpha=-1.0), bce, rtol=1e-6
  )
  # gamma = 0 keeps gradients finite even where p_t rounds to 1.
  grad = jax.grad(lambda x: losses.focal_loss(x, np.array([[1.0]]), gamma=0.0).sum())(
    jnp.array([[40.0]])
  )
  assert np.isfinite(grad).all()
  # gamma > 0 down-weights easy examples.
  easy = losses.focal_loss(np.array([[4.0]]), np.array([[1.0]]), alpha=None)
  assert easy[0] < 0.01 * losses.sigmoid_bce(np.array([[4.0]]), np.array([[1.0]]))[0]


def test_softmax_ce_and_binary_bce():
  out = losses.softmax_ce(np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]), np.array([2, 0]))
  np.testing.assert_allclose(
    out, [math.log(1 + math.exp(-1) + math.exp(-2)), math.log(3)], rtol=1e-6
  )
  out = losses.binary_bce(np.array([0.0, 2.0]), np.array([1, 0]))
  np.testing.assert_allclose(out, [LOG2, SOFTPLUS2], rtol=1e-6)
  out_b1 = losses.binary_bce(np.array([[0.0], [2.0]]), np.array([1, 0]))
  assert out_b1.shape == (2,)
  np.testing.assert_allclose(out_b1, out, rtol=1e-6)


def test_mae_means_all_but_batch_axis():
  pred = np.zeros((2, 2, 2), np.float32)
  target = np.array([[[1, 1], [1, 1]], [[0, 0], [0, -4]]], np.float32)
  np.testing.assert_allclose(losses.mae(pred, target), [1.0, 1.0])


def test_masked_mean_ignores_padding():
  loss = jnp.array([1.0, 2.0, jnp.nan, 7.0])
  mask = jnp.array([1, 1, 0, 0])
  assert float(losses.masked_mean(loss, mask)) == pytest.approx(1.5)
  assert float(losses.masked_mean(loss[:2])) == pytest.approx(1.5)
  assert float(losses.masked_mean(loss, jnp.zeros(4))) == 0.0
  grad = jax.grad(lambda loss_B: losses.masked_mean(loss_B, mask))(loss)
  np.testing.assert_allclose(grad, [0.5, 0.5, 0.0, 0.0])
  # End to end: padded rows do not move the loss.
  logits = np.array([[0.0, 2.0], [50.0, -50.0]], np.float32)
  labels = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
  padded = losses.masked_mean(losses.sigmoid_bce(logits, labels), np.array([1, 0]))
  np.testing.assert_allclose(padded, losses.sigmoid_bce(logits[:1], labels[:1])[0], rtol=1e-6)


def test_class_weights_from_frequencies():
  labels = np.array([[1, 1, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0]])  # counts 4, 1, 0
  w = losses.class_weights_from_frequencies(labels, "inverse")
  assert w.dtype == np.float32
  np.testing.assert_allclose(w, np.array([1, 4, 4]) * 3 / 9, rtol=1e-6)  # absent -> count 1
  w = losses.class_weights_from_frequencies(labels, "sqrt_inverse", normalize=False)
  np.testing.assert_allclose(w, [1, 2, 2], rtol=1e-6)
  w = losses.class_weights_from_frequencies(labels, "effective", beta=0.5, normalize=False)
  np.testing.assert_allclose(w, [0.5 / (1 - 0.5**4), 1.0, 1.0], rtol=1e-6)
  assert losses.class_weights_from_frequencies(labels, "effective").mean() == pytest.approx(1.0)
  with pytest.raises(ValueError):
    losses.class_weights_from_frequencies(labels, "bogus")
  np.testing.assert_allclose(losses.pos_weight_from_frequencies(labels), [0, 3, 4])


def test_loss_by_name():
  w = np.array([2.0, 0.5], np.float32)
  np.testing.assert_allclose(
    losses.loss_by_name("weighted_bce", class_weights_L=w)(LOGITS, LABELS),
    losses.sigmoid_bce(LOGITS, LABELS, class_weights_L=w),
  )
  np.testing.assert_allclose(
    losses.loss_by_name("focal", gamma=0.0, alpha=None)(LOGITS, LABELS),
    losses.sigmoid_bce(LOGITS, LABELS),
    rtol=1e-6,
  )
  for name in ("bce", "ce", "binary_bce", "mae"):
    assert callable(losses.loss_by_name(name))
  with pytest.raises(ValueError, match="class_weights_L"):
    losses.loss_by_name("weighted_bce")(LOGITS, LABELS)
  with pytest.raises(ValueError, match="unknown loss"):
    losses.loss_by_name("hinge")


def test_losses_jit():
  out = jax.jit(losses.focal_loss)(LOGITS, LABELS)
  np.testing.assert_allclose(out, losses.focal_loss(LOGITS, LABELS), rtol=1e-6)


def test_masked_token_ce_only_counts_masked_positions():
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((2, 4, 5)).astype(np.float32)
  targets = np.array([[3, -1, 1, -1], [-1, -1, -1, -1]], np.int32)  # -1: ignored
  mask = np.array([[1, 0, 1, 0], [0, 0, 0, 0]], np.float32)
  out = np.asarray(losses.masked_token_ce(logits, targets, mask))
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  np.testing.assert_allclose(out, [-(logp[0, 0, 3] + logp[0, 2, 1]) / 2, 0.0], rtol=1e-5)
  # Unmasked positions may hold anything, even non-finite logits, without touching the loss.
  logits[0, 1] = np.inf
  logits[1] = np.nan
  np.testing.assert_allclose(losses.masked_token_ce(logits, targets, mask), out, rtol=1e-6)
  grads = jax.grad(lambda x: losses.masked_token_ce(x, targets, mask).sum())(
    jnp.asarray(np.where(np.isfinite(logits), logits, 0.0))
  )
  assert float(jnp.abs(grads[0, 1]).sum()) == 0.0 and float(jnp.abs(grads[1]).sum()) == 0.0
  hits, count = losses.masked_token_hits(logits[:1], targets[:1], mask[:1])
  want = float(np.argmax(logits[0, 0]) == 3) + float(np.argmax(logits[0, 2]) == 1)
  assert float(hits[0]) == want and float(count[0]) == 2.0
