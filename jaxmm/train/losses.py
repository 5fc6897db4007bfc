"""Per-example losses (shape (B,)) so the caller can mask padded rows and average.

Multi-label losses average over the L labels, like PyTorch's `reduction="mean"` divided out
per row; `masked_mean` then averages over real rows only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax


def _bce_terms(logits):
  """(-log sigmoid(x), -log(1 - sigmoid(x))) computed stably via softplus."""
  return jax.nn.softplus(-logits), jax.nn.softplus(logits)


def sigmoid_bce(logits_BxL, labels_BxL, *, class_weights_L=None, pos_weight_L=None):
  """Binary cross-entropy with logits, mean over labels: (B,).

  As torch's BCEWithLogitsLoss(weight=class_weights_L, pos_weight=pos_weight_L):
  -w_l [p_l y log s(x) + (1 - y) log(1 - s(x))].
  """
  logits = jnp.asarray(logits_BxL, jnp.float32)
  labels = jnp.asarray(labels_BxL, logits.dtype)
  neg_log_p, neg_log_not_p = _bce_terms(logits)
  pos = labels * neg_log_p
  if pos_weight_L is not None:
    pos = pos * jnp.asarray(pos_weight_L, logits.dtype)
  loss_BxL = pos + (1.0 - labels) * neg_log_not_p
  if class_weights_L is not None:
    loss_BxL = loss_BxL * jnp.asarray(class_weights_L, logits.dtype)
  return jnp.mean(loss_BxL, axis=-1)


def focal_loss(logits_BxL, labels_BxL, *, gamma: float = 2.0, alpha: float | None = 0.25):
  """Sigmoid focal loss (torchvision.ops.sigmoid_focal_loss), mean over labels: (B,).

  ce * (1 - p_t)**gamma, times alpha_t = alpha y + (1 - alpha)(1 - y) when alpha is not None
  and >= 0 (torchvision skips the weighting for alpha < 0).
  """
  logits = jnp.asarray(logits_BxL, jnp.float32)
  labels = jnp.asarray(labels_BxL, logits.dtype)
  neg_log_p, neg_log_not_p = _bce_terms(logits)
  ce = labels * neg_log_p + (1.0 - labels) * neg_log_not_p
  p = jax.nn.sigmoid(logits)
  p_t = p * labels + (1.0 - p) * (1.0 - labels)
  # gamma = 0 skips the power: d/dx x**0 at x = 0 is nan in jax.
  loss_BxL = ce if isinstance(gamma, (int, float)) and gamma == 0 else ce * (1.0 - p_t) ** gamma
  if alpha is not None and alpha >= 0:
    loss_BxL = loss_BxL * (alpha * labels + (1.0 - alpha) * (1.0 - labels))
  return jnp.mean(loss_BxL, axis=-1)


def softmax_ce(logits_BxC, label_B):
  """Softmax cross-entropy against integer class ids: (B,)."""
  logits = jnp.asarray(logits_BxC, jnp.float32)
  return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(label_B, jnp.int32))


def binary_bce(logit_B, label_B):
  """BCE with one logit per example ((B,) or (B, 1)) against {0,1} labels: (B,)."""
  logit = jnp.asarray(logit_B, jnp.float32)
  if logit.ndim == 2 and logit.shape[-1] == 1:
    logit = logit[:, 0]
  label = jnp.asarray(label_B, logit.dtype).reshape(logit.shape)
  neg_log_p, neg_log_not_p = _bce_terms(logit)
  return label * neg_log_p + (1.0 - label) * neg_log_not_p


def in_batch_contrastive(image_BxD, text_BxD, positive_B, *, temperature: float = 0.1):
  """Symmetric InfoNCE over the matching pairs of a batch (CLIP-style), a scalar.

  Each positive pair's image must pick its caption among all captions of the batch, and its
  caption its image among all images; rows with positive_B = 0 (non-matching or padded pairs)
  serve only as extra candidates. 0 when the batch has no positive pair.
  """
  img = image_BxD / (jnp.linalg.norm(image_BxD, axis=-1, keepdims=True) + 1e-6)
  txt = text_BxD / (jnp.linalg.norm(text_BxD, axis=-1, keepdims=True) + 1e-6)
  sim_BxB = (img @ txt.T).astype(jnp.float32) / temperature
  idx = jnp.arange(sim_BxB.shape[0])
  i2t = optax.softmax_cross_entropy_with_integer_labels(sim_BxB, idx)
  t2i = optax.softmax_cross_entropy_with_integer_labels(sim_BxB.T, idx)
  pos = jnp.asarray(positive_B, jnp.float32)
  return jnp.sum(pos * (i2t + t2i) / 2) / jnp.maximum(jnp.sum(pos), 1.0)


def mae(pred, target):
  """Mean absolute error over all but the batch axis: (B,)."""
  diff = jnp.abs(jnp.asarray(pred, jnp.float32) - jnp.asarray(target, jnp.float32))
  return jnp.mean(diff.reshape(diff.shape[0], -1), axis=-1)


def masked_mean(loss_B, mask_B=None):
  """Mean of loss_B over rows with mask 1; 0 when no row is real. mask_B None = all real."""
  loss = jnp.asarray(loss_B)
  if mask_B is None:
    return jnp.mean(loss)
  mask = jnp.asarray(mask_B, loss.dtype).reshape(loss.shape)
  # `where`, not `loss * mask`: a padded row's loss may be inf/nan and 0 * nan = nan.
  total = jnp.sum(jnp.where(mask > 0, loss * mask, 0.0))
  return total / jnp.maximum(jnp.sum(mask), 1.0)


def class_weights_from_frequencies(
  labels_NxL, scheme: str = "inverse", *, beta: float = 0.999, normalize: bool = True
) -> np.ndarray:
  """Per-label weights (L,) float32 from positive counts n_l over N rows.

  'inverse': N / n_l; 'sqrt_inverse': sqrt(N / n_l); 'effective': (1 - beta) / (1 - beta**n_l)
  (Cui et al. 2019, class-balanced loss). Counts are clipped to >= 1 so an absent label gets a
  finite (largest) weight. normalize=True rescales the weights to mean 1, keeping the loss
  scale (and so the learning rate) comparable to unweighted BCE.
  """
  labels = np.asarray(labels_NxL) > 0.5
  if labels.ndim != 2 or labels.shape[0] == 0:
    raise ValueError(f"labels must be (N, L) with N > 0; got shape {labels.shape}")
  n_L = np.maximum(labels.sum(axis=0).astype(np.float64), 1.0)
  num = float(labels.shape[0])
  if scheme == "inverse":
    w_L = num / n_L
  elif scheme == "sqrt_inverse":
    w_L = np.sqrt(num / n_L)
  elif scheme == "effective":
    if not 0.0 <= beta < 1.0:
      raise ValueError(f"effective-number weights need 0 <= beta < 1; got {beta}")
    w_L = (1.0 - beta) / (1.0 - np.power(beta, n_L))
  else:
    raise ValueError(
      f"unknown class-weight scheme {scheme!r}; expected 'inverse', 'sqrt_inverse' or 'effective'"
    )
  if normalize:
    w_L = w_L * (len(w_L) / w_L.sum())
  return w_L.astype(np.float32)


def pos_weight_from_frequencies(labels_NxL, *, max_weight: float | None = None) -> np.ndarray:
  """torch-style pos_weight (L,) = negatives / positives per label (counts clipped to >= 1)."""
  labels = np.asarray(labels_NxL) > 0.5
  count_L = labels.sum(axis=0).astype(np.float64)
  w_L = (labels.shape[0] - count_L) / np.maximum(count_L, 1.0)
  if max_weight is not None:
    w_L = np.minimum(w_L, max_weight)
  return np.maximum(w_L, 0.0).astype(np.float32)


def _weighted_bce(logits_BxL, labels_BxL, *, class_weights_L=None, pos_weight_L=None):
  if class_weights_L is None and pos_weight_L is None:
    raise ValueError(
      "'weighted_bce' needs class_weights_L and/or pos_weight_L "
      "(see class_weights_from_frequencies)"
    )
  return sigmoid_bce(
    logits_BxL, labels_BxL, class_weights_L=class_weights_L, pos_weight_L=pos_weight_L
  )


_LOSSES: dict[str, Callable] = {
  "bce": sigmoid_bce,
  "weighted_bce": _weighted_bce,
  "focal": focal_loss,
  "ce": softmax_ce,
  "binary_bce": binary_bce,
  "mae": mae,
}


def loss_by_name(name: str, **kwargs) -> Callable:
  """The per-example loss `name`, with keyword arguments (weights, gamma, ...) bound."""
  if name not in _LOSSES:
    raise ValueError(f"unknown loss {name!r}; expected one of {sorted(_LOSSES)}")
  fn = _LOSSES[name]
  return functools.partial(fn, **kwargs) if kwargs else fn


def masked_token_ce(logits_BxTxV, targets_BxT, mask_BxT):
  """Softmax cross-entropy at the masked positions only, mean per example: (B,).

  targets_BxT may hold any value (e.g. an ignore id of -1) where mask_BxT is 0; a row with no
  masked position gives 0.
  """
  logits = jnp.asarray(logits_BxTxV, jnp.float32)
  mask = jnp.asarray(mask_BxT, logits.dtype)
  # Ignored positions get a valid class (0) so the CE stays finite; `where` drops them after.
  targets = jnp.where(mask > 0, jnp.asarray(targets_BxT, jnp.int32), 0)
  ce_BxT = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  total = jnp.sum(jnp.where(mask > 0, ce_BxT * mask, 0.0), axis=-1)
  return total / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)


def masked_token_hits(logits_BxTxV, targets_BxT, mask_BxT):
  """(correct predictions, masked positions) per example, each (B,): token accuracy as sums."""
  mask = jnp.asarray(mask_BxT) > 0
  hits = (jnp.argmax(logits_BxTxV, axis=-1) == jnp.asarray(targets_BxT)) & mask
  return hits.sum(-1).astype(jnp.float32), mask.sum(-1).astype(jnp.float32)
