"""jaxmm's best matching recipe on the S0 layout: S0's towers made CPU-sized, plus an interaction
head.

  python train.py --config configs/s0_best.py --workdir runs/s0_best \\
      --config.data.root=../shared/data/matching-dev

Changes from configs/s0_matching.py, each measured in benchmarks/RESULTS.md: the ImageNet stem
(4x downsampling first: the same ResNet-18 at a fraction of the CPU cost), a Bi-LSTM of 128 per
direction with max pooling, and `head.interaction_dim` (the head also sees the product and distance
of the two projected towers), an in-batch contrastive loss on those projections (every matching
pair must also pick its caption among the batch's captions, and vice versa), AdamW 1e-3 with
warmup + cosine, random crops and flips.
"""

from jaxmm.configs import s0_matching


def get_config():
  c = s0_matching.get_config()
  s0_matching.as_reported(c)
  c.model.image.update(name="resnet18", stem="imagenet", num_filters=32)
  c.model.text.update(
    name="lstm", embed_dim=128, hidden_size=128, bidirectional=True, pooling="max", dropout=0.1
  )
  c.model.head.update(hidden=(256,), dropout=0.2, interaction_dim=256)
  c.data.augment.update(hflip=True, crop=True, crop_scale=(0.6, 1.0))
  c.optim.update(
    name="adamw", lr=1e-3, weight_decay=1e-4, schedule="warmup_cosine", warmup_epochs=0.5
  )
  c.train.update(epochs=8, contrastive_weight=1.0, contrastive_temperature=0.1)
  return c
