"""A run's workdir: every file name in it, the config guard, and reading a finished run's config.

A workdir holds one run: config.json (written first; a different config is refused), vocab.json,
metrics.jsonl and tensorboard/, thresholds.json, val_predictions.npz, checkpoints/{latest,best},
report.md and plots/, and the task's extras (reconstructions.png, two_stage.json, stage
folders of a two-stage run).
"""

from __future__ import annotations

import json
import os

import ml_collections

from jaxmm import config as config_lib

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
METRICS_FILE = "metrics.jsonl"
THRESHOLDS_FILE = "thresholds.json"
PREDICTIONS_FILE = "val_predictions.npz"  # val probabilities of the best checkpoint
SKIPPED_FILE = "skipped.json"  # examples left out by data.skip_bad
EVAL_METRICS_FILE = "eval_metrics.json"
REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINTS_DIR = "checkpoints"
RECONSTRUCTIONS_FILE = "reconstructions.png"  # the autoencoder's val reconstructions
TWO_STAGE_FILE = "two_stage.json"  # the stage results of a two-stage run
LABELS_FILE = "labels.json"  # the label names of a multi-label run, in head order

# Keys that may change between a run and its resumption (how long, how fast, how verbose).
_RESUMABLE_PREFIXES = (
  "train.",
  "data.num_threads",
  "data.num_workers",
  "data.cache_dir",
  "data.synthetic.",
  "data.max_image_pixels",
  "model.dtype",
  "model.image.conv_impl",
  "data.augment.where",
)  # dtype, conv_impl: the same parameters either way; where: the same augmentation, other draws

# Keys naming a folder: the same one, written relative or absolute, is no change of config.
_PATH_KEYS = ("data.root", "init.image_from", "init.text_from")

# Config keys added after workdirs already existed, with the value that reproduces the behaviour
# from before: a workdir whose config.json lacks one resumes when the new config keeps that value.
ADDED_KEYS = {
  "data.augment.color_jitter": 0.0,
  "data.augment.word_swap": 0.0,
  "optim.l2": 0.0,
  # the layouts before tables: told from the files, as 'auto' does
  "data.layout": "auto",
  "data.columns.image": "image",
  "data.columns.text": "text",
  "data.columns.labels": "labels",
  "data.columns.match": "match",
  "data.label_sep": "|",
  "data.labels": [],
}


def path(workdir: str, name: str) -> str:
  return os.path.join(workdir, name)


def writes_files() -> bool:
  """Whether this process writes workdir files: process 0 of a run on several hosts (all
  processes still take part in orbax saves and restores, as orbax requires)."""
  import jax  # deferred: reading a workdir's files needs no jax

  return jax.process_index() == 0


def config_differences(config, workdir: str) -> list[str]:
  """The keys (other than resumable ones) whose values differ from the workdir's config.json."""
  with open(path(workdir, CONFIG_FILE)) as f:
    old = json.load(f)
  a, b = config_lib.flatten(old), config_lib.flatten(json.loads(config_lib.to_json(config)))
  for key, value in ADDED_KEYS.items():  # a run from before the key existed behaved like this
    a.setdefault(key, value)
  for key in _PATH_KEYS:  # one folder written relative or absolute (from here) is the same
    if a.get(key) and b.get(key) and os.path.abspath(a[key]) == os.path.abspath(b[key]):
      b[key] = a[key]
  diff = sorted(
    k for k in set(a) | set(b) if a.get(k) != b.get(k) and not k.startswith(_RESUMABLE_PREFIXES)
  )
  return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff]


def has_trained(workdir: str) -> bool:
  """Whether a run in `workdir` got as far as a checkpoint."""
  root = path(workdir, CHECKPOINTS_DIR)
  return any(
    os.listdir(os.path.join(root, which))
    for which in ("latest", "best")
    if os.path.isdir(os.path.join(root, which))
  )


# What a run derives from its data before training. A run that stopped before its first
# checkpoint (bad data, too few rows) leaves them; the corrected run derives them anew.
DERIVED_FILES = (VOCAB_FILE, LABELS_FILE, SKIPPED_FILE)


def clear_untrained(workdir: str) -> list[str]:
  """Removes DERIVED_FILES from a workdir whose run has no checkpoint; returns their paths."""
  if has_trained(workdir):
    return []
  removed = [path(workdir, n) for n in DERIVED_FILES if os.path.exists(path(workdir, n))]
  for p in removed:
    os.remove(p)
  return removed


def check_config(config, workdir: str) -> None:
  """Refuses to resume into a run of a different config; writes nothing. A workdir whose run
  stopped before its first checkpoint (bad data, say) takes a corrected config."""
  if not os.path.exists(path(workdir, CONFIG_FILE)) or not has_trained(workdir):
    return
  diff = config_differences(config, workdir)
  if diff and not config.train.allow_config_change:
    raise ValueError(
      f"{workdir} holds a run of a different config ({len(diff)} key(s) differ: "
      f"{'; '.join(diff[:6])}). Use a new --workdir, or pass "
      "--config.train.allow_config_change=True to resume anyway."
    )


def write_config(config, workdir: str) -> None:
  """Checks the workdir's config (check_config) and writes config.json atomically."""
  check_config(config, workdir)
  os.makedirs(workdir, exist_ok=True)
  target = path(workdir, CONFIG_FILE)
  tmp = f"{target}.{os.getpid()}.tmp"  # atomic: two processes may start on one workdir at once
  with open(tmp, "w") as f:
    f.write(config_lib.to_json(config))
  os.replace(tmp, target)


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config of a trained workdir, over configs/default.py's values: keys added to jaxmm after
  the run was written read as their defaults."""
  file = path(workdir, CONFIG_FILE)
  if not os.path.exists(file):
    raise FileNotFoundError(f"{file} not found: is {workdir!r} a jaxmm workdir? Train first.")
  with open(file) as f:
    saved = json.load(f)
  _fill_missing(saved, config_lib.default_config().to_dict())
  return ml_collections.ConfigDict(saved)


def _fill_missing(values: dict, defaults: dict, prefix: str = "") -> None:
  for key, default in defaults.items():
    if key not in values:
      values[key] = default
    elif isinstance(default, dict) and isinstance(values[key], dict):
      if _other_tower(prefix + key, values[key], default):
        continue
      _fill_missing(values[key], default, f"{prefix}{key}.")


def _other_tower(key: str, section: dict, default: dict) -> bool:
  """A tower section (model.image / model.text) of another tower than the default's: its keys
  are that tower's options, and the default tower's (an LSTM's pooling) are not among them."""
  return key in ("model.image", "model.text") and section.get("name") != default.get("name")
