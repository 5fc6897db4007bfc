"""Masked-token pretraining of S0's text tower (configs/s0_best.py's Bi-LSTM), then its transfer.

  python train.py --config configs/pretrain_mlm.py --workdir runs/pretrain_mlm \\
      --config.data.root=../shared/data/matching-dev
  python train.py --config configs/s0_best.py --workdir runs/s0_best_mlm \\
      --config.init.text_from=runs/pretrain_mlm

S0's pretext task: one token of each distinct training caption replaced by `<mask>` and predicted
from the Bi-LSTM's output at that position (loss and accuracy on masked positions only; val: a
fixed mask per caption). A fraction instead: --config.pretext.mlm_fraction=0.15 (BERT's
random/keep shares: pretext.mlm_random_prob / mlm_keep_prob). The downstream run takes this
workdir's vocab.json with the tower, so token ids line up.
Results: benchmarks/RESULTS.md, "Pretraining".
"""

from jaxmm.configs import s0_best


def get_config():
  c = s0_best.get_config()
  c.task = "mlm"
  c.pretext.data = "matching"  # or 'comp5329' with that dataset's data.* keys
  c.pretext.update(mlm_num=1, mlm_fraction=0.0)
  c.model.mode = "text"  # no images are read
  c.optim.update(
    name="adamw", lr=1e-3, weight_decay=1e-4, schedule="warmup_cosine", warmup_epochs=0.5
  )
  c.train.update(
    epochs=10,
    contrastive_weight=0.0,
    select_metric="val_mlm_accuracy",
    tune_thresholds="",
    early_stopping_patience=3,
  )
  return c
