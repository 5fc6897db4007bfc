"""Pretext tasks (jaxmm.tasks) through the real train / predict steps; validation metrics against a
direct count."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from PIL import Image

from jaxmm import config as config_lib
from jaxmm import tasks
from jaxmm.data import pretext as pretext_data
from jaxmm.data.images import cached_images, open_cache
from jaxmm.data.pipeline import PreparedSplit, eval_dataset, iterate, train_dataset
from jaxmm.models import pretext as pretext_models
from jaxmm.models.autoencoder import ConvAutoencoder
from jaxmm.models.resnet import BasicBlock, ResNet
from jaxmm.models.text import LSTMTower
from jaxmm.tasks.autoencoder import save_reconstruction_grid
from jaxmm.train import losses, steps
from jaxmm.train import state as state_lib

VOCAB, T, N, S = 12, 6, 20, 16


def _task(name, **pretext):
  c = config_lib.default_config()
  c.task = name
  c.train.eval_batch_size = 8
  c.data.num_threads = 1
  c.pretext.update(**pretext)
  return tasks.make(c)


def _text_split():
  # Two repeating "sentences": a masked token is predictable from its neighbours.
  rows = [[3, 4, 5, 6, 7, 8], [9, 10, 11, 3, 0, 0]]
  tokens = np.array([rows[i % 2] for i in range(N)], np.int32)
  length = np.array([6 if i % 2 == 0 else 4 for i in range(N)], np.int32)
  return PreparedSplit(
    ids=[str(i) for i in range(N)],
    image_cache=None,
    image_index=None,
    arrays={"tokens": tokens, "length": length},
  )


def test_mlm_trains_and_its_accuracy_is_the_masked_token_hit_rate():
  split = _text_split()
  model = pretext_models.MaskedTokenModel(
    LSTMTower(VOCAB, 8, 8, rngs=nnx.Rngs(0)), VOCAB, rngs=nnx.Rngs(1)
  )
  state = state_lib.from_model(model, optax.adam(0.05))
  task = _task("mlm", mlm_num=1)
  mask_map = task.extra_map(VOCAB)
  train_step = steps.make_train_step(task, seed=0)
  first = last = None
  for epoch in range(8):
    for batch in iterate(
      train_dataset(split, batch_size=10, seed=0, epoch=epoch, extra_map=mask_map), num_threads=1
    ):
      state, m = train_step(state, batch)
      first = float(m["loss"]) if first is None else first
      last = float(m["loss"])
  assert last < 0.5 * first
  predict_step = steps.make_predict_step(state.model_def, task)
  metrics = task.evaluate(predict_step, state.model, split, vocab_size=VOCAB)
  # The same count straight from the model's logits on the same (fixed-seed) eval batches.
  model = state.merged_model()
  model.eval()
  forward = nnx.jit(lambda m, b: m(b))
  hits = count = 0.0
  for batch in iterate(eval_dataset(split, batch_size=8, extra_map=mask_map), num_threads=1):
    h, c = losses.masked_token_hits(
      forward(model, batch), batch["mlm_targets"], batch["mlm_mask"] * batch["mask"][:, None]
    )
    hits, count = hits + float(h.sum()), count + float(c.sum())
  assert count == N  # one masked token per caption, padded rows excluded
  assert metrics["val_mlm_accuracy"] == pytest.approx(hits / count)
  assert metrics["val_mlm_accuracy"] > 0.5 and np.isfinite(metrics["val_loss"])


@pytest.fixture(scope="module")
def image_split(tmp_path_factory):
  d = tmp_path_factory.mktemp("pretext_images")
  rng = np.random.default_rng(0)
  paths = [str(d / f"{i}.png") for i in range(N)]
  for p in paths:
    Image.fromarray(rng.integers(0, 256, (S, S, 3), dtype=np.uint8)).save(p)
  cache, _ = cached_images(paths, S, cache_dir=str(d / "cache"), num_threads=1)
  return PreparedSplit(
    ids=paths,
    image_cache=cache.folder,
    image_index=np.arange(N),
    arrays={"length": np.ones(N, np.int32)},
  )


def _filled(ctor, seed=0):
  graphdef, state = nnx.split(nnx.eval_shape(ctor))
  rng = np.random.default_rng(seed)
  state = jax.tree_util.tree_map_with_path(
    lambda path, s: (
      jnp.ones(s.shape, s.dtype)
      if "'var'" in jax.tree_util.keystr(path)
      else jnp.asarray(0.1 * rng.standard_normal(s.shape), s.dtype)
    ),
    state,
  )
  return graphdef, state


def test_rotation_accuracy_and_autoencoder_mae_and_grid(image_split, tmp_path):
  task = _task("rotation", rotation_angles=pretext_data.RIGHT_ANGLES)
  rot_map = task.extra_map(VOCAB)
  graphdef, state = _filled(
    lambda: pretext_models.RotationClassifier(
      ResNet(stage_sizes=(1,), block=BasicBlock, num_filters=4, stem="small", rngs=nnx.Rngs(0)),
      rot_map.num_classes,
      rngs=nnx.Rngs(0),
    )
  )
  predict = steps.make_predict_step(graphdef, task)
  metrics = task.evaluate(predict, state, image_split, vocab_size=VOCAB)
  hits, losses_ = [], []
  for batch in iterate(eval_dataset(image_split, batch_size=8, extra_map=rot_map), num_threads=1):
    probs, loss = predict(state, batch)
    keep = batch["mask"] > 0
    hits += list((np.argmax(probs, -1) == batch["rotation"])[keep])
    losses_ += list(np.asarray(loss)[keep])
  assert len(hits) == N
  assert metrics["val_rotation_accuracy"] == pytest.approx(np.mean(hits))
  assert metrics["val_loss"] == pytest.approx(np.mean(losses_), rel=1e-5)

  graphdef, state = _filled(
    lambda: pretext_models.ReconstructionModel(ConvAutoencoder((4,), 4, rngs=nnx.Rngs(0)))
  )
  task = _task("autoencoder")
  predict = steps.make_predict_step(graphdef, task)
  metrics, samples = task.evaluate_with_samples(
    predict, state, image_split, vocab_size=VOCAB, num_samples=10
  )
  images = np.asarray(open_cache(image_split.image_cache))
  np.testing.assert_array_equal(samples["image"], images[:10])
  want = np.abs(samples["output"] - images[:10] / 255.0).mean()
  assert metrics["val_mae"] == metrics["val_loss"]
  assert 0.0 < metrics["val_mae"] < 1.0
  # The first 10 examples' mean error is close to, though not the same as, all 20's.
  assert want == pytest.approx(metrics["val_mae"], rel=0.2)
  path = save_reconstruction_grid(
    samples["image"], samples["output"], str(tmp_path / "grid.png"), columns=4
  )
  grid = np.asarray(Image.open(path))
  assert grid.shape == (3 * 2 * S, 4 * S, 3)
  np.testing.assert_array_equal(grid[:S, S : 2 * S], images[1])  # row 0: originals
  np.testing.assert_array_equal(
    grid[S : 2 * S, :S], np.rint(samples["output"][0] * 255).astype(np.uint8)
  )
