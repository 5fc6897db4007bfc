"""Shared defaults of every jaxmm config; the others import this and override.

python train.py --config configs/default.py --workdir runs/default --config.data.root=DIR
"""

from ml_collections import config_dict


def get_config() -> config_dict.ConfigDict:
  c = config_dict.ConfigDict()
  c.seed = 0
  # 'multilabel' (COMP5329, 18 labels), 'matching' (S0 image-caption pairs), or a pretext task:
  # 'rotation' | 'mlm' | 'autoencoder' (see configs/pretrain_*.py)
  c.task = "multilabel"

  c.data = d = config_dict.ConfigDict()
  # A dataset folder: a table (train.jsonl or train.csv with columns image, text, labels; optional
  # val.* and test.*), COMP5329's layout (train.csv, test.csv, data/*.jpg) or S0's (matching).
  d.root = "data/synthetic"
  # 'auto' (told from the training file), 'table', 'comp5329' or 'matching'
  d.layout = "auto"
  # Tables: the column names; labels holds label names joined by label_sep (JSONL: or a list);
  # matching data has a 0/1 match column instead. Image paths are relative to the table's folder.
  d.columns = config_dict.ConfigDict(
    dict(image="image", text="text", labels="labels", match="match")
  )
  d.label_sep = "|"
  # Tables: the label set in head order; () = the training file's label names, sorted.
  d.labels = ()
  d.train_csv = "train.csv"  # the training file ('train.csv' also finds a table's train.jsonl)
  d.test_csv = "test.csv"
  d.images_dir = "data"
  # A separate labelled val file ('' = a table's val.jsonl / val.csv when there is one, else val
  # is cut from the training file: by image for matching) and, for S0's layout, its images.
  d.val_csv = ""
  d.val_images_dir = ""
  d.image_size = 64
  d.max_len = 32
  d.min_freq = 1
  d.vocab_size = 0  # 0 = no cap
  d.stem = False
  d.remove_stopwords = False
  d.lemmatize = False
  d.split = "random"  # 'random' (seeded) or 'last' (the last val_size records are val)
  d.val_size = 0.1  # a fraction, or a count when >= 1
  d.split_seed = 0
  d.limit = 0  # use only the first N records (0 = all)
  d.skip_bad = False
  # Images whose header claims more pixels are refused (decompression bombs); a real photo of
  # 10000x10000 is 1e8. Raise it for bigger genuine images.
  d.max_image_pixels = 200_000_000
  d.cache_dir = ""  # "" = $JAXMM_CACHE or ~/.cache/jaxmm
  d.num_threads = 2
  d.num_workers = 0  # grain worker processes (0 = threads in this process)
  # color_jitter: brightness/contrast/saturation strength s (factors in [1-s, 1+s]); word_swap:
  # probability of swapping each adjacent pair of caption tokens. Train split only.
  # where: the image transforms run on the 'host' (grain threads, PIL), on the 'device' (inside the
  # jitted train step; the host only gathers uint8 rows) or 'auto' (the device on a GPU/TPU; on a
  # CPU the device from 128 px, the host below: jaxmm.data.pipeline.augment_where). word_swap
  # always runs on the host.
  d.augment = config_dict.ConfigDict(
    dict(
      crop=False,
      hflip=False,
      vflip=False,
      crop_scale=(0.5, 1.0),
      color_jitter=0.0,
      word_swap=0.0,
      where="auto",
    )
  )
  # The embedded synthetic set (jaxmm.data.synthetic): generated when data.root is missing and
  # equals synthetic.root ('' = never generate; a mistyped data.root is an error, not a new set).
  d.synthetic = config_dict.ConfigDict(
    dict(
      root="",
      n_train=5000,
      n_test=500,
      image_size=64,
      seed=0,
      p_clear=0.55,
      p_mention=0.6,
      p_decoy=0.15,
    )
  )

  c.model = m = config_dict.ConfigDict()
  m.name = "concat_fusion"  # or 'attention_fusion' (S2: image tokens attend over all tokens)
  m.mode = "fused"  # 'fused', 'image' (image-only ablation) or 'text' (text-only ablation)
  m.dtype = (
    "float32"  # compute dtype: 'float32' or 'bfloat16' (GPU); params/optimizer/loss stay f32
  )
  # weights: a torchvision/timm ResNet .safetensors/.pth file ('' = random init; needs
  # stem='imagenet', num_filters=64; see jaxmm.models.import_weights). conv_impl: 'auto' (XLA's
  # conv on a GPU/TPU, on a CPU the faster path per conv shape), 'xla' or 'im2col'; the parameters
  # are the same whichever path computes them (jaxmm.models.conv).
  m.image = config_dict.ConfigDict(
    dict(
      name="resnet18", stem="small", activation="relu", conv_impl="auto", num_filters=64, weights=""
    )
  )
  # impl: 'fused' (jaxmm's scan, any backend) or 'cudnn' (LSTM on an NVIDIA GPU, float32).
  m.text = config_dict.ConfigDict(
    dict(
      name="lstm",
      embed_dim=128,
      hidden_size=128,
      num_layers=1,
      bidirectional=True,
      dropout=0.0,
      pooling="last",
      impl="fused",
    )
  )
  # Embedding init (jaxmm.data.word_vectors): source '' (random) | 'word2vec' | 'fasttext' (trained
  # on the training captions) | 'glove' | 'word2vec_file' (path); dim 0 = embed_dim. Freeze the
  # embeddings with optim.freeze=('text.embed',).
  m.text.word_vectors = config_dict.ConfigDict(
    dict(
      source="", path="", dim=0, sg=1, window=5, epochs=10, min_count=1, negative=5, bucket=200_000
    )
  )
  # norm: '' | 'batch' | 'layer' after each hidden layer; interaction_dim > 0 adds the product and
  # distance of the two towers projected to that size (helps matching). output_bias: 'zeros', or
  # 'prior' (multi-label: each output's bias starts at its label's log-odds in the training set).
  m.head = config_dict.ConfigDict(
    dict(
      hidden=(512,),
      dropout=0.2,
      feature_dropout=0.0,
      norm="",
      interaction_dim=0,
      output_bias="zeros",
    )
  )
  m.attention = config_dict.ConfigDict(dict(dim=256, num_heads=4, num_layers=1, dropout=0.1))

  c.optim = o = config_dict.ConfigDict()
  o.name = "adam"
  o.lr = 1e-3
  # weight_decay: decoupled (AdamW's; the same meaning for every optimizer name); l2: a coupled
  # L2 term added to the gradient (torch's Adam/SGD weight_decay), normalised by Adam with it.
  o.weight_decay = 0.0
  o.l2 = 0.0
  o.b1 = 0.9
  o.b2 = 0.999
  o.eps = 1e-8
  o.momentum = 0.0  # sgd
  o.nesterov = False  # sgd
  o.clip_norm = 0.0
  o.schedule = "warmup_cosine"
  o.warmup_epochs = 0.5
  o.warmup_steps = 0
  o.warmup_init_ratio = 0.0  # the warmup starts at lr * warmup_init_ratio
  o.step_gamma = 0.95
  o.step_epochs = 1  # 'step': lr * step_gamma ** (epoch // step_epochs)
  o.min_lr_ratio = 0.0
  o.freeze = ()  # parameter-path prefixes kept fixed, e.g. ('image',) or ('text.embed',)
  o.unfreeze = ()  # prefixes inside `freeze` that still train, e.g. ('image.layer4',)
  o.plateau_factor = 0.5
  o.plateau_patience = 0  # 0 = off

  # Towers from other workdirs' checkpoints (jaxmm.train.transfer), '' = off; image_key /
  # text_key name the source sub-tree when it is not 'image' / 'text'.
  c.init = config_dict.ConfigDict(
    dict(image_from="", text_from="", which="best", image_key="", text_key="")
  )
  # Pretext tasks (jaxmm.data.pretext), used when c.task is 'rotation', 'mlm' or 'autoencoder';
  # data: whose images / captions they learn from, 'matching' (S0 layout) or 'comp5329'.
  c.pretext = config_dict.ConfigDict(
    dict(
      data="matching",
      rotation_angles=(-60, -30, 0, 30, 60),
      rotation_fill=0,
      mlm_num=1,
      mlm_fraction=0.0,
      mlm_random_prob=0.0,
      mlm_keep_prob=0.0,
    )
  )

  c.train = t = config_dict.ConfigDict()
  t.batch_size = 32
  t.eval_batch_size = 128
  t.epochs = 10
  t.max_steps = config_dict.placeholder(int)  # cap on steps (smoke runs)
  t.log_every = 50
  t.ckpt_every_steps = 0  # 0 = at the end of every epoch only
  t.early_stopping_patience = 3
  t.select_metric = "val_samples_f1"
  t.loss = "bce"
  t.class_weight_scheme = "sqrt_inverse"
  t.focal_gamma = 2.0
  t.focal_alpha = 0.25
  # Multi-label: each example's loss is the 'mean' over its labels or their 'sum' (L times larger;
  # with Adam/AdamW that changes an update only through optim.eps, clipping or optim.l2).
  t.label_reduction = "mean"
  # On a CPU: the kernel library of the train step's convs and matmuls, 'ynnpack' (XLA's default)
  # or 'eigen'; 'auto' times one step of each on the first batch and keeps the faster (which one
  # wins depends on the CPU; jaxmm.train.cpu_kernels). Ignored on GPUs.
  t.cpu_kernels = "auto"
  t.threshold = 0.5
  # 'global', 'per_class', '' (keep train.threshold) or 'expected_f1' (multi-label: no threshold,
  # each row's label set of highest expected F1 under the predicted probabilities)
  t.tune_thresholds = "global"
  t.max_bad_steps = 20
  # S1's recipe (jaxmm.recipes.two_stage): towers trained alone, then the head on features.
  t.two_stage = False
  # Matching only: weight of an in-batch contrastive (InfoNCE) loss on the interaction projections.
  t.contrastive_weight = 0.0
  t.contrastive_temperature = 0.1
  t.head_epochs = 10
  t.progress_bar = True
  # report.md and plots/*.png in the workdir at the end of a run (evaluate.py --report_dir too)
  t.report = True
  t.allow_config_change = False
  t.data_parallel = True  # shard each batch over all devices when there are several
  # Multi-host: jax.distributed.initialize(); unset values are left to jax's env/cluster detection.
  t.distributed = False
  t.coordinator_address = ""
  t.num_processes = 0
  t.process_id = -1
  return c
