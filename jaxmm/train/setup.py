"""The run plan: what the loop needs from the config, read once into one typed object.

`plan(config, task, num_train)` works out the steps per epoch, the schedule's length, the cut of
max_steps, the device mesh and this process's share of each batch, the augmentation, and the
early-stopping / reduce-on-plateau settings; `fit()` (jaxmm.train.loop) reads nothing else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
from jax.sharding import Mesh, Sharding

from jaxmm.data import pipeline
from jaxmm.data.pipeline import AugmentConfig
from jaxmm.train import cpu_kernels, optim, parallel


@dataclasses.dataclass(frozen=True)
class RunPlan:
  seed: int
  steps_per_epoch: int
  schedule_steps: int  # the configured epochs: the learning-rate schedule always spans these
  lr_schedule: Callable  # step -> learning rate before the plateau scale (for the logs)
  total_steps: int  # where this run stops (train.max_steps cuts smoke runs short)
  global_batch: int
  local_batch: int  # the rows of each global batch this process loads
  shard: tuple[int, int]  # (this process, process count) for the input pipeline
  mesh: Mesh | None  # data parallelism over all devices, or None for one device
  augment: AugmentConfig
  eval_batch_size: int
  log_every: int
  ckpt_every_steps: int
  max_bad_steps: int
  select_metric: str
  select_mode: str  # 'max' | 'min'
  early_stopping_patience: int  # 0 = off
  plateau_factor: float
  plateau_patience: int  # 0 = off
  l2: float  # optim.l2, checked against the first logged gradient norms
  num_threads: int
  num_workers: int
  progress_bar: bool
  cpu_kernels: str  # 'auto' | 'ynnpack' | 'eigen' (jaxmm.train.cpu_kernels)

  @property
  def state_sharding(self) -> Sharding:
    """Where the train state lives: replicated over the mesh, or on this process's first
    device."""
    return parallel.state_sharding(self.mesh)

  def early_stopping(self) -> optim.EarlyStopping:
    return optim.EarlyStopping(self.early_stopping_patience or 10**9, mode=self.select_mode)

  def plateau(self) -> optim.ReduceOnPlateau | None:
    if not self.plateau_patience:
      return None
    return optim.ReduceOnPlateau(self.plateau_factor, self.plateau_patience, mode=self.select_mode)


def plan(config, task, num_train: int) -> RunPlan:
  """The plan of a run of `config` over `num_train` training examples."""
  tc = config.train
  spe = pipeline.steps_per_epoch(num_train, tc.batch_size)
  if spe == 0:
    raise ValueError(
      f"{num_train} training examples give no full batch of "
      f"train.batch_size={tc.batch_size}; lower the batch size"
    )
  schedule_steps = tc.epochs * spe
  total_steps = min(tc.max_steps, schedule_steps) if tc.max_steps else schedule_steps
  mesh = parallel.run_mesh(tc)
  local_batch, shard = tc.batch_size, (0, 1)
  if mesh is not None:
    local_batch = parallel.per_process_batch(tc.batch_size, mesh)
    shard = (jax.process_index(), jax.process_count())
  augment = AugmentConfig.from_config(config.data)  # image transforms placed for this backend
  kernels = tc.get("cpu_kernels", "auto")
  cpu_kernels.check(kernels)
  return RunPlan(
    seed=config.seed,
    steps_per_epoch=spe,
    schedule_steps=schedule_steps,
    lr_schedule=optim.make_schedule(config.optim, steps_per_epoch=spe, total_steps=schedule_steps),
    total_steps=total_steps,
    global_batch=tc.batch_size,
    local_batch=local_batch,
    shard=shard,
    mesh=mesh,
    augment=augment,
    eval_batch_size=tc.eval_batch_size,
    log_every=tc.log_every,
    ckpt_every_steps=tc.ckpt_every_steps,
    max_bad_steps=tc.max_bad_steps,
    select_metric=tc.select_metric,
    select_mode=task.select_mode(),
    early_stopping_patience=tc.early_stopping_patience,
    plateau_factor=config.optim.plateau_factor,
    plateau_patience=config.optim.plateau_patience,
    l2=config.optim.l2,
    num_threads=config.data.num_threads,
    num_workers=config.data.num_workers,
    progress_bar=tc.progress_bar,
    cpu_kernels=kernels,
  )
