"""S4: ResNeXt-50 (32x4d) + Bi-GRU with attention pooling, concat, FC with BatchNorm.

  python train.py --config configs/s4_liu.py --workdir runs/s4 \\
      --config.data.root=../shared/data/comp5329-dev

S4's report: ResNeXt-50 32x4d with h/v flips; a Bi-GRU (hidden 128) with attention pooling on
150-d FastText skip-gram vectors trained on the captions; the two projected to 256 + 256,
concatenated, FC with BatchNorm, sigmoid (here: the concatenated tower features go through one
512-wide layer with BatchNorm, the same capacity as two 256-wide projections); Adam 3e-4, batch
64, early stopping (patience 10); samples-F1 0.871 val / 0.863 test (ImageNet-pretrained
ResNeXt). Here from scratch: a half-width ResNeXt-50 at 64 px for the CPU (set
--config.model.image.num_filters=64 for the real width). As shipped the 150-d embeddings start
random; S4's vectors (FastText skip-gram trained on the training captions, dim = embed_dim):
--config.model.text.word_vectors.source=fasttext (jaxmm.data.word_vectors).
"""

from configs import comp5329_dev


def get_config():
  c = comp5329_dev.get_config()
  c.data.augment.update(hflip=True, vflip=True, crop=False)
  c.model.image.update(name="resnext50_32x4d", stem="imagenet", num_filters=32)
  c.model.text.update(name="gru_attention", embed_dim=150, hidden_size=128, dropout=0.1)
  del c.model.text.pooling  # the GRU tower pools by attention; it has no such options
  del c.model.text.num_layers
  c.model.head.update(hidden=(512,), dropout=0.3, feature_dropout=0.0, norm="batch")
  c.optim.update(name="adam", lr=3e-4, weight_decay=0.0, schedule="constant", warmup_epochs=0.0)
  c.train.update(batch_size=64, epochs=6, early_stopping_patience=10, tune_thresholds="per_class")
  return c
