"""Control for best.py's image stage: the same image-only model in PyTorch, on the same images.

  python benchmarks/torch_image_control.py --root ../shared/data/comp5329-dev [--epochs 3]

jaxmm's image-only stage (half-width ResNet-18, 64 px, Adam 2e-3, head 512 with dropout 0.3, BCE)
sits at the label prior for ~10 epochs. Is that jaxmm or the task? This trains the torch twin of
that model (benchmarks/torch_models.py) on records 0..8999 of jaxmm's 64 px image cache, with a
pad-and-crop + mirror augmentation, and prints the train loss every 70 steps and, per epoch, the
val loss and val AUC of 'person' and 'car' on records 9000..9999. The label prior's loss is ~0.19.
Needs torch (benchmarks only).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_models import FusionClassifier  # noqa: E402

from jaxmm.data import comp5329, images as images_lib  # noqa: E402


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--root", required=True)
  ap.add_argument("--epochs", type=int, default=3)
  ap.add_argument("--lr", type=float, default=2e-3)
  ap.add_argument("--dropout", type=float, default=0.3)
  ap.add_argument("--width", type=int, default=32)
  args = ap.parse_args()
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count() or 1)
  recs = comp5329.read_comp5329(os.path.join(args.root, "train.csv"))[:10000]
  y = np.stack([comp5329.labels_to_multihot(r.labels) for r in recs]).astype(np.float32)
  cache, _ = images_lib.cached_images([os.path.join(args.root, "data", r.image_id) for r in recs],
                                      64)
  x = np.array(cache)  # a writable copy: torch.from_numpy warns on the read-only memmap
  model = FusionClassifier("resnet18", None, vocab=1, embed=1, hidden=1, width=args.width,
                           dropout=args.dropout)
  opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
  loss_fn = torch.nn.BCEWithLogitsLoss()
  rng = np.random.default_rng(0)

  def augment(batch):
    out = np.empty_like(batch)
    for i, im in enumerate(batch):
      padded = np.pad(im, ((6, 6), (6, 6), (0, 0)), mode="reflect")
      top, left = rng.integers(0, 13, 2)
      im = padded[top:top + 64, left:left + 64]
      out[i] = im[:, ::-1] if rng.random() < 0.5 else im
    return out

  start, step, losses = time.time(), 0, []
  for epoch in range(args.epochs):
    model.train()
    order = rng.permutation(9000)
    for s in range(0, 9000 - 31, 32):
      idx = order[s:s + 32]
      loss = loss_fn(model(torch.from_numpy(augment(x[idx])), None, None), torch.from_numpy(y[idx]))
      opt.zero_grad()
      loss.backward()
      opt.step()
      losses.append(loss.item())
      step += 1
      if step % 70 == 0:
        print(f"step {step}: train loss {np.mean(losses[-70:]):.4f} ({time.time() - start:.0f} s)",
              flush=True)
    model.eval()
    with torch.no_grad():
      p = torch.sigmoid(torch.cat([model(torch.from_numpy(x[i:i + 200]), None, None)
                                   for i in range(9000, 10000, 200)])).numpy()
    yv = y[9000:10000]
    val_loss = -np.mean(yv * np.log(p + 1e-7) + (1 - yv) * np.log(1 - p + 1e-7))
    print(f"epoch {epoch + 1}: val loss {val_loss:.4f}, val AUC person "
          f"{roc_auc_score(yv[:, 0], p[:, 0]):.3f} car {roc_auc_score(yv[:, 2], p[:, 2]):.3f}",
          flush=True)


if __name__ == "__main__":
  main()
