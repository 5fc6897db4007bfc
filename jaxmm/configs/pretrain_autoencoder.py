"""Autoencoder pretraining of S0's conv autoencoder (configs/s0_ae_lstm.py's image tower).

  python train.py --config configs/pretrain_autoencoder.py --workdir runs/pretrain_autoencoder \\
      --config.data.root=../shared/data/matching-dev
  python train.py --config configs/s0_ae_lstm.py --workdir runs/s0_ae_lstm_pretrained \\
      --config.init.image_from=runs/pretrain_autoencoder

S0's pretext task: reconstruct each distinct training image (sigmoid output in [0, 1], MAE loss);
val MAE picks the best checkpoint (lower is better) and the end of training writes
reconstructions.png (originals and reconstructions of val images in alternating rows) into the
workdir. The whole autoencoder transfers; s0_ae_lstm uses its encoder as the image tower.
Results: benchmarks/RESULTS.md, "Pretraining".
"""

from jaxmm.configs import s0_ae_lstm


def get_config():
  c = s0_ae_lstm.get_config()
  c.task = "autoencoder"
  c.pretext.data = "matching"  # or 'comp5329' with that dataset's data.* keys
  c.model.mode = "image"
  c.optim.update(name="adam", lr=1e-3, schedule="warmup_cosine", warmup_epochs=0.5)
  c.train.update(epochs=10, select_metric="val_mae", tune_thresholds="", early_stopping_patience=3)
  return c
