"""Models chosen by name from the config (`config.model`)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmm.data import encoders
from jaxmm.models import fusion
from jaxmm.models.attention_fusion import AttentionFusionClassifier
from jaxmm.models.autoencoder import ConvAutoencoder
from jaxmm.models.bert import BertEncoder
from jaxmm.models.densenet import densenet_by_name
from jaxmm.models.efficientnet import efficientnet_by_name
from jaxmm.models.resnet import resnet_by_name
from jaxmm.models.text import TEXT_TOWERS, text_tower_class

# late_fusion: two unimodal classifiers whose logits are mixed per class
# (fusion.LateFusionClassifier).
MODELS = ("concat_fusion", "attention_fusion", "late_fusion")
DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}
# Tower config keys that are not constructor arguments (pretrained weights, applied after building).
# vocab: the BERT tower's vocab.txt, read by the text encoder (jaxmm.data.encoders).
_NOT_ARGS = ("name", "weights", "word_vectors", "vocab")


# Parameter init is run once: XLA's backend optimisations only cost compile time there (on the CPU
# one eager jax.random.normal of a 3x3x8x16 kernel took 8 s to compile at the default level, 0.3 s
# at level 0; the values are the same to 1 ulp).
_INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def init_in_one_program(make: Callable[[], nnx.Module]) -> nnx.Module:
  """Runs `make()` (a model constructor) as one jitted program instead of one eager op per array.

  Eagerly, every initialiser of a new shape compiles its own program: 28 s to build a ResNet-34
  on the 2-core CPU, 5.6 s this way (benchmarks/RESULTS.md, "Model build and compile time").
  `make` runs under
  tracing, so it must not read array values (numpy constants it closes over are fine).
  """
  graphdefs = []

  def init():
    graphdef, state = nnx.split(make())
    graphdefs.append(graphdef)
    return state

  state = jax.jit(init, compiler_options=_INIT_COMPILER_OPTIONS)()
  return nnx.merge(graphdefs[-1], state)


def compute_dtype(model_cfg):
  """`model.dtype` ('float32' | 'bfloat16') -> the towers' compute dtype (None = float32).

  Params, optimizer state and the loss stay float32 whatever the compute dtype.
  """
  name = model_cfg.get("dtype", "float32") or "float32"
  if name not in DTYPES:
    raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {name!r}")
  return DTYPES[name]


# Constructor arguments that come from elsewhere than the tower's config section.
_NOT_CONFIG = ("rngs", "vocab_size", "embedding_init", "dtype")


def _image_constructor(name: str):
  if name == "conv_autoencoder":
    return ConvAutoencoder
  if name.lower().startswith("densenet"):
    return densenet_by_name(name)
  if name.lower().startswith("efficientnet"):
    return efficientnet_by_name(name)
  return resnet_by_name(name)


def _text_constructor(name: str):
  """jaxmm.models.text's towers, or 'bert' (TinyBERT-sized by default; HF weights from
  `model.text.weights`, a checkpoint directory, via jaxmm.models.bert.load_hf_checkpoint)."""
  if name == "bert":
    return BertEncoder
  if name not in TEXT_TOWERS:
    raise KeyError(f"unknown text tower {name!r}; known: {sorted([*TEXT_TOWERS, 'bert'])}")
  return text_tower_class(name)


def _init_parameters(constructor) -> dict:
  """The keyword parameters a tower class (or a functools.partial of one) takes; a partial's own
  keywords (resnet18's stage_sizes) stay: a config may override them.

  Not inspect.signature(cls): NNX modules' metaclass makes that read (*args, **kwargs).
  """
  if isinstance(constructor, functools.partial):
    constructor = constructor.func
  target = constructor.__init__ if inspect.isclass(constructor) else constructor
  params = dict(inspect.signature(target).parameters)
  params.pop("self", None)
  return params


def _tower_kwargs(cfg, constructor, section: str) -> dict:
  """The tower's config keys as constructor kwargs; a key it does not take is a clear error.

  Without this, switching `model.text.name` from 'lstm' to 'gru_attention' while the config
  still has the LSTM's `num_layers` failed with a bare TypeError from deep inside Flax.
  """
  kwargs = {k: v for k, v in cfg.items() if k not in _NOT_ARGS}
  params = _init_parameters(constructor)
  if any(p.kind is p.VAR_KEYWORD for p in params.values()):
    return kwargs
  unknown = sorted(k for k in kwargs if k not in params or k in _NOT_CONFIG)
  if unknown:
    takes = sorted(
      k for k, p in params.items() if k not in _NOT_CONFIG and p.kind is not p.VAR_POSITIONAL
    )
    keys = ", ".join(f"{section}.{k}" for k in unknown)
    one = len(unknown) == 1
    raise ValueError(
      f"{keys}: {'not an option' if one else 'not options'} of the {section} tower "
      f"{cfg.name!r} (it takes {takes}). Delete {'it' if one else 'them'} in a config file "
      f"(`del c.{section}.{unknown[0]}`; configs/s2_xu.py does so for its text tower): a "
      "--config flag cannot delete a key."
    )
  return kwargs


def check_model_config(model_cfg) -> None:
  """Fails at start-up, before any data is read, on a model name or mode jaxmm does not have and
  on tower options the chosen towers do not take."""
  if model_cfg.get("name") is not None and model_cfg.name not in MODELS:
    raise ValueError(f"unknown model.name {model_cfg.name!r}; known: {MODELS}")
  if model_cfg.get("mode") is not None and model_cfg.mode not in fusion.MODES:
    raise ValueError(f"model.mode must be one of {fusion.MODES}, got {model_cfg.mode!r}")
  if model_cfg.get("image") is not None and model_cfg.get("mode", "fused") != "text":
    _tower_kwargs(model_cfg.image, _image_constructor(model_cfg.image.name), "model.image")
  if model_cfg.get("text") is not None and model_cfg.get("mode", "fused") != "image":
    _tower_kwargs(model_cfg.text, _text_constructor(model_cfg.text.name), "model.text")
    _check_bert(model_cfg.text)


def _check_bert(text_cfg) -> None:
  """Text weights only for BERT; the BERT tower's files exist, and it is not given word vectors
  (its embedding rows are WordPiece ids, which pretrained weights fill)."""
  if text_cfg.name != "bert":
    if text_cfg.get("weights"):
      raise ValueError(
        f"model.text.weights={text_cfg.weights!r}: pretrained text weights are read by the BERT "
        f"tower only (model.text.name='bert'), not by {text_cfg.name!r}"
      )
    return
  encoders.check_text_config(text_cfg)
  vectors = text_cfg.get("word_vectors")
  if vectors is not None and vectors.get("source"):
    raise ValueError(
      f"model.text.word_vectors.source={vectors.source!r}: word vectors start the word-level "
      "towers' embeddings; the BERT tower starts from model.text.weights (a Hugging Face "
      "checkpoint) or from scratch: set --config.model.text.word_vectors.source=''"
    )


def build_image_tower(cfg, *, rngs: nnx.Rngs, dtype=None):
  """'resnet18' | 'resnet34' | 'resnet50' | 'resnext50_32x4d', 'densenet121' (-161, -169, -201),
  'efficientnet_b1' (b0..b4) (kwargs: the other keys of `cfg`), or 'conv_autoencoder': S0's
  autoencoder, whose encoder is the tower."""
  constructor = _image_constructor(cfg.name)
  kwargs = _tower_kwargs(cfg, constructor, "model.image")
  if dtype is not None:
    kwargs["dtype"] = dtype
  return constructor(**kwargs, rngs=rngs)


def build_text_tower(cfg, *, vocab_size: int, rngs: nnx.Rngs, embedding_init=None, dtype=None):
  constructor = _text_constructor(cfg.name)
  kwargs = _tower_kwargs(cfg, constructor, "model.text")
  if embedding_init is not None:
    kwargs["embedding_init"] = embedding_init
  if dtype is not None:
    kwargs["dtype"] = dtype
  return constructor(vocab_size=vocab_size, **kwargs, rngs=rngs)


def build_model(
  model_cfg, *, num_outputs: int, vocab_size: int, rngs: nnx.Rngs, embedding_init=None
) -> nnx.Module:
  """The classifier of `model_cfg.name`; `model_cfg.mode` picks fused / image-only / text-only."""
  if model_cfg.name not in MODELS:
    raise ValueError(f"unknown model.name {model_cfg.name!r}; known: {MODELS}")
  if model_cfg.mode not in fusion.MODES:
    raise ValueError(f"model.mode must be one of {fusion.MODES}, got {model_cfg.mode!r}")
  dtype = compute_dtype(model_cfg)
  image = (
    build_image_tower(model_cfg.image, rngs=rngs, dtype=dtype) if model_cfg.mode != "text" else None
  )
  text = (
    build_text_tower(
      model_cfg.text, vocab_size=vocab_size, rngs=rngs, embedding_init=embedding_init, dtype=dtype
    )
    if model_cfg.mode != "image"
    else None
  )
  head = model_cfg.head
  if model_cfg.name == "attention_fusion":
    att = model_cfg.attention
    return AttentionFusionClassifier(
      image,
      text,
      num_outputs,
      dim=att.dim,
      num_heads=att.num_heads,
      num_layers=att.num_layers,
      attention_dropout=att.dropout,
      hidden=tuple(head.hidden),
      dropout=head.dropout,
      norm=head.norm or None,
      rngs=rngs,
    )  # fusion blocks and head in float32

  def concat(image, text, interaction_dim=0):
    return fusion.ConcatFusionClassifier(
      image,
      text,
      num_outputs,
      hidden=tuple(head.hidden),
      dropout=head.dropout,
      feature_dropout=head.feature_dropout,
      norm=head.norm or None,
      interaction_dim=interaction_dim,
      dtype=dtype,
      rngs=rngs,
    )

  if model_cfg.name == "late_fusion" and model_cfg.mode == "fused":
    return fusion.LateFusionClassifier(concat(image, None), concat(None, text), num_outputs)
  # late_fusion in image / text mode is its unimodal branch alone (two_stage's stage 1).
  return concat(image, text, head.get("interaction_dim", 0))
