"""Pure, jitted train / eval steps over a TrainState (jaxmm.train.state) and a task's loss.

The model and optimizer are split once; each step merges them inside `jax.jit`, so NNX's Python
graph traversal happens only at trace time, and the state buffers are donated to the update.
Dropout randomness is `fold_in(key(seed), optimizer step)`: it lives in no mutable RNG state, so a
resumed run draws exactly what an uninterrupted one would. Image augmentation placed on the device
(jaxmm.data.device_augment) runs first in the train step, keyed the same way.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxmm.data import device_augment
from jaxmm.train import cpu_kernels as cpu_kernels_lib
from jaxmm.train import losses

# XLA:CPU's default copy insertion copies the Adam moments before updating them in place, as the
# update and the non-finite fallback read them in separate fusions (~10% of a ResNet-18 step at
# 64 px; benchmarks/RESULTS.md, "Speed"); its region analysis sees that the copies are not needed.
_COMPILER_OPTIONS = {"cpu": {"xla_cpu_copy_insertion_use_region_analysis": True}}


def compiler_options(cpu_kernels: str = cpu_kernels_lib.DEFAULT) -> dict | None:
  """XLA options for jitting a train step on this backend (None: the defaults); on a CPU with
  the convs and matmuls in `cpu_kernels` (jaxmm.train.cpu_kernels)."""
  backend = jax.default_backend()
  options = _COMPILER_OPTIONS.get(backend)
  if backend == "cpu":
    options = {**(options or {}), **cpu_kernels_lib.compiler_options(cpu_kernels)}
  return options


def make_train_step(
  task,
  *,
  seed: int,
  out_shardings: Any = None,
  augment=None,
  cpu_kernels: str = cpu_kernels_lib.DEFAULT,
):
  """-> jitted `train_step(state, batch) -> (state, metrics)` over a TrainState, donated.

  `task` (jaxmm.tasks.Task) gives the forward pass and the per-example loss. out_shardings: where
  the new state and metrics live (jaxmm.train.parallel replicates them over a mesh); None leaves
  it to jit. augment: the image augmentation to apply to `batch['image']` before the forward pass
  (a pipeline.AugmentConfig, from pipeline.device_augmentation), None for none; each example's
  draw is keyed by (seed, optimizer step, batch['index']). cpu_kernels: 'ynnpack' or 'eigen',
  the kernel library of the convs and matmuls on a CPU (jaxmm.train.cpu_kernels).
  """
  base_key = jax.random.key(seed)

  def train_step(state, batch: dict[str, jax.Array]):
    # merge() may hand the State's own Variables to the modules, and update() mutates them:
    # keep a structural copy of the incoming arrays for the non-finite fallback below.
    old_state = jax.tree.map(lambda x: x, state)
    model = nnx.merge(state.model_def, state.model)
    optimizer = nnx.merge(state.opt_def, state.opt)
    model.train()
    rngs = nnx.Rngs(dropout=jax.random.fold_in(base_key, optimizer.step[...]))
    if augment is not None and "image" in batch:
      batch = augment_images(batch, seed, optimizer.step[...], augment)

    def objective(model, rngs):  # rngs as an argument: NNX transforms must not close over it
      logits, extra = task.forward(model, batch, rngs)
      return losses.masked_mean(task.loss(logits, batch), batch.get("mask")) + extra, logits

    (loss, _), grads = nnx.value_and_grad(objective, has_aux=True)(model, rngs)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    optimizer.update(model, grads)
    # A non-finite loss or gradient skips the whole update (params, batch stats, optimizer state);
    # the loop counts such steps and stops after train.max_bad_steps in a row.
    new_state = state.replace(model=nnx.state(model), opt=nnx.state(optimizer))
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, old_state)
    return new_state, {"loss": loss, "grad_norm": grad_norm, "finite": finite}

  kwargs = {} if out_shardings is None else {"out_shardings": out_shardings}
  return jax.jit(
    train_step, donate_argnums=0, compiler_options=compiler_options(cpu_kernels), **kwargs
  )


def augment_images(batch: dict[str, jax.Array], seed: int, step: jax.Array, augment) -> dict:
  """The batch with its images augmented on the device; rows keyed by their split `index` (or
  their row when the batch has none)."""
  images_BxHxWx3 = batch["image"]
  index_B = batch.get("index")
  if index_B is None:
    index_B = jnp.arange(images_BxHxWx3.shape[0])
  keys_B = device_augment.example_keys(seed, step, index_B)
  return dict(batch, image=device_augment.augment_batch(images_BxHxWx3, keys_B, augment))


def make_predict_step(model_def, task):
  """(model_state, batch) -> (probs, per-example loss or None), in eval mode."""

  def predict_step(model_state, batch: dict[str, jax.Array]):
    model = nnx.merge(model_def, model_state)
    model.eval()
    logits = model(batch)
    loss_B = task.loss(logits, batch) if task.target_key in batch else jnp.zeros(logits.shape[0])
    return task.probs(logits), loss_B

  return jax.jit(predict_step)
