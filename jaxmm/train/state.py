"""The train state: a model and its optimizer, split once into graph definitions and arrays.

`TrainState` is a pytree whose leaves are the model's and the optimizer's arrays; the graph
definitions ride along as static fields, so a jitted step takes and returns the whole state.
Checkpoints hold `state.arrays` = (model arrays, optimizer arrays). Training (jaxmm.recipes),
two-stage training and inference (jaxmm.inference) all build and restore through this module.
"""

from __future__ import annotations

from typing import Any

from flax import nnx, struct
from jax.sharding import Sharding

from jaxmm.models import fusion, registry
from jaxmm.train import checkpoint as ckpt_lib
from jaxmm.train import optim, transfer


@struct.dataclass
class TrainState:
  model: Any  # nnx.State of the model (params, batch stats)
  opt: Any  # nnx.State of the nnx.Optimizer (step, moments, lr_scale)
  model_def: Any = struct.field(pytree_node=False)
  opt_def: Any = struct.field(pytree_node=False)

  @property
  def arrays(self) -> tuple:
    """(model arrays, optimizer arrays): what a checkpoint holds."""
    return (self.model, self.opt)

  def with_arrays(self, arrays: tuple) -> TrainState:
    return self.replace(model=arrays[0], opt=arrays[1])

  def merged_model(self) -> nnx.Module:
    return nnx.merge(self.model_def, self.model)


def from_model(model: nnx.Module, tx) -> TrainState:
  """A fresh state of `model` with the optax transformation `tx` over its nnx.Params."""
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  model_def, model_state = nnx.split(model)
  opt_def, opt_state = nnx.split(optimizer)
  return TrainState(model=model_state, opt=opt_state, model_def=model_def, opt_def=opt_def)


def build(
  config,
  task,
  *,
  vocab_size: int,
  steps_per_epoch: int = 1,
  total_steps: int = 1,
  embedding_init=None,
  output_bias=None,
  pretrained: bool = False,
) -> TrainState:
  """A fresh model of `task` with the optimizer of `config.optim`.

  embedding_init (word vectors), output_bias (the heads' initial output bias, e.g. the labels'
  prior log-odds) and pretrained (model.image.weights, init.*_from) only matter to a fresh
  training run: a restored checkpoint overwrites them. The step counts size the schedule.
  """
  model = registry.init_in_one_program(
    lambda: task.build_model(vocab_size, nnx.Rngs(config.seed), embedding_init=embedding_init)
  )
  if output_bias is not None and not fusion.set_output_bias(model, output_bias):
    raise ValueError(f"model {config.model.name!r} has no output layer to take the initial bias")
  if pretrained:
    transfer.init_from_config(model, config)
  return with_optimizer(model, config, steps_per_epoch=steps_per_epoch, total_steps=total_steps)


def with_optimizer(
  model: nnx.Module, config, *, steps_per_epoch: int = 1, total_steps: int = 1
) -> TrainState:
  """`model` with a fresh optimizer of `config.optim` (frozen prefixes resolved on it)."""
  tx = optim.make_optimizer(
    transfer.resolve_freeze(config.optim, model),
    steps_per_epoch=steps_per_epoch,
    total_steps=total_steps,
    params=nnx.state(model, nnx.Param),
  )
  return from_model(model, tx)


def restore(
  state: TrainState,
  checkpointer: ckpt_lib.Checkpointer,
  *,
  which: str = ckpt_lib.LATEST,
  sharding: Sharding | None = None,
) -> tuple[TrainState, dict]:
  """-> (the checkpointed state in the structure of `state`, the checkpoint's meta); its arrays
  with `sharding` (None: this process's first device; `parallel.state_sharding(mesh)` for a
  run over a mesh, each host reading only what its devices hold)."""
  arrays, meta = checkpointer.restore(state.arrays, which=which, sharding=sharding)
  return state.with_arrays(arrays), meta


def place(state: TrainState, sharding: Sharding | None = None) -> TrainState:
  """A fresh state placed like a restored one (`ckpt_lib.place_like_restored`): process 0's
  values committed to `sharding` on every process."""
  return ckpt_lib.place_like_restored(state, sharding)


def save(
  state: TrainState,
  checkpointer: ckpt_lib.Checkpointer,
  step: int,
  meta: dict,
  *,
  which: str = ckpt_lib.LATEST,
) -> None:
  """Starts an asynchronous save (checkpoint.Checkpointer.save) of `state` at `step`."""
  checkpointer.save(step, state.arrays, meta, which=which)
