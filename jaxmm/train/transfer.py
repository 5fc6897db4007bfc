"""Starting a model from pretrained towers: another workdir's checkpoint, or ImageNet weights.

Config (defaults in configs/default.py change nothing):
  init.image_from / init.text_from: a workdir whose checkpoint holds the tower ('' = off); its
    `image` / `text` sub-tree (the attribute names of the classifier and of the pretext models)
    replaces this model's. init.image_key / init.text_key name another source sub-tree.
  init.which: 'best' (default; 'latest' when the source has no best) or 'latest'.
  model.image.weights: a torchvision/timm .safetensors/.pth file (jaxmm.models.import_weights);
    applied first, so init.image_from wins when both are set.
  model.text.weights: a Hugging Face BertModel / BertFor* checkpoint (.safetensors / .bin file,
    or the folder holding it and its config.json) for the BERT tower (jaxmm.models.bert); its
    token ids are its vocab.txt's, which the text encoder reads (jaxmm.data.encoders). Applied
    before init.text_from, which wins.
  optim.freeze (existing): prefixes kept fixed, e.g. ('image',); optim.unfreeze: prefixes inside
    them that still train, e.g. freeze ('image',) + unfreeze ('image.layer4',).

Entry points for the loop: `init_from_config(model, config)` after building a fresh model, and
`resolve_freeze(config.optim, model)` for the optimizer. Every mismatch names the variable, both
shapes and the source workdir.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from jaxmm.train import checkpoint as ckpt_lib
from jaxmm.train import optim
from jaxmm.workdir import VOCAB_FILE

log = logging.getLogger("jaxmm")
_VALUE = "value"  # the leaf key under which orbax stores an nnx Variable's array


def _manager(workdir: str, which: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
    os.path.join(os.path.abspath(workdir), "checkpoints", which),
    item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()},
  )


def read_model_state(workdir: str, *, which: str = ckpt_lib.BEST) -> tuple[dict, str]:
  """The model part of a jaxmm checkpoint as nested dicts of numpy arrays -> (tree, description).

  Needs no model of the source's config: the arrays are restored from the checkpoint's own
  metadata onto this machine's default device. `which`='best' falls back to 'latest' (a run
  without validation has no best), with a warning.
  """
  if which not in (ckpt_lib.BEST, ckpt_lib.LATEST):
    raise ValueError(f"init.which must be 'best' or 'latest'; got {which!r}")
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise FileNotFoundError(
      f"{workdir!r} holds no checkpoints/: is it a jaxmm workdir that has "
      "trained (init.image_from / init.text_from)?"
    )
  order = [which] + ([ckpt_lib.LATEST] if which == ckpt_lib.BEST else [])
  for kind in order:
    mgr = _manager(workdir, kind)
    step = mgr.latest_step()
    if step is None:
      mgr.close()
      continue
    if kind != which:
      log.warning("%s has no %r checkpoint; using %r (step %d)", workdir, which, kind, step)
    metadata = mgr.item_metadata(step)["state"]
    tree = metadata.tree if hasattr(metadata, "tree") else metadata
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(
      lambda m, sharding=sharding: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), tree
    )
    state = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    mgr.close()
    model_state = state["state"][0]  # the loop saves (model_state, optimizer_state)
    return jax.tree.map(np.asarray, model_state), f"{workdir} ({kind} step {step})"
  raise FileNotFoundError(
    f"{workdir!r} has no {' or '.join(repr(k) for k in order)} checkpoint; train it first"
  )


def _flatten(tree: Any, prefix: tuple = ()) -> dict[tuple[str, ...], np.ndarray]:
  """Nested dicts -> {path: array}, with orbax's per-Variable {'value': array} level removed."""
  if isinstance(tree, dict):
    if set(tree) == {_VALUE} and not isinstance(tree[_VALUE], dict):
      return {prefix: tree[_VALUE]}
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, prefix + (str(k),)))
    return out
  if isinstance(tree, (list, tuple)):
    out = {}
    for i, v in enumerate(tree):
      out.update(_flatten(v, prefix + (str(i),)))
    return out
  return {prefix: tree}


def _get_attr_path(obj: Any, dotted: str):
  for name in dotted.split("."):
    obj = obj[int(name)] if name.isdigit() else getattr(obj, name, None)
    if obj is None:
      return None
  return obj


def load_subtree(
  model: nnx.Module,
  target: str,
  source_tree: dict,
  *,
  source_key: str | None = None,
  source_name: str = "the checkpoint",
) -> int:
  """Copies `source_tree[source_key]` (e.g. 'image') into the sub-module `model.<target>`.

  Every parameter and batch statistic of the target must be in the source with the same shape,
  and the source sub-tree may hold nothing else; otherwise ValueError names the paths and both
  shapes, and the model is left unchanged. Returns the number of arrays copied.
  """
  source_key = source_key or target
  module = _get_attr_path(model, target)
  if not isinstance(module, nnx.Module):
    raise ValueError(
      f"the model has no {target!r} tower to load into (model.mode?); its "
      f"top-level sub-trees: {sorted(nnx.state(model).keys())}"
    )
  node: Any = source_tree
  for name in source_key.split("."):
    if not isinstance(node, dict) or name not in node:
      raise ValueError(
        f"{source_name} has no {source_key!r} sub-tree; its top-level sub-trees: "
        f"{sorted(source_tree)}"
      )
    node = node[name]
  source = _flatten(node)
  target_vars = {
    tuple(str(p) for p in path): var
    for path, var in nnx.to_flat_state(nnx.state(module, nnx.Any(nnx.Param, nnx.BatchStat)))
  }
  problems = []
  for path, var in target_vars.items():
    name = ".".join(path)
    want = tuple(var.get_value().shape)
    if path not in source:
      problems.append(f"{target}.{name} {want}: missing from {source_key}")
    elif tuple(np.shape(source[path])) != want:
      problems.append(
        f"{target}.{name}: {source_key}.{name} has shape "
        f"{tuple(np.shape(source[path]))}, the model needs {want}"
      )
  problems += [
    f"{source_key}.{'.'.join(p)} {tuple(np.shape(a))}: not in the model's {target}"
    for p, a in source.items()
    if p not in target_vars
  ]
  if problems:
    shown = "\n  ".join(problems[:12])
    more = f"\n  ... (+{len(problems) - 12})" if len(problems) > 12 else ""
    raise ValueError(
      f"cannot load {source_key!r} of {source_name} into the model's {target!r}: "
      f"{len(problems)} mismatch(es):\n  {shown}{more}\nBoth sides must use the "
      "same tower config (name, sizes, layers, vocabulary)."
    )
  paths = list(nnx.to_flat_state(nnx.state(module, nnx.Any(nnx.Param, nnx.BatchStat))))
  updates = [
    (path, var.replace(jnp.asarray(source[tuple(str(p) for p in path)], var.get_value().dtype)))
    for path, var in paths
  ]
  nnx.update(module, nnx.from_flat_state(updates))
  return len(updates)


def init_from_config(model: nnx.Module, config) -> list[str]:
  """Applies model.image.weights, then init.image_from / init.text_from; -> what was loaded."""
  done = []
  weights = config.model.image.get("weights")  # only towers with an ImageNet import have the key
  if weights and getattr(model, "image", None) is not None:
    from jaxmm.models import import_weights

    report = import_weights.load_weights_file(model.image, weights, strict=True)
    done.append(f"image <- {weights} ({len(report.loaded)} arrays)")
  text_cfg = config.model.get("text")
  text_weights = text_cfg.get("weights") if text_cfg is not None else None
  if text_weights and getattr(model, "text", None) is not None:
    done.append(f"text <- {load_text_weights(model.text, text_cfg)}")
  init = config.init
  for target in ("image", "text"):
    source_dir = init[f"{target}_from"]
    if not source_dir:
      continue
    tree, name = read_model_state(source_dir, which=init.which or ckpt_lib.BEST)
    key = init[f"{target}_key"] or target
    n = load_subtree(model, target, tree, source_key=key, source_name=name)
    done.append(f"{target} <- {key} of {name} ({n} arrays)")
  for line in done:
    log.info("pretrained: %s", line)
  return done


def load_text_weights(tower: nnx.Module, text_cfg) -> str:
  """model.text.weights (a Hugging Face BERT checkpoint) into the BERT `tower`; -> what loaded.

  Every encoder array must be in the file with the config's shape: otherwise ValueError names
  the keys, both shapes and the sizes the checkpoint's config.json gives. The pooler may be
  absent unless the tower pools with it.
  """
  from jaxmm.models import bert

  if not isinstance(tower, bert.BertEncoder):
    raise ValueError(
      f"model.text.weights={text_cfg.weights!r}: pretrained text weights are read by the BERT "
      f"tower only (model.text.name='bert'), not by {text_cfg.name!r}"
    )
  optional = () if tower.pooling == "pooler" else ("pooler.",)
  report = bert.load_hf_checkpoint(tower, text_cfg.weights, strict=True, optional=optional)
  kept = f"; {len(report.kept)} kept their init ({report.kept[0]} ...)" if report.kept else ""
  return f"{text_cfg.weights} ({len(report.loaded)} arrays{kept})"


def resolve_freeze(optim_cfg, model: nnx.Module):
  """`optim_cfg` with `freeze` minus `unfreeze`, spelled as prefixes optim.freeze understands.

  Unchanged when `unfreeze` is empty. A prefix of `unfreeze` that matches no frozen parameter is a
  typo and raises. The result covers each frozen sub-tree by its shortest fully frozen prefix.
  """
  unfreeze = optim_cfg.unfreeze
  unfreeze = (unfreeze,) if isinstance(unfreeze, str) else tuple(unfreeze or ())
  if not unfreeze:
    return optim_cfg
  freeze = optim_cfg.freeze
  freeze = (freeze,) if isinstance(freeze, str) else tuple(freeze or ())
  paths = optim.param_paths(nnx.state(model, nnx.Param))

  def under(path, prefixes):
    return any(path == p or path.startswith(p + ".") for p in prefixes)

  frozen = [p for p in paths if under(p, freeze)]
  useless = [u for u in unfreeze if not any(under(p, (u,)) for p in frozen)]
  if useless:
    raise ValueError(
      f"optim.unfreeze {useless} match no parameter frozen by optim.freeze {list(freeze)}"
    )
  keep_frozen = {p for p in frozen if not under(p, unfreeze)}
  prefixes: list[str] = []
  for p in sorted(keep_frozen):
    if under(p, prefixes):
      continue
    parts = p.split(".")
    for n in range(1, len(parts) + 1):  # the shortest prefix with nothing trainable under it
      cand = ".".join(parts[:n])
      if all(q in keep_frozen for q in paths if under(q, (cand,))):
        prefixes.append(cand)
        break
  out = (
    ml_collections.ConfigDict(optim_cfg.to_dict())
    if hasattr(optim_cfg, "to_dict")
    else (dict(optim_cfg))
  )
  out["freeze"] = tuple(prefixes)
  out["unfreeze"] = ()
  return out


def share_vocab(source_dir: str, workdir: str) -> bool:
  """Copies `source_dir`'s vocab.json into a fresh `workdir` (one without its own).

  A transferred text tower's embedding rows mean the source's token ids (init.text_from), and
  a two-stage run's image tower reads the text tower's ids, so the downstream run encodes its
  captions with the source's vocabulary, even when its data differ. Returns whether it copied.
  """
  src, dst = (os.path.join(d, VOCAB_FILE) for d in (source_dir, workdir))
  if os.path.exists(dst) or not os.path.exists(src):
    return False
  os.makedirs(workdir, exist_ok=True)
  with open(src, "rb") as f_in, open(dst + ".tmp", "wb") as f_out:
    f_out.write(f_in.read())
  os.replace(dst + ".tmp", dst)
  log.info("using the vocabulary of %s (%s)", source_dir, src)
  return True
