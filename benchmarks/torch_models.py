"""The benchmark models written once in PyTorch, with jaxmm's architecture and sizes.

Mirrors `jaxmm.models` as configured by benchmarks/compare_torch.py: torchvision-layout ResNet
(7x7/2 stem + max-pool, BasicBlock / Bottleneck with the stride on the 3x3 conv), a Bi-LSTM over
packed sequences ('last' pooling = final states of both directions, what jaxmm's length-aware scan
computes), a Bi-GRU with additive attention masked to the real tokens, and the concat -> MLP head.
Images arrive as uint8 NHWC and are normalised inside the model, as jaxmm does inside its step.
`length_B` is an int64 CPU tensor on every device (pack_padded_sequence wants it there; keeping it
there avoids a device-to-host sync per step on a GPU). Imported by `benchmarks/compare_torch.py`
(needs torch: `pip install -e '.[dev,torch]'`). Run on its own, it times `train_runner` on a batch
saved with numpy, in a process without jax (benchmarks/gpu_throughput.py does so: torch's CUDA
libraries never meet jax's in one process, and a torch failure cannot take jax's figures with it):

  python benchmarks/torch_models.py --batch-npz batch.npz --image resnet50 --text lstm --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
from torch import nn

MEAN_RGB = (0.485, 0.456, 0.406)
STD_RGB = (0.229, 0.224, 0.225)


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, cin: int, planes: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = (
      nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
      if stride != 1 or cin != planes
      else None
    )

  def forward(self, x):
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, cin: int, planes: int, stride: int):
    super().__init__()
    out = planes * 4
    self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(out)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = (
      nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))
      if stride != 1 or cin != out
      else None
    )

  def forward(self, x):
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
  """ResNet trunk + global average pool -> (B, D); ImageNet stem."""

  def __init__(self, stage_sizes, block, num_filters: int = 64):
    super().__init__()
    self.stem = nn.Sequential(
      nn.Conv2d(3, num_filters, 7, 2, 3, bias=False),
      nn.BatchNorm2d(num_filters),
      nn.ReLU(inplace=True),
      nn.MaxPool2d(3, 2, 1),
    )
    layers, cin = [], num_filters
    for i, n in enumerate(stage_sizes):
      for j in range(n):
        layers.append(block(cin, num_filters * 2**i, 2 if (i > 0 and j == 0) else 1))
        cin = num_filters * 2**i * block.expansion
    self.layers = nn.Sequential(*layers)
    self.out_features = cin
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

  def forward(self, x):
    return self.layers(self.stem(x)).mean((2, 3))


RESNETS = {"resnet18": ((2, 2, 2, 2), BasicBlock), "resnet50": ((3, 4, 6, 3), Bottleneck)}


class BiLSTMTower(nn.Module):
  def __init__(self, vocab: int, embed: int, hidden: int):
    super().__init__()
    self.embed = nn.Embedding(vocab, embed)
    self.lstm = nn.LSTM(embed, hidden, batch_first=True, bidirectional=True)
    self.out_features = 2 * hidden

  def forward(self, tokens_BxT, length_B):
    x = nn.utils.rnn.pack_padded_sequence(
      self.embed(tokens_BxT), length_B, batch_first=True, enforce_sorted=False
    )
    _, (h_n, _) = self.lstm(x)
    return torch.cat([h_n[0], h_n[1]], dim=-1)


class BiGRUAttentionTower(nn.Module):
  def __init__(self, vocab: int, embed: int, hidden: int):
    super().__init__()
    self.embed = nn.Embedding(vocab, embed)
    self.gru = nn.GRU(embed, hidden, batch_first=True, bidirectional=True)
    self.out_features = 2 * hidden
    self.attn_proj = nn.Linear(2 * hidden, 2 * hidden)
    self.attn_query = nn.Linear(2 * hidden, 1, bias=False)

  def forward(self, tokens_BxT, length_B):
    num_steps = tokens_BxT.shape[1]
    x = nn.utils.rnn.pack_padded_sequence(
      self.embed(tokens_BxT), length_B, batch_first=True, enforce_sorted=False
    )
    h, _ = self.gru(x)
    h_BxTxD, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=num_steps)
    scores = self.attn_query(torch.tanh(self.attn_proj(h_BxTxD)))[..., 0]
    length_dev = length_B.to(tokens_BxT.device, non_blocking=True)
    mask = torch.arange(num_steps, device=tokens_BxT.device)[None, :] < length_dev[:, None]
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return torch.einsum("bt,btd->bd", weights.to(h_BxTxD.dtype), h_BxTxD)


class FusionClassifier(nn.Module):
  """[image tower; text tower] -> Linear -> ReLU -> Dropout -> Linear(num_outputs)."""

  def __init__(
    self,
    image: str | None,
    text: str | None,
    *,
    vocab: int,
    embed: int,
    hidden: int,
    width: int = 64,
    head_hidden: int = 512,
    dropout: float = 0.2,
    num_outputs: int = 18,
    channels_last: bool = False,
  ):
    super().__init__()
    self.image = ResNet(*RESNETS[image], num_filters=width) if image else None
    towers = {"lstm": BiLSTMTower, "gru_attention": BiGRUAttentionTower}
    self.text = towers[text](vocab, embed, hidden) if text else None
    self.channels_last = channels_last
    d = (self.image.out_features if self.image else 0) + (
      self.text.out_features if self.text else 0
    )
    self.head = nn.Sequential(
      nn.Linear(d, head_hidden),
      nn.ReLU(inplace=True),
      nn.Dropout(dropout),
      nn.Linear(head_hidden, num_outputs),
    )
    self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1))
    self.register_buffer("std", torch.tensor(STD_RGB).view(1, 3, 1, 1))

  def forward(self, image_BxHxWx3, tokens_BxT, length_B):
    feats = []
    if self.image is not None:
      x = image_BxHxWx3.permute(0, 3, 1, 2).float().div_(255.0)
      x = (x - self.mean) / self.std
      if self.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
      feats.append(self.image(x).float())
    if self.text is not None:
      feats.append(self.text(tokens_BxT, length_B).float())
    return self.head(torch.cat(feats, dim=-1))


def train_runner(
  image: str | None,
  text: str | None,
  batch_np: dict,
  *,
  vocab: int,
  embed: int,
  hidden: int,
  width: int,
  cuda: bool,
  threads: int,
):
  """-> run(n): n Adam steps of FusionClassifier on the batch (kept on the device), BCE with
  logits; on CUDA with autocast(bf16) + channels_last, else float32. run returns the last loss."""
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  device = torch.device("cuda" if cuda else "cpu")
  model = FusionClassifier(
    image, text, vocab=vocab, embed=embed, hidden=hidden, width=width, channels_last=cuda
  ).to(device)
  if cuda:
    model = model.to(memory_format=torch.channels_last)
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)
  loss_fn = nn.BCEWithLogitsLoss()
  img = torch.from_numpy(batch_np["image"]).to(device) if image else None
  tokens = torch.from_numpy(batch_np["tokens"]).long().to(device)
  length = torch.from_numpy(batch_np["length"]).long()  # stays on the CPU (see above)
  labels = torch.from_numpy(batch_np["labels"]).to(device)
  model.train()

  def run(n: int) -> float:
    for _ in range(n):
      opt.zero_grad(set_to_none=True)
      with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
        logits = model(img, tokens, length)
      loss = loss_fn(logits.float(), labels)
      loss.backward()
      opt.step()
    if cuda:
      torch.cuda.synchronize()
    return float(loss.detach())

  return run


def main(argv=None):
  p = argparse.ArgumentParser(description="torch train steps/s of one benchmark model")
  p.add_argument("--batch-npz", required=True, help="image (uint8 NHWC), tokens, length, labels")
  p.add_argument("--image", default="", help="resnet18 | resnet50 | '' (none)")
  p.add_argument("--text", default="lstm", help="lstm | gru_attention | '' (none)")
  p.add_argument("--vocab", type=int, default=5000)
  p.add_argument("--embed", type=int, default=128)
  p.add_argument("--hidden", type=int, default=128)
  p.add_argument("--width", type=int, default=64)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--threads", type=int, default=os.cpu_count())
  p.add_argument("--cpu", action="store_true", help="stay on the CPU with a GPU present")
  p.add_argument("--json", action="store_true", help="one JSON object as the last line")
  args = p.parse_args(argv)
  with np.load(args.batch_npz) as f:
    batch_np = {k: f[k] for k in f.files}
  cuda = torch.cuda.is_available() and not args.cpu
  run = train_runner(
    args.image or None,
    args.text or None,
    batch_np,
    vocab=args.vocab,
    embed=args.embed,
    hidden=args.hidden,
    width=args.width,
    cuda=cuda,
    threads=args.threads,
  )
  t0 = time.perf_counter()
  loss = run(args.warmup)
  print(f"  torch warm-up {time.perf_counter() - t0:.1f} s, loss {loss:.4f}", file=sys.stderr)
  rates = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    loss = run(args.steps)
    rates.append(args.steps / (time.perf_counter() - t0))
  out = {
    "torch": torch.__version__,
    "device": torch.cuda.get_device_name() if cuda else "cpu",
    "amp_bf16": cuda,
    "steps_per_s": round(statistics.median(rates), 3),
    "loss": loss,
  }
  print(json.dumps(out) if args.json else out, flush=True)
  return out


if __name__ == "__main__":
  main()
