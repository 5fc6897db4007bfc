"""Rotation pretraining of S0's image tower (configs/s0_best.py's ResNet-18), then its transfer.

  python train.py --config configs/pretrain_rotation.py --workdir runs/pretrain_rotation \\
      --config.data.root=../shared/data/matching-dev
  python train.py --config configs/s0_best.py --workdir runs/s0_best_rotation \\
      --config.init.image_from=runs/pretrain_rotation

S0's pretext task: each distinct training image rotated by one of -60, -30, 0, 30, 60 degrees
(corners black), a 5-way classifier on the tower (val: a fixed rotation per image). 0/90/180/270
instead: --config.pretext.rotation_angles='(0, 90, 180, 270)'. The tower is s0_best's (ImageNet
stem, width 32, 64 px), so it drops into s0_best; the head stays behind.
Results: benchmarks/RESULTS.md, "Pretraining".
"""

from jaxmm.configs import s0_best


def get_config():
  c = s0_best.get_config()
  c.task = "rotation"
  c.pretext.data = "matching"  # or 'comp5329' with that dataset's data.* keys
  c.model.mode = "image"
  c.model.head.update(hidden=(256,), dropout=0.2, interaction_dim=0)
  c.optim.update(
    name="adamw", lr=1e-3, weight_decay=1e-4, schedule="warmup_cosine", warmup_epochs=0.5
  )
  c.train.update(
    epochs=10,
    contrastive_weight=0.0,
    select_metric="val_rotation_accuracy",
    tune_thresholds="",
    early_stopping_patience=3,
  )
  return c
