"""The optimizer factory built from `config.optim`, plus plateau and early-stopping logic.

`config.optim` keys (configs/default.py documents their defaults):
  name 'adam'|'adamw'|'sgd' ('adamw' is 'adam': the decay is its own key); lr; weight_decay
  (decoupled, as AdamW: params shrink by lr * weight_decay per step, whatever the optimizer);
  l2 (a coupled L2 term l2 * params added to the gradient before the optimizer scales it, as
  torch's Adam/SGD weight_decay); b1, b2, eps; momentum, nesterov (sgd); clip_norm (global-norm
  clipping of the trainable gradients, 0 = off); schedule 'constant'|'cosine'|'warmup_cosine'|
  'step'; warmup_steps, or warmup_epochs when warmup_steps is 0; warmup_init_ratio; step_gamma and
  step_epochs (StepLR: lr * gamma**(epoch // step_epochs)); min_lr_ratio (floor of cosine/step
  decay, as a fraction of lr); freeze (parameter-path prefixes whose updates are zeroed);
  plateau_factor, plateau_patience (0 = off) for `ReduceOnPlateau`, driven by the loop.

The returned transformation is wrapped in `optax.inject_hyperparams` with one hyperparameter,
`lr_scale`, multiplying every update. The loop sets it between epochs (reduce-on-plateau) with
`set_lr_scale`; it is an array in the optimizer state, so changing it does not retrace a jitted
step, and it is saved and restored with the rest of the state.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

TRAINABLE, FROZEN = "trainable", "frozen"
_LR_SCALE = "lr_scale"


def warmup_steps(optim_cfg, *, steps_per_epoch: int) -> int:
  """Warmup length in steps: warmup_steps, else round(warmup_epochs * steps_per_epoch)."""
  steps = int(optim_cfg.warmup_steps)
  if steps > 0:
    return steps
  return int(round(float(optim_cfg.warmup_epochs) * steps_per_epoch))


def make_schedule(optim_cfg, *, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
  """Learning rate per optimizer step (before lr_scale).

  An optional linear warmup from warmup_init_ratio * lr to lr comes first; the base schedule
  then starts at lr and counts from the end of the warmup: 'cosine' and 'warmup_cosine' decay
  to min_lr_ratio * lr at total_steps; 'step' multiplies by step_gamma every step_epochs epochs.
  """
  lr = float(optim_cfg.lr)
  name = str(optim_cfg.schedule)
  min_lr_ratio = float(optim_cfg.min_lr_ratio)
  steps_per_epoch = max(int(steps_per_epoch), 1)
  warmup = warmup_steps(optim_cfg, steps_per_epoch=steps_per_epoch)
  if warmup > total_steps:
    raise ValueError(f"warmup ({warmup} steps) is longer than training ({total_steps} steps)")
  if name == "constant":
    base = optax.constant_schedule(lr)
  elif name in ("cosine", "warmup_cosine"):
    base = optax.cosine_decay_schedule(
      lr, decay_steps=max(total_steps - warmup, 1), alpha=min_lr_ratio
    )
  elif name == "step":
    base = optax.exponential_decay(
      lr,
      transition_steps=steps_per_epoch * int(optim_cfg.step_epochs),
      decay_rate=float(optim_cfg.step_gamma),
      staircase=True,
      end_value=lr * min_lr_ratio if min_lr_ratio > 0 else None,
    )
  else:
    raise ValueError(
      f"unknown schedule {name!r}; expected 'constant', 'cosine', 'warmup_cosine' or 'step'"
    )
  if warmup == 0:
    return base
  ramp = optax.linear_schedule(lr * float(optim_cfg.warmup_init_ratio), lr, warmup)
  return optax.join_schedules([ramp, base], [warmup])


def _path_str(key_path) -> str:
  parts = []
  for k in key_path:
    if isinstance(k, jax.tree_util.DictKey):
      parts.append(str(k.key))
    elif isinstance(k, jax.tree_util.GetAttrKey):
      parts.append(k.name)
    elif isinstance(k, jax.tree_util.SequenceKey):
      parts.append(str(k.idx))
    else:
      parts.append(str(getattr(k, "key", k)))
  return ".".join(parts)


def _is_variable(x) -> bool:
  return isinstance(x, nnx.Variable)


def param_paths(params_state) -> list[str]:
  """Dotted key paths of the leaves of nnx.state(model, nnx.Param): 'text.embed.embedding'."""
  leaves = jax.tree_util.tree_leaves_with_path(params_state, is_leaf=_is_variable)
  return [_path_str(path) for path, _ in leaves]


def _frozen(path: str, prefixes) -> bool:
  return any(path == p or path.startswith(p + ".") for p in prefixes)


def param_labels(params_state, freeze_prefixes) -> Any:
  """Tree like params_state: 'frozen' where a path starts with a freeze prefix, else 'trainable'.

  Prefixes match whole path components ('text.embed' freezes 'text.embed.embedding', not
  'text.embedding'). A prefix matching no parameter is a typo that would silently train the
  tower, so it raises.
  """
  prefixes = tuple(str(p) for p in freeze_prefixes)
  paths = param_paths(params_state)
  unused = [p for p in prefixes if not any(_frozen(path, (p,)) for path in paths)]
  if unused:
    tops = sorted({path.split(".")[0] for path in paths})
    raise ValueError(f"freeze prefixes {unused} match no parameter; top-level names: {tops}")
  return jax.tree_util.tree_map_with_path(
    lambda path, _: FROZEN if _frozen(_path_str(path), prefixes) else TRAINABLE,
    params_state,
    is_leaf=_is_variable,
  )


def _base_optimizer(optim_cfg, schedule: optax.Schedule) -> optax.GradientTransformation:
  name = str(optim_cfg.name)
  if name not in ("adam", "adamw", "sgd"):
    raise ValueError(f"unknown optimizer {name!r}; expected 'adam', 'adamw' or 'sgd'")
  wd, l2 = float(optim_cfg.weight_decay), float(optim_cfg.l2)
  b1, b2, eps = float(optim_cfg.b1), float(optim_cfg.b2), float(optim_cfg.eps)
  parts = []
  clip_norm = float(optim_cfg.clip_norm)
  if clip_norm > 0:
    parts.append(optax.clip_by_global_norm(clip_norm))
  if l2 > 0:  # coupled: part of the gradient the optimizer normalises (torch's weight_decay)
    parts.append(optax.add_decayed_weights(l2))
  if name == "sgd":
    momentum = float(optim_cfg.momentum)
    parts.append(
      optax.trace(decay=momentum, nesterov=bool(optim_cfg.nesterov))
      if momentum
      else optax.identity()
    )
  else:
    parts.append(optax.scale_by_adam(b1=b1, b2=b2, eps=eps))
  if wd > 0:  # decoupled: added after the optimizer's scaling, as optax.adamw does
    parts.append(optax.add_decayed_weights(wd))
  parts.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*parts)


def l2_dominance_warning(
  l2: float, param_norm: float, grad_norm: float, *, factor: float = 10.0
) -> str | None:
  """A warning when the coupled L2 term's gradient (l2 * ||params||) is over `factor` times the
  loss gradient's norm: Adam normalises their sum, so the updates would mostly shrink the weights
  instead of fitting the data (a focal loss averaged over labels has small gradients)."""
  term = l2 * param_norm
  if l2 <= 0 or term <= factor * grad_norm:
    return None
  ratio = term / max(grad_norm, 1e-30)
  return (
    f"optim.l2={l2:g} adds a gradient of norm {term:.3g}, {ratio:.0f}x the loss gradient's "
    f"{grad_norm:.3g}: Adam normalises their sum, so the updates mostly shrink the weights. "
    "Lower optim.l2, or use optim.weight_decay (decoupled) instead."
  )


def make_optimizer(
  optim_cfg, *, steps_per_epoch: int, total_steps: int, params=None
) -> optax.GradientTransformation:
  """clip -> optimizer(schedule) on trainable params, zero on frozen ones, times lr_scale.

  params (optional, e.g. nnx.state(model, nnx.Param)) checks the freeze prefixes now rather
  than at the optimizer's init.
  """
  schedule = make_schedule(optim_cfg, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
  freeze = optim_cfg.freeze
  freeze = (freeze,) if isinstance(freeze, str) else tuple(freeze)  # 'image' is not ('i', ...)
  if params is not None and freeze:
    param_labels(params, freeze)

  def build(lr_scale):
    tx = _base_optimizer(optim_cfg, schedule)
    if freeze:
      # Labels are computed from whichever tree the optimizer sees (Variables at init, arrays
      # in nnx.Optimizer.update), so they always match its structure.
      tx = optax.multi_transform(
        {TRAINABLE: tx, FROZEN: optax.set_to_zero()}, lambda p: param_labels(p, freeze)
      )
    return optax.chain(tx, optax.scale(lr_scale))

  return optax.inject_hyperparams(build)(lr_scale=1.0)


def _lr_scale_leaves(opt_state):
  if isinstance(opt_state, nnx.Optimizer):
    opt_state = opt_state.opt_state
  found = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(opt_state, is_leaf=_is_variable):
    names = [getattr(k, "name", getattr(k, "key", None)) for k in path]
    if len(names) >= 2 and names[-2:] == ["hyperparams", _LR_SCALE]:
      found.append((path, leaf))
  if len(found) != 1:
    raise ValueError(
      f"expected one '{_LR_SCALE}' hyperparameter in the optimizer state, found "
      f"{len(found)}; was the optimizer built by make_optimizer?"
    )
  return opt_state, found[0]


def get_lr_scale(opt_state) -> float:
  """The current lr_scale of a make_optimizer state (pure optax state or an nnx.Optimizer)."""
  _, (_, leaf) = _lr_scale_leaves(opt_state)
  return float(leaf[...] if _is_variable(leaf) else leaf)


def set_lr_scale(opt_state, value: float):
  """Sets lr_scale; returns the state. An nnx.Optimizer (or its opt_state) is changed in place."""
  state, (target, leaf) = _lr_scale_leaves(opt_state)
  if _is_variable(leaf):
    leaf[...] = jnp.asarray(value, leaf[...].dtype)
    return opt_state
  return jax.tree_util.tree_map_with_path(
    lambda path, x: jnp.asarray(value, x.dtype) if path == target else x, state
  )


def current_lr(schedule: optax.Schedule, step, opt_state) -> float:
  """The learning rate the next update uses: schedule(step) * lr_scale (for logging)."""
  return float(schedule(int(step))) * get_lr_scale(opt_state)


def _improved(metric: float, best: float, mode: str, min_delta: float) -> bool:
  if math.isnan(metric):
    return False
  return metric > best + min_delta if mode == "max" else metric < best - min_delta


def _check_mode(mode: str) -> str:
  if mode not in ("max", "min"):
    raise ValueError(f"mode must be 'max' or 'min'; got {mode!r}")
  return mode


class ReduceOnPlateau:
  """torch's ReduceLROnPlateau as a multiplier: after more than `patience` epochs without
  improvement, scale *= factor (not below min_scale) and the count restarts.

  Feed the returned scale to `set_lr_scale`. patience 0 reduces after every bad epoch; use
  `config.optim.plateau_patience == 0` to mean "off" in the loop.
  """

  def __init__(
    self,
    factor: float = 0.5,
    patience: int = 2,
    mode: str = "max",
    min_scale: float = 1e-3,
    min_delta: float = 0.0,
    cooldown: int = 0,
  ):
    if not 0.0 < factor < 1.0:
      raise ValueError(f"factor must be in (0, 1); got {factor}")
    self.factor, self.patience, self.mode = float(factor), int(patience), _check_mode(mode)
    self.min_scale, self.min_delta = float(min_scale), float(min_delta)
    self.cooldown = int(cooldown)
    self.scale = 1.0
    self.best = -math.inf if mode == "max" else math.inf
    self.num_bad = 0
    self.cooldown_left = 0

  def update(self, metric: float) -> float:
    """Records one epoch's metric; returns the lr scale to use from now on."""
    metric = float(metric)
    if _improved(metric, self.best, self.mode, self.min_delta):
      self.best, self.num_bad = metric, 0
    else:
      self.num_bad += 1
    if self.cooldown_left > 0:  # as torch: bad epochs during cooldown do not count
      self.cooldown_left -= 1
      self.num_bad = 0
    if self.num_bad > self.patience:
      self.scale = max(self.scale * self.factor, self.min_scale)
      self.cooldown_left, self.num_bad = self.cooldown, 0
    return self.scale

  def state_dict(self) -> dict:
    return dict(
      scale=self.scale, best=self.best, num_bad=self.num_bad, cooldown_left=self.cooldown_left
    )

  def load_state_dict(self, state: dict) -> None:
    self.scale, self.best = float(state["scale"]), float(state["best"])
    self.num_bad, self.cooldown_left = int(state["num_bad"]), int(state["cooldown_left"])


class EarlyStopping:
  """Stops after `patience` consecutive epochs without improvement (patience 0 = never stops)."""

  def __init__(self, patience: int, mode: str = "max", min_delta: float = 0.0):
    self.patience, self.mode, self.min_delta = int(patience), _check_mode(mode), float(min_delta)
    self.best = -math.inf if mode == "max" else math.inf
    self.best_epoch = -1
    self.epoch = -1
    self.num_bad = 0

  def update(self, metric: float) -> bool:
    """Records one epoch's metric; True when it is a new best (save a checkpoint then)."""
    self.epoch += 1
    metric = float(metric)
    if _improved(metric, self.best, self.mode, self.min_delta):
      self.best, self.best_epoch, self.num_bad = metric, self.epoch, 0
      return True
    self.num_bad += 1
    return False

  @property
  def should_stop(self) -> bool:
    return self.patience > 0 and self.num_bad >= self.patience

  def state_dict(self) -> dict:
    return dict(best=self.best, best_epoch=self.best_epoch, epoch=self.epoch, num_bad=self.num_bad)

  def load_state_dict(self, state: dict) -> None:
    self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])
    self.epoch, self.num_bad = int(state["epoch"]), int(state["num_bad"])
