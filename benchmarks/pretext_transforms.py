"""Host cost of the pretext transforms (jaxmm.data.pretext), per example, one thread.

  PYTHONPATH=. /work/venv/bin/python benchmarks/pretext_transforms.py [--size 64]

Times `Rotation.random_map` (S0's +-30/60 degrees through PIL, and the exact 0/90/180/270) on
random uint8 images and `MaskTokens.random_map` on 32-token captions: the median over 5 repeats of
2000 calls, as microseconds per example and examples/s. Compare with the loader's ~13k examples/s
(DESIGN.md section 4) to see whether a transform can starve the train step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from jaxmm.data import pretext


def _time(fn, examples, repeats=5):
  times = []
  for _ in range(repeats):
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for ex in examples:
      fn(ex, rng)
    times.append((time.perf_counter() - t0) / len(examples))
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--n", type=int, default=2000)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (args.n, args.size, args.size, 3), dtype=np.uint8)
  tokens = rng.integers(3, 5000, (args.n, 32)).astype(np.int32)
  lengths = rng.integers(4, 33, args.n).astype(np.int32)
  rows = [
      (f"rotation S0 angles, {args.size} px", pretext.Rotation(pretext.S0_ANGLES).random_map,
       [{"image": im} for im in images]),
      (f"rotation 0/90/180/270, {args.size} px", pretext.Rotation(pretext.RIGHT_ANGLES).random_map,
       [{"image": im} for im in images]),
      ("mask one token, T=32", pretext.MaskTokens(num=1).random_map,
       [{"tokens": t, "length": n} for t, n in zip(tokens, lengths)]),
      ("mask 15% + BERT 10/10, T=32", pretext.MaskTokens(fraction=0.15, random_prob=0.1,
                                                         keep_prob=0.1, vocab_size=5000).random_map,
       [{"tokens": t, "length": n} for t, n in zip(tokens, lengths)]),
  ]
  print("| transform | us/example | examples/s |")
  print("|---|---|---|")
  for name, fn, examples in rows:
    sec = _time(fn, examples)
    print(f"| {name} | {sec * 1e6:.1f} | {1 / sec:,.0f} |")


if __name__ == "__main__":
  main()
