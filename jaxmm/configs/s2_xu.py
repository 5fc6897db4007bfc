"""S2: DenseNet-121 + a TinyBERT-shaped encoder, attention fusion (image queries, LayerNorm).

From scratch on a CPU (64 px, 6 epochs, a half-width DenseNet-121: see below):

  python train.py --config configs/s2_xu.py --workdir runs/s2 \\
      --config.data.root=../shared/data/comp5329-dev \\
      --config.model.image.growth_rate=16 --config.model.image.num_init_features=32

S2's own recipe, from ImageNet DenseNet-121 and TinyBERT General 4L-312D (a GPU; 224 px):
torchvision's densenet121-a639ec97.pth (https://download.pytorch.org/models/densenet121-a639ec97.pth)
and the Hugging Face checkpoint huawei-noah/TinyBERT_General_4L_312D (its folder: config.json,
pytorch_model.bin, vocab.txt; the vocab.txt beside the weights is used), the last 2 dense blocks
and the last 2 BERT layers trained, as S2:

  python train.py --config configs/s2_xu.py --workdir runs/s2_pretrained \\
      --config.data.root=../shared/data/comp5329-dev --config.data.image_size=224 \\
      --config.model.image.weights=densenet121-a639ec97.pth \\
      --config.model.text.weights=TinyBERT_General_4L_312D \\
      --config.optim.lr=1e-4 --config.optim.freeze='("image","text")' \\
      --config.optim.unfreeze='("image.denseblock3","image.transition3","image.denseblock4",
          "image.norm5","text.layers.2","text.layers.3")'

S2's report: DenseNet-121 (its last 2 blocks unfrozen) + TinyBERT (its last 2 layers unfrozen), a
self-attention fusion whose queries are the image tokens, over image + text tokens, with
LayerNorm (jaxmm.models.attention_fusion: the DenseNet's 2-D feature map gives the image tokens,
the BERT states the text tokens), threshold 0.39 tuned on val, flips and colour jitter, random
word swap; samples-F1 0.8485 val. As shipped the towers are S2's at full size (DenseNet-121:
6.95M parameters; BERT: 4 layers, 312 wide, 12 heads, feed-forward 1200, [CLS] pooling). A
train step of 64 examples at 64 px costs ~13x comp5329_dev.py's on 2 CPU cores (the DenseNet
dominates; ~2 h for 6 epochs where comp5329_dev.py takes 12 min): the from-scratch command
halves the DenseNet's width (growth 16, 32 stem features; ~5x, about an hour), which no ImageNet
file fits. From scratch the BERT tower reads a WordPiece vocabulary fitted on the training
captions (special tokens, characters, whole words; jaxmm.data.encoders) and trains with AdamW
5e-4 after a half-epoch warmup; with the pretrained files lr 1e-4 is ours (S2's report gives
none). A BERT tower from scratch sits at the label prior for its first ~150 steps of 64 (text
alone on 3,200 dev captions: val samples-F1 0.662 at 150 steps, 0.84 at 400 with 1-2 layers),
so early stopping (patience 3 epochs of 156 steps) leaves it time. Flips and colour jitter
(strength 0.2, ours: the report gives none) as S2; S2's random word swap is not applied: jaxmm
swaps adjacent token ids, which on WordPiece ids would move [CLS] / [SEP] and split words.
The from-scratch command reached val samples-F1 0.851 at epoch 4 of 6 (0.852 at the tuned global
threshold) in 32 min on 2 CPU cores (benchmarks/RESULTS.md, "Seed systems").
"""

from ml_collections import config_dict

from jaxmm.configs import comp5329_dev


def get_config():
  c = comp5329_dev.get_config()
  c.model.name = "attention_fusion"
  # New sections: the default ResNet's and LSTM's options are not these towers' options.
  c.model.image = config_dict.ConfigDict(
    dict(
      name="densenet121",
      stem="imagenet",
      growth_rate=32,
      num_init_features=64,
      conv_impl="auto",
      weights="",
    )
  )
  # vocab / weights: a BERT vocab.txt and a Hugging Face checkpoint ('' = fitted on the captions
  # and random init; jaxmm.data.encoders, jaxmm.models.bert).
  c.model.text = config_dict.ConfigDict(
    dict(
      name="bert",
      vocab="",
      weights="",
      hidden_size=312,
      num_layers=4,
      num_heads=12,
      intermediate_size=1200,
      max_position_embeddings=512,
      dropout=0.1,
      attention_dropout=0.1,
      pooling="cls",
    )
  )
  c.model.attention.update(dim=256, num_heads=4, num_layers=1, dropout=0.1)
  c.model.head.update(hidden=(256,), dropout=0.2, feature_dropout=0.0, norm="layer")
  c.data.augment.update(hflip=True, vflip=True, crop=False, color_jitter=0.2, word_swap=0.0)
  c.optim.update(name="adamw", lr=5e-4, weight_decay=1e-4)
  c.train.update(epochs=6, threshold=0.39, tune_thresholds="global")
  return c
