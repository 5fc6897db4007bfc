"""Config helpers: the workdir's config.json guard, and the embedded synthetic data."""

from __future__ import annotations

import difflib
import json
import logging
import os

import ml_collections

CONFIG_FILE = "config.json"
log = logging.getLogger("jaxmm")
# Keys that may change between a run and its resumption (how long, how fast, how verbose).
_RESUMABLE_PREFIXES = ("train.", "data.num_threads", "data.num_workers", "data.cache_dir",
                       "data.synthetic.", "model.dtype")  # dtype: params are float32 either way


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


# Config keys added after workdirs already existed, with the value that reproduces the behaviour
# from before: a workdir whose config.json lacks one resumes when the new config keeps that value.
ADDED_KEYS = {"data.augment.color_jitter": 0.0, "data.augment.word_swap": 0.0}


def check_workdir_config(config, workdir: str) -> None:
  """Writes config.json on a fresh run; refuses to resume into a run of a different config."""
  path = os.path.join(workdir, CONFIG_FILE)
  new = json.loads(to_json(config))
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    a, b = flatten(old), flatten(new)
    for key, value in ADDED_KEYS.items():  # a run from before the key existed behaved like this
      a.setdefault(key, value)
    diff = sorted(k for k in set(a) | set(b)
                  if a.get(k) != b.get(k) and not k.startswith(_RESUMABLE_PREFIXES))
    if diff and not config.train.get("allow_config_change", False):
      shown = "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff[:6])
      raise ValueError(
          f"{workdir} holds a run of a different config ({len(diff)} key(s) differ: {shown}). "
          "Use a new --workdir, or pass --config.train.allow_config_change=True to resume anyway.")
  tmp = f"{path}.{os.getpid()}.tmp"  # atomic: two processes may start on one workdir at once
  with open(tmp, "w") as f:
    f.write(to_json(config))
  os.replace(tmp, path)


def nearest_key(config, key: str) -> str | None:
  """The existing dotted config key closest to a mistyped one (for error messages)."""
  keys = list(flatten(config.to_dict()))
  match = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
  return match[0] if match else None


def ensure_synthetic(cfg_data, task: str = "multilabel") -> None:
  """Makes the embedded synthetic dataset of `task` at data.root unless it is already there."""
  if os.path.exists(os.path.join(cfg_data.root, cfg_data.train_csv)):
    return
  from jaxmm.data import synthetic
  s = cfg_data.synthetic
  log.info("generating the synthetic %s dataset in %s", task, cfg_data.root)
  difficulty = synthetic.Difficulty(p_clear=s.p_clear, p_mention=s.p_mention, p_decoy=s.p_decoy)
  if task == "matching":
    # n_test plays the part of the val split here: the S0 layout ships train + val.
    synthetic.make_matching_synthetic(cfg_data.root, n_train=s.n_train, n_val=s.n_test,
                                      image_size=s.image_size, seed=s.seed, difficulty=difficulty)
  else:
    synthetic.make_comp5329_synthetic(cfg_data.root, n_train=s.n_train, n_test=s.n_test,
                                      image_size=s.image_size, seed=s.seed, difficulty=difficulty)


def load_config_file(path: str):
  """Imports a config file and returns its get_config()."""
  import importlib.util
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file {path!r} does not exist (see configs/ for the shipped ones)")
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
  config = load_config_file(path.split(":", 1)[0])
  known = flatten(config.to_dict())
  prefixes = {k.rsplit(".", n)[0] for k in known for n in range(1, k.count(".") + 1)}
  for arg in argv:
    if arg.startswith("--config.") and "=" in arg:
      key = arg[len("--config."):].split("=", 1)[0]
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
  path = path or os.environ.get("JAXMM_XLA_CACHE") or os.path.join(
      os.path.expanduser("~"), ".cache", "jaxmm", "xla")
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
