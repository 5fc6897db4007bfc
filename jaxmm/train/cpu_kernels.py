"""Which kernel library XLA:CPU runs a train step's convolutions and matmuls in, chosen by timing.

XLA:CPU puts convs and dots in YNNPACK fusions by default ('ynnpack'); with
`xla_cpu_experimental_ynn_fusion_type` empty they run in Eigen's kernels ('eigen'). Which is
faster depends on the CPU: best.py's image step (half-width ResNet-18, 64 px, batch 64) on a Zen 3
(AVX2) core pair ran 2.10 steps/s with YNNPACK and 3.39 with Eigen, while on a Zen 4 (AVX-512)
pair YNNPACK was the faster (benchmarks/RESULTS.md, "CPU kernels: YNNPACK or Eigen"). 'auto'
therefore times one step of each on copies of the state and keeps the faster; the choice is saved
with the checkpoints so a resumed run compiles the same program.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

log = logging.getLogger(__name__)

KERNELS = ("ynnpack", "eigen")
CHOICES = ("auto", *KERNELS)
DEFAULT = "ynnpack"  # XLA's own default
# A second compile of the train step pays off only over many steps of a step that takes time:
# runs shorter than MIN_RUN_STEPS (smoke runs, the tests' two-step runs) and steps faster than
# MIN_STEP_S keep XLA's default.
MIN_RUN_STEPS = 200
MIN_STEP_S = 0.1


def compiler_options(kernels: str) -> dict:
  """XLA:CPU compile options selecting `kernels` ('ynnpack' adds nothing)."""
  check(kernels, allow_auto=False)
  return {"xla_cpu_experimental_ynn_fusion_type": ""} if kernels == "eigen" else {}


def check(kernels: str, *, allow_auto: bool = True) -> None:
  allowed = CHOICES if allow_auto else KERNELS
  if kernels not in allowed:
    raise ValueError(
      f"train.cpu_kernels={kernels!r}: use one of {', '.join(map(repr, allowed))} ('auto' times "
      "a step of each on the first batch and keeps the faster)"
    )


def _copy(tree):
  return jax.tree.map(lambda x: jnp.copy(x) if isinstance(x, jax.Array) else x, tree)


def _seconds_per_step(step, state, batch, repeats: int) -> float:
  """Best of `repeats` timed calls after a compiling one, on a copy (`step` donates it)."""
  state = _copy(state)
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    best = min(best, time.perf_counter() - t0)
  return best


def choose(
  make_step: Callable[[str], Any],
  state,
  batch,
  *,
  run_steps: int | None = None,
  repeats: int = 3,
  min_step_s: float = MIN_STEP_S,
) -> tuple[str, Any]:
  """-> ('ynnpack' or 'eigen', its step): the faster train step on this machine for this state and
  batch.

  make_step(kernels) -> the jitted (state, batch) -> (state, metrics) step, called once for each
  kernels it times; `state` and `batch` are left as they were (each timing runs on a copy). Only on
  a CPU backend in one process (other processes could choose differently and compute different
  replicas); elsewhere, and for a run of fewer than MIN_RUN_STEPS `run_steps` (None: any length),
  'ynnpack', which adds no compile option, untimed. A step under `min_step_s` keeps 'ynnpack'
  without a second compile.
  """
  default_step = make_step(DEFAULT)
  short_run = run_steps is not None and run_steps < MIN_RUN_STEPS
  if jax.default_backend() != "cpu" or jax.process_count() > 1 or short_run:
    return DEFAULT, default_step
  steps = {DEFAULT: default_step}
  times = {DEFAULT: _seconds_per_step(default_step, state, batch, repeats)}
  if times[DEFAULT] < min_step_s:
    return DEFAULT, default_step
  steps["eigen"] = make_step("eigen")
  times["eigen"] = _seconds_per_step(steps["eigen"], state, batch, repeats)
  chosen = min(times, key=times.get)
  log.info(
    "CPU kernels: %s (one train step: %s)",
    chosen,
    ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in times.items()),
  )
  return chosen, steps[chosen]
