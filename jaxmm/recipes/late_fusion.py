"""Late fusion: the per-class logistic mixing of branch logits, fitted on held-out predictions."""

from __future__ import annotations

import logging

import jax.numpy as jnp
import numpy as np

log = logging.getLogger("jaxmm")


def fit_logit_mixing(
  branch_logits_NxBxL: np.ndarray, labels_NxL: np.ndarray, *, l2: float = 1e-3, iters: int = 100
) -> tuple[np.ndarray, np.ndarray]:
  """Per class, the logistic regression of the label on the branches' logits: returns mix (B, L)
  and bias (L,) maximising the val likelihood minus an L2 penalty (l2 * N on the weights, 1e-4 * N
  on the bias). Newton's method with step halving, so every step lowers the penalised loss: plain
  Newton diverges on a class that one branch separates perfectly."""
  n, num_branches, num_labels = branch_logits_NxBxL.shape
  mix = np.zeros((num_branches, num_labels))
  bias = np.zeros(num_labels)
  reg = np.full(num_branches + 1, l2 * n)
  reg[-1] = 1e-4 * n  # a class absent from val still gets a finite bias

  def loss(x, y, w):
    z = x @ w
    return (np.logaddexp(0.0, z) - y * z).sum() + 0.5 * (reg * w * w).sum()

  for c in range(num_labels):
    x = np.concatenate([branch_logits_NxBxL[:, :, c], np.ones((n, 1))], 1).astype(np.float64)
    y = labels_NxL[:, c].astype(np.float64)
    w = np.full(num_branches + 1, 1.0 / num_branches)  # start: the mean of the logits
    w[-1] = 0.0
    current = loss(x, y, w)
    for _ in range(iters):
      p = 0.5 * (1.0 + np.tanh(0.5 * (x @ w)))  # the logistic function, overflow-free
      grad = x.T @ (p - y) + reg * w
      hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(reg)
      step = np.linalg.solve(hess, grad)
      t = 1.0
      while t > 1e-10 and loss(x, y, w - t * step) > current:
        t *= 0.5
      w, previous = w - t * step, current
      current = loss(x, y, w)
      if previous - current < 1e-10 * max(1.0, abs(current)):
        break
    mix[:, c], bias[c] = w[:-1], w[-1]
  return mix.astype(np.float32), bias.astype(np.float32)


def fit_into(model, branch_logits_NxBxL: np.ndarray, labels_NxL: np.ndarray) -> list:
  """Fits the mixing and sets it in a LateFusionClassifier (`mix`, `bias`); returns the mix. Fit
  on val: the branches saw val only for early stopping, so their val logits are not overfit the
  way train logits are."""
  mix, bias = fit_logit_mixing(branch_logits_NxBxL, labels_NxL)
  model.mix[...] = jnp.asarray(mix)
  model.bias[...] = jnp.asarray(bias)
  log.info(
    "late fusion: weights fitted on %d examples; mean image %.3f, text %.3f",
    len(labels_NxL),
    mix[0].mean(),
    mix[1].mean(),
  )
  return mix.tolist()
