"""S0 (image-caption matching): ResNet-18-style CNN + LSTM, concat -> FC [1024, 512, 256, 2], CE.

  python train.py --config configs/s0_matching.py --workdir runs/s0 \\
      --config.data.root=../shared/data/matching-dev

S0's report: Adam 2e-4, batch 64, 50 epochs, LSTM emb 256 / hidden 512 (1-3 layers), vocabulary
with <pad>=0, <unk>, <mask>, max_len 32, stemming, images only resized; val accuracy 0.70 on its
own Kaggle set. Variants: configs/s0_cnn_mlp.py (MLP text tower), configs/s0_ae_lstm.py (conv
autoencoder encoder as the image tower), configs/s0_best.py (our best matching recipe).
CPU-sized here: 64 px images (the set's are 100 px), a half-width ResNet-18 with the ImageNet stem,
12 epochs instead of 50; on a GPU set --config.data.image_size=100 --config.train.epochs=50
--config.model.image.num_filters=64. Results: benchmarks/RESULTS.md.
"""

from jaxmm.configs import default


def get_config():
  c = default.get_config()
  c.task = "matching"
  c.data.root = "../shared/data/matching-dev"
  c.data.train_csv = "train.csv"
  c.data.images_dir = "train_images"
  c.data.val_csv = "val.csv"
  c.data.val_images_dir = "val_images"
  c.data.image_size = 64
  c.data.max_len = 32
  c.data.stem = True
  c.data.synthetic.update(n_train=2000, n_test=400)  # where data.synthetic.root is data.root
  # ImageNet stem (4x downsampling first): the same ResNet-18 at a CPU-friendly cost at 64 px.
  c.model.image.update(name="resnet18", stem="imagenet", num_filters=32)
  c.model.text.update(
    name="lstm", embed_dim=256, hidden_size=512, num_layers=1, bidirectional=False, pooling="last"
  )
  c.model.head.update(hidden=(1024, 512, 256), dropout=0.0)
  c.optim.update(name="adam", lr=2e-4, schedule="constant", warmup_epochs=0.0)
  c.train.update(
    loss="ce",
    batch_size=64,
    epochs=12,
    select_metric="val_accuracy",
    tune_thresholds="global",
    early_stopping_patience=0,
    log_every=50,
  )
  return c
