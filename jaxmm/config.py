"""Config helpers: loading config files, checking command-line overrides, the embedded synthetic
data, logging and the compilation cache. The workdir's config.json guard is jaxmm.workdir."""

from __future__ import annotations

import difflib
import json
import logging
import os

import ml_collections

log = logging.getLogger("jaxmm")


def flatten(d, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, (dict, ml_collections.ConfigDict)):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
  return out


def to_json(config) -> str:
  return json.dumps(config.to_dict(), indent=1, sort_keys=True, default=str)


# The shipped configs live in the package (jaxmm/configs; `configs/` in a checkout links there), so
# the installed commands find them outside a checkout too.
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
DEFAULT_CONFIG_FILE = os.path.join(CONFIGS_DIR, "default.py")


def default_config() -> ml_collections.ConfigDict:
  """configs/default.py's get_config(): every key with its default."""
  return load_config_file(DEFAULT_CONFIG_FILE)


def shipped_config(name: str) -> str | None:
  """The file of a shipped config named `name` ('demo', 'demo.py' or 'configs/demo.py'), or None."""
  base = os.path.basename(name)
  base = base if base.endswith(".py") else f"{base}.py"
  path = os.path.join(CONFIGS_DIR, base)
  return path if os.path.isfile(path) and not base.startswith("_") else None


def resolve_config_arg(argv: list[str]) -> None:
  """Rewrites a `--config NAME` that is no file here into the shipped config of that name, in
  place, so `jaxmm-train --config demo` (or `--config configs/demo.py` outside a checkout) works
  from any folder. A path that exists is left alone; so is an unknown name (its error names it)."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      at, value = i, arg.split("=", 1)[1]
    elif arg == "--config" and i + 1 < len(argv):
      at, value = i + 1, argv[i + 1]
    else:
      continue
    path, sep, rest = value.partition(":")
    found = None if os.path.isfile(path) else shipped_config(path)
    if found:
      argv[at] = ("--config=" if at == i else "") + found + sep + rest


def nearest_key(config, key: str) -> str | None:
  """The existing dotted config key closest to a mistyped one (for error messages)."""
  keys = list(flatten(config.to_dict()))
  match = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
  return match[0] if match else None


def ensure_synthetic(cfg_data, task: str = "multilabel") -> None:
  """Makes the embedded synthetic dataset of `task` at data.root when it is missing there and the
  config names that folder as its synthetic one (data.synthetic.root): a mistyped data.root is an
  error, never a reason to generate data."""
  # A table's training file may be train.jsonl too (the layouts' readers tell which it is).
  train = [cfg_data.train_csv] + (["train.jsonl"] if cfg_data.train_csv == "train.csv" else [])
  if any(os.path.exists(os.path.join(cfg_data.root, name)) for name in train):
    return
  s = cfg_data.synthetic
  if not s.root:
    return  # the dataset reader names the missing file
  if os.path.abspath(s.root) != os.path.abspath(cfg_data.root):
    raise FileNotFoundError(
      f"data.root={cfg_data.root!r} has no {' or '.join(train)}: check the path. This config "
      f"generates its synthetic data only at {s.root!r}; to generate a synthetic set at "
      f"{cfg_data.root!r} instead, pass --config.data.synthetic.root={cfg_data.root}"
    )
  from jaxmm.data import synthetic

  log.info("generating the synthetic %s dataset in %s", task, cfg_data.root)
  difficulty = synthetic.Difficulty(p_clear=s.p_clear, p_mention=s.p_mention, p_decoy=s.p_decoy)
  if task == "matching":
    # n_test plays the part of the val split here: the S0 layout ships train + val.
    synthetic.make_matching_synthetic(
      cfg_data.root,
      n_train=s.n_train,
      n_val=s.n_test,
      image_size=s.image_size,
      seed=s.seed,
      difficulty=difficulty,
    )
  else:
    synthetic.make_comp5329_synthetic(
      cfg_data.root,
      n_train=s.n_train,
      n_test=s.n_test,
      image_size=s.image_size,
      seed=s.seed,
      difficulty=difficulty,
    )


def load_config_file(path: str):
  """Imports a config file and returns its get_config()."""
  import importlib.util

  if not os.path.isfile(path):
    raise FileNotFoundError(
      f"config file {path!r} does not exist; the shipped ones are in {CONFIGS_DIR} (pass a "
      "file, or a shipped config's name such as 'demo')"
    )
  spec = importlib.util.spec_from_file_location("_jaxmm_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def check_overrides(argv: list[str]) -> None:
  """Fails fast, naming the nearest valid key, on a `--config.KEY=...` that the config lacks.

  (ml_collections' own error for this arrives as a bare KeyError deep inside flag parsing.)
  """
  path = None
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      path = arg.split("=", 1)[1]
    elif arg == "--config" and i + 1 < len(argv):
      path = argv[i + 1]
  if path is None:
    return
  try:
    config = load_config_file(path.split(":", 1)[0])
  except FileNotFoundError as e:  # raised here, before the scripts' own error handling
    raise SystemExit(f"error: {e}") from None
  known = flatten(config.to_dict())
  prefixes = {k.rsplit(".", n)[0] for k in known for n in range(1, k.count(".") + 1)}
  for arg in argv:
    if arg.startswith("--config."):  # --config.KEY=VALUE, or --config.KEY VALUE
      key = arg[len("--config.") :].split("=", 1)[0]
      if key not in known and key not in prefixes:
        near = nearest_key(config, key)
        hint = f" Did you mean --config.{near}?" if near else ""
        raise SystemExit(f"error: config key {key!r} does not exist in {path}.{hint}")


def setup_logging(level: int = logging.INFO) -> None:
  """jaxmm's own messages at `level` on stderr; absl-based libraries (orbax) at WARNING only."""
  from absl import logging as absl_logging

  absl_logging.set_verbosity(absl_logging.WARNING)
  logger = logging.getLogger("jaxmm")
  if not logger.handlers:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s jaxmm: %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
  logger.setLevel(level)
  logger.propagate = False


def setup_compilation_cache(path: str | None = None) -> None:
  """Persists XLA executables across processes, so a resume or evaluate skips recompiling."""
  import jax

  path = (
    path
    or os.environ.get("JAXMM_XLA_CACHE")
    or os.path.join(os.path.expanduser("~"), ".cache", "jaxmm", "xla")
  )
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
