"""The train step's CPU kernel library: the compile option, the timed choice, the loop's use."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxmm.train import cpu_kernels


def _conv_grad_hlo(options: dict) -> str:
  def loss(x, w):
    y = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(y * y)

  args = (jnp.ones((8, 16, 16, 32)), jnp.ones((3, 3, 32, 32)))  # XLA keeps tiny convs out of YNN
  return jax.jit(jax.grad(loss, (0, 1)), compiler_options=options).lower(*args).compile().as_text()


def test_eigen_takes_the_convs_out_of_ynnpack_fusions():
  assert cpu_kernels.compiler_options("ynnpack") == {}
  assert "__ynn_fusion" in _conv_grad_hlo(cpu_kernels.compiler_options("ynnpack"))
  assert "__ynn_fusion" not in _conv_grad_hlo(cpu_kernels.compiler_options("eigen"))


def test_bad_choice_names_the_key_and_the_choices():
  with pytest.raises(ValueError, match=r"train.cpu_kernels='mkl'.*'auto', 'ynnpack', 'eigen'"):
    cpu_kernels.check("mkl")
  with pytest.raises(ValueError, match="'ynnpack', 'eigen'"):
    cpu_kernels.compiler_options("auto")


def _toy_step(kernels: str, delay_s: float):
  """A donated (state, batch) -> (state, metrics) step; `delay_s` makes one kernel choice slower
  (a host callback that sleeps), so the timed choice has a known answer."""

  def sleep(x):
    import time

    time.sleep(delay_s)
    return x

  def step(state, batch):
    w = state["w"] - 0.1 * batch["x"].mean() * state["w"]
    w = jax.pure_callback(sleep, jax.ShapeDtypeStruct(w.shape, w.dtype), w)
    return {"w": w}, {"loss": jnp.sum(w)}

  return jax.jit(step, donate_argnums=0, compiler_options=cpu_kernels.compiler_options(kernels))


def test_choose_keeps_the_faster_and_leaves_the_state_as_it_was():
  state, batch = {"w": jnp.arange(4.0)}, {"x": jnp.ones(3)}
  made = {}

  def make(slow: str):
    def make_step(kernels):
      made[kernels] = made.get(kernels, 0) + 1
      return _toy_step(kernels, 0.2 if kernels == slow else 0.0)

    return make_step

  def name(chosen):
    kernels, step = chosen
    assert callable(step)
    return kernels

  assert name(cpu_kernels.choose(make("ynnpack"), state, batch, repeats=2, min_step_s=0)) == "eigen"
  assert name(cpu_kernels.choose(make("eigen"), state, batch, repeats=2, min_step_s=0)) == "ynnpack"
  np.testing.assert_array_equal(state["w"], np.arange(4.0))  # copies were donated, not `state`
  made.clear()
  # A step faster than min_step_s keeps XLA's default without compiling the other.
  assert name(cpu_kernels.choose(make("eigen"), state, batch, min_step_s=10.0)) == "ynnpack"
  assert made == {"ynnpack": 1}
  made.clear()
  # So does a short run, untimed: the step is compiled once, by its first real call.
  assert name(cpu_kernels.choose(make("eigen"), state, batch, run_steps=10, min_step_s=0)) == (
    "ynnpack"
  )
  assert made == {"ynnpack": 1}
