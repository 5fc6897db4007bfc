"""S1: ResNet-50 (LeakyReLU) + Bi-LSTM on 100-d word vectors, two stages, weighted BCE, clipping.

From scratch (any machine; CPU-sized: 64 px, 6 epochs per tower, FastText vectors trained on the
training captions):

  python train.py --config configs/s1_bingi.py --workdir runs/s1 \\
      --config.data.root=../shared/data/comp5329-dev

S1's own recipe, from ImageNet ResNet-50 and GloVe (a GPU; 224 px, 30 epochs): torchvision's
resnet50-0676ba61.pth (https://download.pytorch.org/models/resnet50-0676ba61.pth) and
glove.6B.100d.txt from https://nlp.stanford.edu/data/glove.6B.zip. torchvision's ResNet-50 was
trained with ReLU; the tower keeps S1's LeakyReLU (--config.model.image.activation=relu runs
torchvision's own network).

  python train.py --config configs/s1_bingi.py --workdir runs/s1_pretrained \\
      --config.data.root=../shared/data/comp5329-dev --config.data.image_size=224 \\
      --config.train.epochs=30 \\
      --config.model.image.weights=resnet50-0676ba61.pth \\
      --config.model.text.word_vectors.path=glove.6B.100d.txt

S1's report: ResNet-50 with LeakyReLU, RandomResizedCrop + h/v flips + normalisation; a Bi-LSTM
on 100-d word vectors, sequence length 8, 50 hidden units per direction, dropout 0.1; towers
trained alone, features extracted, then a head 2148 -> 2000 -> 18 with dropout 0.05; Adam with
weight decay 1e-5, StepLR gamma 0.95, gradient clipping 0.5, class-weighted BCE, early stopping,
ReduceLROnPlateau(patience 2). Reported samples-F1 0.927 val / 0.877 test (ImageNet-pretrained
ResNet-50). The word vectors are GloVe 100-d when a file is given (word_vectors.path); without
one, FastText skip-gram vectors trained on the training captions (the log says so:
word_vectors.fallback; jaxmm.data.word_vectors). Their dim is the tower's embed_dim, 100.
"""

from jaxmm.configs import comp5329_dev


def get_config():
  c = comp5329_dev.get_config()
  c.data.max_len = 8
  c.data.augment.update(crop=True, hflip=True, vflip=True, crop_scale=(0.5, 1.0))
  c.model.image.update(name="resnet50", stem="imagenet", activation="leaky_relu", num_filters=64)
  c.model.text.update(
    name="lstm", embed_dim=100, hidden_size=50, bidirectional=True, dropout=0.1, pooling="last"
  )
  c.model.text.word_vectors.update(source="glove", path="")
  c.model.text.word_vectors.fallback = "fasttext"  # without a GloVe file
  c.model.head.update(hidden=(2000,), dropout=0.05, feature_dropout=0.0, norm="")
  c.optim.update(
    name="adam",
    lr=1e-3,
    weight_decay=0.0,
    l2=1e-5,  # S1's torch Adam(weight_decay=1e-5): the coupled L2 term
    clip_norm=0.5,
    schedule="step",
    step_gamma=0.95,
    warmup_epochs=0.0,
    plateau_patience=2,
    plateau_factor=0.1,
  )
  c.train.update(
    loss="weighted_bce",
    class_weight_scheme="sqrt_inverse",
    epochs=6,
    early_stopping_patience=3,
    two_stage=True,
    head_epochs=10,
    tune_thresholds="per_class",
  )
  return c
