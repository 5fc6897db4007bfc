"""Real COMP5329 dev data on CPU: records 0..9999 train, 10000..11999 val, 64 px images.

  python train.py --config configs/comp5329_dev.py --workdir runs/comp5329_dev \
      --config.data.root=../shared/data/comp5329-dev

Ablations: --config.model.mode=image / --config.model.mode=text. Results, wall-clock time and
machine: benchmarks/RESULTS.md.
"""

from jaxmm.configs import default


def get_config():
  c = default.get_config()
  c.data.root = "../shared/data/comp5329-dev"
  c.data.split = "last"
  c.data.val_size = 2000
  c.data.image_size = 64
  c.data.min_freq = 2
  c.data.augment.update(hflip=True, crop=True, crop_scale=(0.6, 1.0))
  # A half-width ResNet-18 (256-d features): the full-width one overfits 10k images and made the
  # fused model worse than text-only here (benchmarks/RESULTS.md).
  c.model.image.update(name="resnet18", stem="imagenet", num_filters=32)
  c.model.text.update(name="lstm", embed_dim=128, hidden_size=128, dropout=0.2, pooling="max")
  c.model.head.update(hidden=(512,), dropout=0.3, feature_dropout=0.3)
  c.optim.update(
    lr=1e-3, schedule="warmup_cosine", warmup_epochs=0.5, weight_decay=1e-4, name="adamw"
  )
  c.train.update(
    batch_size=64, epochs=8, log_every=25, early_stopping_patience=3, tune_thresholds="per_class"
  )
  return c
