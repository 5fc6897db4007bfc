"""A classical image branch for comparison: k-means features (Coates & Ng, 2011) + logistic
regression, late-fused with a text workdir like best.py's CNN branch.

  python benchmarks/kmeans_image_features.py runs/best/stage1_text runs/best/stage1_image \\
      --root ../shared/data/comp5329-dev [--size 32 --centroids 800]

Protocol of configs/best.py: features are learned (patch whitening, k-means) and the classifier
fitted on records 0..8999; the late-fusion mixing is fitted on 9000..9999 (val); the held-out
10000..11999 are scored with the expected-F1 rule. Images come from jaxmm's 64 px cache (built
here if missing). Per image: every PxP patch is brightness/contrast-normalised and ZCA-whitened,
encoded as max(0, mean_k d_k - d_k) over the K centroids (the "triangle" code) and sum-pooled over
the 2x2 quadrants, so an image is 4K numbers. Prints image-only and fused held-out samples-F1.
Needs scikit-learn (a dev dependency).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from late_fusion_offline import logit, member_probs  # noqa: E402

from jaxmm.data import comp5329, images as images_lib  # noqa: E402
from jaxmm.train import metrics, thresholds, two_stage  # noqa: E402

TRAIN, VAL, HELD = slice(0, 9000), slice(9000, 10000), slice(10000, 12000)


def _normalise(p):
  return (p - p.mean(-1, keepdims=True)) / jnp.sqrt(p.var(-1, keepdims=True) + 10.0)


def kmeans_features(x_NxSxSx3: np.ndarray, *, k: int, patch: int, seed: int = 0,
                    n_patches: int = 200_000, iters: int = 10, batch: int = 100) -> np.ndarray:
  """Learns whitening and k centroids on the TRAIN images' patches, then encodes every image."""
  rng = np.random.default_rng(seed)
  size = x_NxSxSx3.shape[1]
  ii = rng.integers(TRAIN.start, TRAIN.stop, n_patches)
  yy, xx = (rng.integers(0, size - patch + 1, n_patches) for _ in range(2))
  patches = np.asarray(_normalise(np.stack(
      [x_NxSxSx3[i, y:y + patch, x:x + patch].ravel() for i, y, x in zip(ii, yy, xx)])))
  mean = patches.mean(0)
  eig, vec = np.linalg.eigh(np.cov(patches - mean, rowvar=False))
  zca = jnp.asarray(vec @ np.diag(1 / np.sqrt(eig + 0.1)) @ vec.T, jnp.float32)
  white = jnp.asarray((patches - mean) @ np.asarray(zca))

  @jax.jit
  def kmeans_step(c):
    d2 = (white**2).sum(1)[:, None] - 2 * white @ c.T + (c**2).sum(1)[None]
    a = jnp.argmin(d2, 1)
    s = jax.ops.segment_sum(white, a, k)
    n = jax.ops.segment_sum(jnp.ones(len(white)), a, k)
    return jnp.where(n[:, None] > 0, s / jnp.maximum(n, 1)[:, None], c)

  cent = white[rng.choice(n_patches, k, replace=False)]
  for _ in range(iters):
    cent = kmeans_step(cent)
  mean = jnp.asarray(mean, jnp.float32)

  @jax.jit
  def encode(x_BxSxSx3):
    p = jax.lax.conv_general_dilated_patches(x_BxSxSx3, (patch, patch), (1, 1), "VALID",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
    b, h, w, d = p.shape  # channels come out channel-major: (3, P, P) -> our (P, P, 3) order
    p = p.reshape(b, h, w, 3, patch, patch).transpose(0, 1, 2, 4, 5, 3).reshape(b, h, w, d)
    p = (_normalise(p) - mean) @ zca
    dist = jnp.sqrt(jnp.maximum((p**2).sum(-1, keepdims=True) - 2 * p @ cent.T
                                + (cent**2).sum(1), 0))
    code = jnp.maximum(dist.mean(-1, keepdims=True) - dist, 0)
    half = h // 2
    code = code[:, :2 * half, :2 * half].reshape(b, 2, half, 2, half, k).sum((2, 4))
    return code.reshape(b, -1)

  return np.concatenate([np.asarray(encode(jnp.asarray(x_NxSxSx3[i:i + batch], jnp.float32)))
                         for i in range(0, len(x_NxSxSx3), batch)])


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("text_workdir")
  ap.add_argument("cnn_workdir", nargs="?", help="also fuse this image workdir (3 members)")
  ap.add_argument("--root", required=True)
  ap.add_argument("--size", type=int, default=32, help="64 px cache, mean-pooled to this size")
  ap.add_argument("--centroids", type=int, default=800)
  ap.add_argument("--patch", type=int, default=6)
  ap.add_argument("--C", type=float, default=0.01, help="inverse L2 strength of the classifier")
  args = ap.parse_args()
  t0 = time.time()
  csv = os.path.join(args.root, "train.csv")
  recs = comp5329.read_comp5329(csv)
  if len(recs) < HELD.stop:
    raise SystemExit(f"{csv}: {len(recs)} records; this protocol needs 0..{HELD.stop - 1}")
  y = np.stack([comp5329.labels_to_multihot(r.labels) for r in recs[:HELD.stop]])
  paths = [os.path.join(args.root, "data", r.image_id) for r in recs[:HELD.stop]]
  cache, _ = images_lib.cached_images(paths, 64)
  x = np.asarray(cache, np.float32)
  if args.size != 64:
    f = 64 // args.size
    x = x.reshape(-1, args.size, f, args.size, f, 3).mean((2, 4))
  feats = kmeans_features(x, k=args.centroids, patch=args.patch)
  feats = (feats - feats[TRAIN].mean(0)) / (feats[TRAIN].std(0) + 1e-3)
  t_feat = time.time() - t0
  img_val, img_held = np.zeros_like(y[VAL], float), np.zeros_like(y[HELD], float)
  for j in range(y.shape[1]):
    clf = LogisticRegression(C=args.C, max_iter=300).fit(feats[TRAIN], y[TRAIN, j])
    img_val[:, j] = clf.predict_proba(feats[VAL])[:, 1]
    img_held[:, j] = clf.predict_proba(feats[HELD])[:, 1]
  f1 = lambda yy, p: metrics.samples_f1(yy, thresholds.expected_f1_predictions(p))
  print(f"k-means features ({args.size} px, K={args.centroids}, {args.patch}x{args.patch} patches,"
        f" {feats.shape[1]} numbers): {t_feat:.0f} s; with the classifiers {time.time() - t0:.0f} s")
  print(f"image only: val {f1(y[VAL], img_val):.4f} held-out {f1(y[HELD], img_held):.4f}; "
        f"val AUC person {roc_auc_score(y[VAL, 0], img_val[:, 0]):.3f} "
        f"car {roc_auc_score(y[VAL, 2], img_val[:, 2]):.3f}")
  members = {"k-means": (img_val, img_held)}
  for w in filter(None, (args.text_workdir, args.cnn_workdir)):
    pv, ph, val, held = member_probs(w, csv, os.path.join(args.root, "data"), "10000:12000")
    if not np.array_equal(val.arrays["labels"], y[VAL]):
      raise SystemExit(f"{w}: its val split is not records 9000..9999 (use best.py's data setup)")
    members[w] = (pv, ph)
  sig = lambda z: 1 / (1 + np.exp(-z))
  names = list(members)
  combos = [[names[1]], [names[1], "k-means"]] + (
      [[names[1], names[2]], names] if len(names) == 3 else [])
  for combo in combos:
    zv = np.stack([logit(members[n][0]) for n in combo], 1)
    zh = np.stack([logit(members[n][1]) for n in combo], 1)
    mix, bias = two_stage.fit_logit_mixing(zv, y[VAL])
    pv, ph = sig((zv * mix).sum(1) + bias), sig((zh * mix).sum(1) + bias)
    print(f"{' + '.join(combo)}: val {f1(y[VAL], pv):.4f} held-out {f1(y[HELD], ph):.4f}")


if __name__ == "__main__":
  main()
