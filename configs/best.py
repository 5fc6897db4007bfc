"""jaxmm's best COMP5329 recipe (issue 7): work in progress, see benchmarks/RESULTS.md.

  python train.py --config configs/best.py --workdir runs/best \
      --config.data.root=../shared/data/comp5329-dev
  python evaluate.py --workdir runs/best --csv ../shared/data/comp5329-dev/train.csv --rows 10000:
"""

from configs import comp5329_dev


def get_config():
  c = comp5329_dev.get_config()
  # The held-out protocol: train on records 0..9999 (val = 9000..9999 for early stopping and
  # thresholds), evaluate on 10000..11999 with evaluate.py --rows, never seen in training.
  c.data.limit = 10000
  c.data.val_size = 1000
  return c
