"""gensim word vectors on the real COMP5329 training captions: training time and OOV counts.

  PYTHONPATH=. /work/venv/bin/python benchmarks/word_vectors.py --root ../shared/data/comp5329-dev

Splits train.csv as configs/default.py does (random 10% val, split_seed 0), fits the TextEncoder on
the training captions (min_freq 1), then for each row trains the vectors with
`jaxmm.data.word_vectors.matrix_for` (one worker thread, seed 0, no cache) and prints wall time
(gensim training + matrix building, gensim already imported), peak RSS, and where the rows came
from. The last column counts val-caption tokens that map to `<unk>` (words never seen in training):
no word vector can help those, so it bounds what pretrained vectors can add at test time.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

from jaxmm.data import comp5329, word_vectors
from jaxmm.data.text import TextEncoder

ROWS = [  # (source, dim, sg, min_count, stem)
    ("word2vec", 100, 1, 1, False), ("word2vec", 100, 0, 1, False),
    ("fasttext", 150, 1, 1, False), ("word2vec", 100, 1, 5, False),
    ("fasttext", 150, 1, 5, False), ("word2vec", 100, 1, 1, True),
    ("fasttext", 150, 1, 5, True),
]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--root", default=os.path.join("..", "shared", "data", "comp5329-dev"))
  parser.add_argument("--epochs", type=int, default=10)
  args = parser.parse_args()
  records = comp5329.read_comp5329(os.path.join(args.root, "train.csv"))
  n_val = int(round(len(records) * 0.1))
  train, val = comp5329.split_train_val(records, val_size=n_val, seed=0)
  captions = [r.caption for r in train]
  import gensim  # noqa: F401  (import time ~1 s kept out of the timings)
  print(f"{len(train)} training captions, {len(val)} val captions, epochs {args.epochs}")
  print("| source | dim | sg | min_count | stem | vocab | seconds | found | subword | random (OOV) "
        "| val tokens -> <unk> |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  encoders = {}
  for source, dim, sg, min_count, stem in ROWS:
    enc = encoders.get(stem) or TextEncoder.fit(captions, max_len=32, stem=stem)
    encoders[stem] = enc
    settings = word_vectors.Settings(source=source, dim=dim, sg=sg, min_count=min_count,
                                     epochs=args.epochs)
    t0 = time.perf_counter()
    _, report = word_vectors.matrix_for(settings, enc, captions, embed_dim=dim)
    seconds = time.perf_counter() - t0
    val_tokens = [t for r in val for t in enc.tokenize(r.caption)]
    unk = sum(t not in enc.vocab for t in val_tokens)
    print(f"| {source} | {dim} | {sg} | {min_count} | {stem} | {len(enc.vocab)} | {seconds:.1f} | "
          f"{report.found} | {report.subword} | {report.random} | {unk}/{len(val_tokens)} "
          f"({100 * unk / len(val_tokens):.1f}%) |", flush=True)
  print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
  main()
