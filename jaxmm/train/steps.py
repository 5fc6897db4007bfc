"""Pure, jitted train / eval steps over (graphdef, state) pairs.

The model and optimizer are split once; each step merges them inside `jax.jit`, so NNX's Python
graph traversal happens only at trace time, and the state buffers are donated to the update.
Dropout randomness is `fold_in(key(seed), optimizer step)`: it lives in no mutable RNG state, so a
resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxmm.train import losses

LossFn = Callable[[jax.Array, dict], jax.Array]  # (logits, batch) -> per-example loss (B,)

# XLA:CPU's default copy insertion copies the Adam moments before updating them in place, as the
# update and the non-finite fallback read them in separate fusions (~10% of a ResNet-18 step at
# 64 px; benchmarks/results/issue5.md); its region analysis sees that the copies are not needed.
_COMPILER_OPTIONS = {"cpu": {"xla_cpu_copy_insertion_use_region_analysis": True}}


def compiler_options() -> dict | None:
  """XLA options for jitting a train step on this backend (None: the defaults)."""
  return _COMPILER_OPTIONS.get(jax.default_backend())


@dataclasses.dataclass(frozen=True)
class Task:
  """What the head predicts: its loss, and how logits become probabilities."""

  name: str
  loss: LossFn
  probs: Callable[[jax.Array], jax.Array]
  target_key: str
  # (model, batch, rngs) -> (logits, extra scalar loss): a task whose training objective needs
  # more than the logits (an auxiliary loss) replaces the plain forward pass with this.
  forward: Callable | None = None


def multilabel_task(loss_name: str = "bce", *, class_weights=None, focal_gamma: float = 2.0,
                    focal_alpha: float | None = 0.25) -> Task:
  if loss_name == "bce":
    loss = lambda logits, b: losses.sigmoid_bce(logits, b["labels"])
  elif loss_name == "weighted_bce":
    w = None if class_weights is None else jnp.asarray(class_weights, jnp.float32)
    loss = lambda logits, b: losses.sigmoid_bce(logits, b["labels"], class_weights_L=w)
  elif loss_name == "focal":
    loss = lambda logits, b: losses.focal_loss(logits, b["labels"], gamma=focal_gamma,
                                               alpha=focal_alpha)
  else:
    raise ValueError(f"train.loss {loss_name!r} is not a multi-label loss: bce, weighted_bce, focal")
  return Task("multilabel", loss, jax.nn.sigmoid, "labels")


def split_state(model: nnx.Module, optimizer: nnx.Optimizer):
  """-> (graphdefs, state): state = (model_state, opt_state) is a plain pytree of arrays."""
  model_def, model_state = nnx.split(model)
  opt_def, opt_state = nnx.split(optimizer)
  return (model_def, opt_def), (model_state, opt_state)


def make_train_step(graphdefs, task: Task, *, seed: int, out_shardings: Any = None):
  """-> jitted `train_step(state, batch) -> (state, metrics)`, the state donated.

  out_shardings: where the new state and metrics live (jaxmm.train.parallel replicates them over
  a mesh); None leaves it to jit.
  """
  model_def, opt_def = graphdefs
  base_key = jax.random.key(seed)

  def train_step(state, batch: dict[str, jax.Array]):
    # merge() may hand the State's own Variables to the modules, and update() mutates them:
    # keep a structural copy of the incoming arrays for the non-finite fallback below.
    old_state = jax.tree.map(lambda x: x, state)
    model = nnx.merge(model_def, state[0])
    optimizer = nnx.merge(opt_def, state[1])
    model.train()
    rngs = nnx.Rngs(dropout=jax.random.fold_in(base_key, optimizer.step[...]))

    def objective(model, rngs):  # rngs as an argument: NNX transforms must not close over it
      if task.forward is None:
        logits, extra = model(batch, rngs=rngs), 0.0
      else:
        logits, extra = task.forward(model, batch, rngs)
      return losses.masked_mean(task.loss(logits, batch), batch.get("mask")) + extra, logits

    (loss, _), grads = nnx.value_and_grad(objective, has_aux=True)(model, rngs)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    optimizer.update(model, grads)
    # A non-finite loss or gradient skips the whole update (params, batch stats, optimizer state);
    # the loop counts such steps and stops after train.max_bad_steps in a row.
    new_state = (nnx.state(model), nnx.state(optimizer))
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state,
                             old_state)
    return new_state, {"loss": loss, "grad_norm": grad_norm, "finite": finite}

  kwargs = {} if out_shardings is None else {"out_shardings": out_shardings}
  return jax.jit(train_step, donate_argnums=0, compiler_options=compiler_options(), **kwargs)


def make_predict_step(model_def, task: Task):
  """(model_state, batch) -> (probs, per-example loss or None), in eval mode."""

  def predict_step(model_state, batch: dict[str, jax.Array]):
    model = nnx.merge(model_def, model_state)
    model.eval()
    logits = model(batch)
    loss_B = task.loss(logits, batch) if task.target_key in batch else jnp.zeros(logits.shape[0])
    return task.probs(logits), loss_B

  return jax.jit(predict_step)


def model_state_of(state: Any):
  return state[0]
