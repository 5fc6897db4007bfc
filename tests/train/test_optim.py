"""Optimizer factory: schedules, clipping, weight decay, freezing, lr_scale, plateau, early stop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from jaxmm import config as config_lib
from jaxmm.train import optim


def _cfg(**kw) -> ml_collections.ConfigDict:
  base = config_lib.default_config().optim.to_dict()
  base.update(name="sgd", lr=1.0, schedule="constant", warmup_epochs=0.0)
  base.update(kw)
  return ml_collections.ConfigDict(base)


def _lrs(cfg, steps, *, steps_per_epoch=10, total_steps=110):
  sched = optim.make_schedule(cfg, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
  return [float(sched(s)) for s in steps]


def test_constant_and_cosine():
  np.testing.assert_allclose(_lrs(_cfg(lr=0.3), [0, 50, 110]), [0.3] * 3, rtol=1e-6)
  lrs = _lrs(_cfg(schedule="cosine", min_lr_ratio=0.1), [0, 50, 100], total_steps=100)
  np.testing.assert_allclose(lrs, [1.0, 0.55, 0.1], rtol=1e-5)


def test_warmup_cosine():
  cfg = _cfg(schedule="warmup_cosine", warmup_steps=10)
  # 0 at start, peak at the end of warmup, half way down the cosine at 10 + 100 / 2, 0 at the end.
  np.testing.assert_allclose(_lrs(cfg, [0, 5, 10, 60, 110]), [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)
  by_epochs = _cfg(schedule="warmup_cosine", warmup_epochs=1.0)  # 1 epoch = 10 steps here
  np.testing.assert_allclose(_lrs(by_epochs, [0, 5, 10, 60, 110]), _lrs(cfg, [0, 5, 10, 60, 110]))
  cfg = _cfg(schedule="warmup_cosine", warmup_steps=10, min_lr_ratio=0.2, warmup_init_ratio=0.1)
  np.testing.assert_allclose(_lrs(cfg, [0, 10, 110]), [0.1, 1.0, 0.2], atol=1e-6)


def test_step_decay_at_epoch_boundaries():
  lrs = _lrs(_cfg(schedule="step", step_gamma=0.95), [0, 9, 10, 19, 20, 35])
  np.testing.assert_allclose(lrs, [1, 1, 0.95, 0.95, 0.95**2, 0.95**3], rtol=1e-6)
  lrs = _lrs(_cfg(schedule="step", step_gamma=0.5, step_epochs=2), [0, 10, 19, 20, 40])
  np.testing.assert_allclose(lrs, [1, 1, 1, 0.5, 0.25], rtol=1e-6)
  lrs = _lrs(_cfg(schedule="step", step_gamma=0.5, min_lr_ratio=0.3), [0, 10, 20, 100])
  np.testing.assert_allclose(lrs, [1, 0.5, 0.3, 0.3], rtol=1e-6)


def test_bad_config_raises():
  with pytest.raises(ValueError, match="schedule"):
    _lrs(_cfg(schedule="linear"), [0])
  with pytest.raises(ValueError, match="warmup"):
    _lrs(_cfg(warmup_steps=500), [0])
  with pytest.raises(ValueError, match="optimizer"):
    optim.make_optimizer(_cfg(name="lion"), steps_per_epoch=1, total_steps=1).init({})


def _one_update(cfg, grads, params):
  tx = optim.make_optimizer(cfg, steps_per_epoch=10, total_steps=100)
  updates, _ = tx.update(grads, tx.init(params), params)
  return updates


def test_clipping_applies():
  params = {"a": jnp.zeros(2)}
  grads = {"a": jnp.array([3.0, 4.0])}
  np.testing.assert_allclose(_one_update(_cfg(), grads, params)["a"], [-3, -4], rtol=1e-6)
  clipped = _one_update(_cfg(clip_norm=1.0), grads, params)["a"]
  np.testing.assert_allclose(clipped, [-0.6, -0.8], rtol=1e-6)


def test_coupled_l2_vs_decoupled_weight_decay():
  params = {"a": jnp.ones(1)}
  grads = {"a": jnp.zeros(1)}
  # A coupled L2 term enters the gradient, so Adam normalises it to a full lr step.
  coupled = _one_update(_cfg(name="adam", lr=0.1, l2=0.01), grads, params)["a"]
  np.testing.assert_allclose(coupled, [-0.1], rtol=1e-4)
  # Decoupled decay shrinks the weights directly: lr * wd * w, for 'adam' and 'adamw' alike:
  # switching the optimizer's name does not change what weight_decay means.
  for name in ("adam", "adamw"):
    decoupled = _one_update(_cfg(name=name, lr=0.1, weight_decay=0.01), grads, params)["a"]
    np.testing.assert_allclose(decoupled, [-0.001], rtol=1e-4)
  # SGD: the same two meanings (no normalisation, so the coupled step is lr * l2 * w here).
  sgd = _one_update(_cfg(name="sgd", lr=0.1, l2=0.01), grads, params)["a"]
  np.testing.assert_allclose(sgd, [-0.001], rtol=1e-4)


def test_adam_matches_optax_adamw():
  params = {"a": jnp.array([1.0, -2.0])}
  grads = {"a": jnp.array([0.3, 0.1])}
  got = _one_update(_cfg(name="adam", lr=0.1, weight_decay=0.01), grads, params)["a"]
  want, _ = optax.adamw(0.1, weight_decay=0.01).update(
    grads, optax.adamw(0.1, weight_decay=0.01).init(params), params
  )
  np.testing.assert_allclose(got, want["a"], rtol=1e-6)


class _Text(nnx.Module):
  def __init__(self, *, rngs: nnx.Rngs):
    self.embed = nnx.Embed(5, 3, rngs=rngs)
    self.proj = nnx.Linear(3, 2, rngs=rngs)


class _Tiny(nnx.Module):
  def __init__(self, *, rngs: nnx.Rngs):
    self.image = nnx.Linear(4, 2, rngs=rngs)
    self.text = _Text(rngs=rngs)

  def __call__(self, x_BxF, tokens_BxT):
    return self.image(x_BxF) + self.text.proj(self.text.embed(tokens_BxT).mean(axis=1))


def _loss(model, x_BxF, tokens_BxT):
  return jnp.mean(model(x_BxF, tokens_BxT) ** 2)


@nnx.jit
def _train_step(model, optimizer, x_BxF, tokens_BxT):
  grads = nnx.grad(_loss)(model, x_BxF, tokens_BxT)
  optimizer.update(model, grads)


def _batch():
  return jnp.ones((3, 4)), jnp.array([[1, 2], [3, 4], [0, 1]])


def _param_delta(cfg, *, scale=None, steps=1):
  model = _Tiny(rngs=nnx.Rngs(0))
  before = jax.tree.map(jnp.copy, nnx.as_pure(nnx.state(model, nnx.Param)))
  tx = optim.make_optimizer(
    cfg, steps_per_epoch=10, total_steps=100, params=nnx.state(model, nnx.Param)
  )
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  if scale is not None:
    optim.set_lr_scale(optimizer, scale)
  for _ in range(steps):
    _train_step(model, optimizer, *_batch())
  after = nnx.as_pure(nnx.state(model, nnx.Param))
  deltas = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), after, before)
  return dict(zip(optim.param_paths(deltas), jax.tree.leaves(deltas)))


def test_param_paths_and_labels():
  params = nnx.state(_Tiny(rngs=nnx.Rngs(0)), nnx.Param)
  assert optim.param_paths(params) == [
    "image.bias",
    "image.kernel",
    "text.embed.embedding",
    "text.proj.bias",
    "text.proj.kernel",
  ]
  labels = optim.param_labels(params, ("text.embed",))
  assert jax.tree.leaves(labels) == ["trainable", "trainable", "frozen", "trainable", "trainable"]
  with pytest.raises(ValueError, match="match no parameter"):
    optim.param_labels(params, ("text.emb",))  # whole components only: a typo is loud


@pytest.mark.parametrize(
  "freeze,frozen",
  [
    (("image",), {"image.bias", "image.kernel"}),
    (("text.embed",), {"text.embed.embedding"}),
  ],
)
def test_freeze_leaves_frozen_params_unchanged(freeze, frozen):
  # adamw + weight decay + clipping: nothing may leak into frozen parameters.
  cfg = _cfg(name="adamw", lr=0.1, weight_decay=0.1, clip_norm=0.5, freeze=freeze)
  deltas = _param_delta(cfg, steps=2)
  for path, delta in deltas.items():
    if path in frozen:
      assert delta == 0.0, path
    else:
      assert delta > 0.0, path


def test_set_lr_scale_halves_the_update():
  cfg = _cfg(name="sgd", lr=0.1)
  full = _param_delta(cfg)
  half = _param_delta(cfg, scale=0.5)
  for path in full:
    assert half[path] == pytest.approx(0.5 * full[path], rel=1e-5), path


def test_lr_scale_on_pure_state_and_no_retrace():
  cfg = _cfg(name="adam", lr=0.1, schedule="step", step_gamma=0.5)
  tx = optim.make_optimizer(cfg, steps_per_epoch=1, total_steps=10)
  params = {"w": jnp.ones(2)}
  state = tx.init(params)
  assert optim.get_lr_scale(state) == 1.0
  new_state = optim.set_lr_scale(state, 0.25)
  assert optim.get_lr_scale(new_state) == 0.25 and optim.get_lr_scale(state) == 1.0
  traces = []

  @jax.jit
  def step(state):
    traces.append(1)
    return tx.update({"w": jnp.ones(2)}, state, params)

  up_full, state1 = step(state)
  up_quarter, _ = step(new_state)
  np.testing.assert_allclose(up_quarter["w"], 0.25 * up_full["w"], rtol=1e-6)
  assert len(traces) == 1  # lr_scale is state, not a static argument
  assert optim.current_lr(
    optim.make_schedule(cfg, steps_per_epoch=1, total_steps=10), 2, new_state
  ) == pytest.approx(0.25 * 0.1 * 0.25)
  assert optim.get_lr_scale(state1) == 1.0


def test_reduce_on_plateau_sequence_and_state():
  rop = optim.ReduceOnPlateau(factor=0.5, patience=2, mode="max", min_scale=0.2)
  metrics = [0.5, 0.6, 0.6, 0.55, 0.6, 0.7, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
  # Reduces on the 3rd epoch without improvement (patience 2, as torch), then restarts counting.
  expected = [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.2]
  got = [rop.update(m) for m in metrics[:6]]
  restored = optim.ReduceOnPlateau(factor=0.5, patience=2, mode="max", min_scale=0.2)
  restored.load_state_dict(rop.state_dict())
  got += [restored.update(m) for m in metrics[6:]]
  assert got == pytest.approx(expected)
  rop_min = optim.ReduceOnPlateau(factor=0.1, patience=0, mode="min")
  assert [rop_min.update(m) for m in [1.0, 0.5, 0.7]] == pytest.approx([1, 1, 0.1])


def test_early_stopping_sequence_and_state():
  es = optim.EarlyStopping(patience=3, mode="max")
  improved, stops = [], []
  for m in [0.1, 0.3, 0.2, float("nan"), 0.3]:  # nan never improves; equal is not better
    improved.append(es.update(m))
    stops.append(es.should_stop)
  assert improved == [True, True, False, False, False]
  assert stops == [False, False, False, False, True]
  assert es.best == 0.3 and es.best_epoch == 1
  restored = optim.EarlyStopping(patience=3)
  restored.load_state_dict(es.state_dict())
  assert restored.should_stop and restored.best_epoch == 1
  assert restored.update(0.5) and not restored.should_stop and restored.best_epoch == 5
  es_min = optim.EarlyStopping(patience=1, mode="min", min_delta=0.1)
  assert [es_min.update(m) for m in [1.0, 0.95]] == [True, False] and es_min.should_stop
  assert not optim.EarlyStopping(patience=0).should_stop


def test_lr_scale_on_split_optimizer_state():
  # The loop keeps nnx.split(optimizer) state between jitted steps and sets lr_scale on it.
  model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
  tx = optim.make_optimizer(_cfg(lr=0.1), steps_per_epoch=1, total_steps=10)
  graphdef, state = nnx.split(nnx.Optimizer(model, tx, wrt=nnx.Param))
  state = jax.jit(lambda s: nnx.split(nnx.merge(graphdef, s))[1])(state)
  state = optim.set_lr_scale(state, 0.5)
  assert optim.get_lr_scale(nnx.merge(graphdef, state)) == 0.5
  with pytest.raises(ValueError, match="lr_scale"):
    optim.get_lr_scale({"count": jnp.zeros(())})


def test_l2_dominance_warning():
  assert optim.l2_dominance_warning(0.0, 100.0, 1e-6) is None
  assert optim.l2_dominance_warning(1e-4, 10.0, 1e-2) is None  # 1e-3 vs 1e-2: the loss leads
  msg = optim.l2_dominance_warning(1e-4, 100.0, 1e-4)  # 1e-2 vs 1e-4: the L2 term leads
  assert "100x" in msg and "optim.weight_decay" in msg
