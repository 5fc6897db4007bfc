"""S4: ResNeXt-50 (32x4d) + Bi-GRU with attention pooling on FastText vectors, concat, FC + BN.

From scratch on a CPU (64 px, 6 epochs, a half-width ResNeXt-50):

  python train.py --config configs/s4_liu.py --workdir runs/s4 \\
      --config.data.root=../shared/data/comp5329-dev

It reached val samples-F1 0.841 at 0.5 (0.854 with per-class thresholds) on the dev protocol in
79 min on 2 CPU cores beside other runs (benchmarks/RESULTS.md, "Seed systems").

S4's own recipe, from ImageNet ResNeXt-50 (a GPU; 224 px, the full width): torchvision's
resnext50_32x4d-7cdf4587.pth (https://download.pytorch.org/models/resnext50_32x4d-7cdf4587.pth):

  python train.py --config configs/s4_liu.py --workdir runs/s4_pretrained \\
      --config.data.root=../shared/data/comp5329-dev --config.data.image_size=224 \\
      --config.model.image.num_filters=64 --config.model.image.weights=resnext50_32x4d-7cdf4587.pth

S4's report: ResNeXt-50 32x4d with h/v flips; a Bi-GRU (hidden 128) with attention pooling on
150-d FastText skip-gram vectors trained on the captions; the two projected to 256 + 256,
concatenated, FC with BatchNorm, sigmoid (here: the concatenated tower features go through one
512-wide layer with BatchNorm, the same capacity as two 256-wide projections); Adam 3e-4, batch
64, early stopping (patience 10); samples-F1 0.871 val / 0.863 test (ImageNet-pretrained
ResNeXt). The 150-d FastText skip-gram vectors are S4's: trained on the training captions at the
start of a run (seconds; jaxmm.data.word_vectors, cached in the workdir).
"""

from jaxmm.configs import comp5329_dev


def get_config():
  c = comp5329_dev.get_config()
  c.data.augment.update(hflip=True, vflip=True, crop=False)
  c.model.image.update(name="resnext50_32x4d", stem="imagenet", num_filters=32)
  c.model.text.update(name="gru_attention", embed_dim=150, hidden_size=128, dropout=0.1)
  c.model.text.word_vectors.update(source="fasttext", sg=1)  # skip-gram on the captions
  del c.model.text.pooling  # the GRU tower pools by attention; it has no such options
  del c.model.text.num_layers
  c.model.head.update(hidden=(512,), dropout=0.3, feature_dropout=0.0, norm="batch")
  c.optim.update(name="adam", lr=3e-4, weight_decay=0.0, schedule="constant", warmup_epochs=0.0)
  c.train.update(batch_size=64, epochs=6, early_stopping_patience=10, tune_thresholds="per_class")
  return c
