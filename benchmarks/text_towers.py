"""Bi-LSTM text tower train-step speed on CPU: jaxmm's fused tower vs flax nnx.RNN vs torch.

One jitted train step = embedding -> Bi-LSTM ('last' pooling) -> Linear(., 1) -> BCE -> Adam.
Default shapes: vocab 5000, emb 128, hidden 128, T 32, batch 128; lengths uniform in [4, T].

  python benchmarks/text_towers.py                                       # full table
  python benchmarks/text_towers.py --unrolls 1,2,4 --variants fused,flax
  OMP_WAIT_POLICY=PASSIVE python benchmarks/text_towers.py --no-mmap

Rows: steps/s (median of `--repeats` timings of `--steps` steps after warm-up; variants take turns
so load drift hits all alike) and process CPU ms/step. XLA uses every core the process may run on
(`taskset -c 0,1` pins it to 2 cores on a bigger box); torch gets `--threads`. torch rows appear
only when torch is importable (optional dependency: `pip install torch==2.13.0`).

On a shared machine read it with care: under load torch's OpenMP workers spin and its wall time
collapses (OMP_WAIT_POLICY=PASSIVE avoids that), and XLA's per-step temp buffer (> 32 MiB) is a
fresh mmap every step unless `--no-mmap` raises glibc's thresholds (~15-20% CPU for jax and torch).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxmm.models import text as text_lib


class FlaxBiLSTM(nnx.Module):
  """Reference tower: nnx.Bidirectional(nnx.RNN(LSTMCell)) with seq_lengths, 'last' pooling."""

  def __init__(
    self, vocab_size: int, embed_dim: int, hidden_size: int, *, unroll: int = 1, rngs: nnx.Rngs
  ):
    self.embed = nnx.Embed(vocab_size, embed_dim, rngs=rngs)
    cell = lambda: nnx.LSTMCell(embed_dim, hidden_size, rngs=rngs)
    self.rnn = nnx.Bidirectional(
      nnx.RNN(cell(), unroll=unroll), nnx.RNN(cell(), unroll=unroll), return_carry=True
    )
    self.out_features = 2 * hidden_size

  def encode(self, tokens_BxT, length_B, *, rngs=None):
    (carry_f, carry_b), _ = self.rnn(self.embed(tokens_BxT), seq_lengths=length_B)
    return jnp.concatenate([carry_f[1], carry_b[1]], axis=-1)


class Classifier(nnx.Module):
  """Tower + linear head producing one logit."""

  def __init__(self, tower: nnx.Module, *, rngs: nnx.Rngs):
    self.tower = tower
    self.head = nnx.Linear(tower.out_features, 1, rngs=rngs)

  def __call__(self, tokens_BxT, length_B):
    return self.head(self.tower.encode(tokens_BxT, length_B))[:, 0]


def keep_heap_buffers():
  """glibc serves allocations above M_MMAP_THRESHOLD (dynamic, at most 32 MiB) with fresh mmaps,
  and XLA's temp buffer for a step is larger, so every step page-faults it in again. Raising the
  thresholds keeps freed buffers in the heap for reuse. Affects jax and torch alike."""
  import ctypes

  libc = ctypes.CDLL("libc.so.6")
  m_trim_threshold, m_mmap_threshold = -1, -3
  libc.mallopt(m_mmap_threshold, 1 << 30)
  libc.mallopt(m_trim_threshold, 1 << 30)


def make_batches(args, num: int = 4):
  rng = np.random.default_rng(0)
  batches = []
  for _ in range(num):
    length_B = rng.integers(4, args.length + 1, size=args.batch).astype(np.int32)
    tokens_BxT = rng.integers(1, args.vocab, size=(args.batch, args.length)).astype(np.int32)
    tokens_BxT[np.arange(args.length)[None, :] >= length_B[:, None]] = 0
    labels_B = rng.integers(0, 2, size=args.batch).astype(np.float32)
    batches.append((tokens_BxT, length_B, labels_B))
  return batches


def warm_up(step, batches, args):
  for k in range(args.warmup):
    step(*batches[k % len(batches)])
  return step


def time_round_robin(variants, args) -> dict[str, tuple[float, float]]:
  """Median (steps/s, CPU ms/step) per variant; variants take turns each repeat, so load drift
  from other processes hits all alike. CPU time (all threads of this process) is steadier than
  wall time on a shared machine, but counts OpenMP spin-waiting (inflates torch)."""
  rates = {label: [] for label, _, _ in variants}
  cpu_ms = {label: [] for label, _, _ in variants}
  for _ in range(args.repeats):
    for label, step, batches in variants:
      start, cpu_start = time.perf_counter(), time.process_time()
      for k in range(args.steps):
        step(*batches[k % len(batches)])
      rates[label].append(args.steps / (time.perf_counter() - start))
      cpu_ms[label].append((time.process_time() - cpu_start) / args.steps * 1e3)
      time.sleep(0.2)  # let torch's OpenMP workers stop spinning before the next variant
  return {
    label: (statistics.median(rates[label]), statistics.median(cpu_ms[label])) for label in rates
  }


def jax_step(tower: nnx.Module, batches, args):
  """Compiled train step (tower + linear head, BCE, Adam) that blocks until done."""
  model = Classifier(tower, rngs=nnx.Rngs(1))
  optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer, tokens_BxT, length_B, labels_B):
    def loss_fn(model):
      return optax.sigmoid_binary_cross_entropy(model(tokens_BxT, length_B), labels_B).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  step_fn = nnx.cached_partial(train_step, model, optimizer)
  jax_batches = [tuple(jnp.asarray(a) for a in b) for b in batches]
  step = lambda *b: step_fn(*b).block_until_ready()
  return warm_up(step, jax_batches, args), jax_batches


def torch_step(batches, args, packed: bool):
  import torch
  from torch import nn

  torch.set_num_threads(args.threads)
  torch.manual_seed(0)

  class TorchBiLSTM(nn.Module):
    def __init__(self):
      super().__init__()
      self.embed = nn.Embedding(args.vocab, args.embed, padding_idx=0)
      self.lstm = nn.LSTM(args.embed, args.hidden, batch_first=True, bidirectional=True)
      self.head = nn.Linear(2 * args.hidden, 1)

    def forward(self, tokens_BxT, length_B):
      x = self.embed(tokens_BxT)
      if packed:
        x = nn.utils.rnn.pack_padded_sequence(x, length_B, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(x)
        feats = torch.cat([h_n[0], h_n[1]], dim=-1)
      else:  # plain: reads the padding, 'last' = output at the final step (what naive code does)
        out, _ = self.lstm(x)
        feats = out[:, -1]
      return self.head(feats)[:, 0]

  model = TorchBiLSTM()
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  loss_fn = nn.BCEWithLogitsLoss()
  torch_batches = [
    (torch.from_numpy(t).long(), torch.from_numpy(length).long(), torch.from_numpy(y))
    for t, length, y in batches
  ]

  def step(tokens_BxT, length_B, labels_B):
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(tokens_BxT, length_B), labels_B)
    loss.backward()
    optimizer.step()
    return loss.item()

  return warm_up(step, torch_batches, args), torch_batches


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--vocab", type=int, default=5000)
  parser.add_argument("--embed", type=int, default=128)
  parser.add_argument("--hidden", type=int, default=128)
  parser.add_argument("--length", type=int, default=32)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument(
    "--unrolls",
    default=str(text_lib.DEFAULT_UNROLL),
    help="comma-separated scan unroll factors for the fused tower",
  )
  parser.add_argument("--variants", default="fused,autodiff,flax,torch_packed,torch_plain")
  parser.add_argument(
    "--no-mmap",
    action="store_true",
    help="mallopt: serve big buffers from the heap instead of fresh mmaps "
    "(avoids page faults on XLA's per-step temp buffer; see docstring)",
  )
  args = parser.parse_args()
  if args.no_mmap:
    keep_heap_buffers()
  wanted = args.variants.split(",")
  unrolls = [int(u) for u in args.unrolls.split(",")]
  batches = make_batches(args)
  sizes = dict(vocab_size=args.vocab, embed_dim=args.embed, hidden_size=args.hidden)

  variants = []  # (label, step, batches)
  for unroll in unrolls:
    if "fused" in wanted:
      tower = text_lib.LSTMTower(**sizes, unroll=unroll, rngs=nnx.Rngs(0))
      variants.append(
        (
          f"jaxmm LSTMTower (fused scan, custom VJP), unroll={unroll}",
          *jax_step(tower, batches, args),
        )
      )
    if "autodiff" in wanted:
      # Same fused forward, differentiated by JAX: swap the layer function while tracing.
      custom, text_lib.fused_lstm_layer = text_lib.fused_lstm_layer, text_lib.lstm_layer_autodiff
      try:
        tower = text_lib.LSTMTower(**sizes, unroll=unroll, rngs=nnx.Rngs(0))
        variants.append(
          (f"jaxmm fused scan, JAX autodiff, unroll={unroll}", *jax_step(tower, batches, args))
        )
      finally:
        text_lib.fused_lstm_layer = custom
  if "flax" in wanted:
    variants.append(
      (
        "flax Bidirectional(RNN(LSTMCell)), seq_lengths",
        *jax_step(FlaxBiLSTM(**sizes, rngs=nnx.Rngs(0)), batches, args),
      )
    )
  try:
    import torch  # noqa: F401

    have_torch = True
  except ImportError:
    have_torch = False
    print("torch not importable: skipping torch rows")
  torch_labels = {}
  for name, packed in (("torch_packed", True), ("torch_plain", False)):
    if have_torch and name in wanted:
      label = "torch nn.LSTM bi, " + ("pack_padded_sequence" if packed else "plain (reads padding)")
      torch_labels[name] = label
      variants.append((label, *torch_step(batches, args, packed)))

  load_before = os.getloadavg()[0]
  rates = time_round_robin(variants, args)
  load_after = os.getloadavg()[0]
  ref = rates.get(torch_labels.get("torch_packed"), (None,))[0]
  ref_plain = rates.get(torch_labels.get("torch_plain"), (None,))[0]
  print(
    f"\nBi-LSTM train step, B={args.batch} T={args.length} E={args.embed} H={args.hidden} "
    f"V={args.vocab}, {args.threads} threads, jax {jax.__version__}, "
    f"median of {args.repeats}x{args.steps} steps, load avg {load_before:.1f} -> {load_after:.1f}"
  )
  print(f"{'variant':<62} {'steps/s':>8} {'vs packed':>10} {'vs plain':>9} {'CPU ms/step':>12}")
  for label, (rate, cpu) in rates.items():
    rel = f"{rate / ref:.2f}x" if ref else "-"
    rel_plain = f"{rate / ref_plain:.2f}x" if ref_plain else "-"
    print(f"{label:<62} {rate:8.1f} {rel:>10} {rel_plain:>9} {cpu:12.1f}")


if __name__ == "__main__":
  main()
