"""Pretext transforms: rotation labels and directions, masking never on padding, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jaxmm.data import pretext
from jaxmm.data.images import cached_images, open_cache
from jaxmm.data.pipeline import PreparedSplit, eval_dataset, iterate, train_dataset
from jaxmm.data.text import MASK_ID, PAD_ID

N, S, T = 24, 16, 10


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> PreparedSplit:
  d = tmp_path_factory.mktemp("pretext")
  rng = np.random.default_rng(0)
  paths = []
  for i in range(N):
    paths.append(str(d / f"{i}.png"))
    Image.fromarray(rng.integers(1, 255, (S, S, 3), dtype=np.uint8)).save(paths[-1])
  cache, ok = cached_images(paths, S, cache_dir=str(d / "cache"), num_threads=1)
  length = (np.arange(N) % T + 1).astype(np.int32)
  tokens = np.where(
    np.arange(T)[None] < length[:, None], rng.integers(3, 50, (N, T)), PAD_ID
  ).astype(np.int32)
  return PreparedSplit(
    ids=[str(i) for i in range(N)],
    image_cache=cache.folder,
    image_index=np.arange(N),
    arrays={"tokens": tokens, "length": length},
  )


def _blob(y, x, size=S):
  img = np.zeros((size, size, 3), np.uint8)
  img[y - 1 : y + 2, x - 1 : x + 2] = 255
  return img


def _centre_of_mass(img):
  ys, xs = np.nonzero(img[..., 0].astype(float) > 60)
  return ys.mean(), xs.mean()


def test_rotate_is_counter_clockwise_and_fills_corners():
  c = (S - 1) / 2  # PIL rotates about the image centre
  img = _blob(int(c + 0.5), int(c + 0.5) + 5)  # 5 px right of the centre
  for angle in (30, 60, -60, 90, 270):
    y, x = _centre_of_mass(pretext.rotate(img, angle))
    y0, x0 = _centre_of_mass(img)
    r = np.radians(angle)  # counter-clockwise on screen: up (smaller y) for positive angles
    assert y == pytest.approx(c - (x0 - c) * np.sin(r) + (y0 - c) * np.cos(r), abs=0.6)
    assert x == pytest.approx(c + (x0 - c) * np.cos(r) + (y0 - c) * np.sin(r), abs=0.6)
  full = np.full((S, S, 3), 200, np.uint8)
  turned = pretext.rotate(full, 30, fill=7)
  assert turned.shape == full.shape and turned.dtype == np.uint8
  assert (turned[0, 0] == 7).all() and (turned[S // 2, S // 2] == 200).all()
  np.testing.assert_array_equal(pretext.rotate(full, 0), full)
  np.testing.assert_array_equal(pretext.rotate(img, 180), img[::-1, ::-1])


@pytest.mark.parametrize("angles", [pretext.S0_ANGLES, pretext.RIGHT_ANGLES])
def test_rotation_label_names_the_applied_angle(split, angles):
  rot = pretext.Rotation(angles, fill=0)
  originals = np.asarray(open_cache(split.image_cache))
  seen = set()
  ds = train_dataset(split, batch_size=8, seed=0, epoch=0, extra_map=rot)
  for batch in iterate(ds, num_threads=1):
    assert batch["rotation"].dtype == np.int32
    for img, k, i in zip(batch["image"], batch["rotation"], batch["index"]):
      matches = [
        j for j, a in enumerate(angles) if np.array_equal(pretext.rotate(originals[i], a), img)
      ]
      assert matches == [k]
      seen.add(int(k))
  assert len(seen) >= len(angles) - 1  # 24 draws over <= 5 classes


def _batches(split, extra_map, seed, epoch=0):
  return list(
    iterate(
      train_dataset(split, batch_size=8, seed=seed, epoch=epoch, extra_map=extra_map), num_threads=1
    )
  )


@pytest.mark.parametrize("make", [lambda: pretext.Rotation(), lambda: pretext.MaskTokens(num=2)])
def test_deterministic_per_seed_and_epoch(split, make):
  key = "rotation" if isinstance(make(), pretext.Rotation) else "mlm_mask"
  a, b = _batches(split, make(), 0), _batches(split, make(), 0)
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])

  def by_index(batches):
    return {int(i): v.tobytes() for bt in batches for i, v in zip(bt["index"], bt[key])}

  base = by_index(a)
  assert by_index(_batches(split, make(), 1)) != base  # another seed
  assert by_index(_batches(split, make(), 0, epoch=1)) != base  # another epoch
  evals = [
    list(iterate(eval_dataset(split, batch_size=8, extra_map=make()), num_threads=1))
    for _ in range(2)
  ]
  for x, y in zip(*evals):
    np.testing.assert_array_equal(x[key], y[key])


def _check_masking(tokens, length, masked, targets, weights):
  real = np.arange(len(tokens)) < length
  picked = weights > 0
  assert not (picked & ~real).any()  # never padding
  np.testing.assert_array_equal(masked[~real], tokens[~real])
  np.testing.assert_array_equal(targets[picked], tokens[picked])
  assert (targets[~picked] == pretext.IGNORE_ID).all()
  np.testing.assert_array_equal(masked[~picked], tokens[~picked])
  return picked


def test_mask_one_token_or_a_fraction(split):
  rng = np.random.default_rng(0)
  for tokens, length in zip(split.arrays["tokens"], split.arrays["length"]):
    masked, targets, weights = pretext.mask_tokens(tokens, length, rng)
    picked = _check_masking(tokens, length, masked, targets, weights)
    assert picked.sum() == 1 and (masked[picked] == MASK_ID).all()
    masked, targets, weights = pretext.mask_tokens(tokens, length, rng, fraction=0.3)
    picked = _check_masking(tokens, length, masked, targets, weights)
    assert picked.sum() == max(1, round(0.3 * length)) and (masked[picked] == MASK_ID).all()
    _, _, weights = pretext.mask_tokens(tokens, length, rng, num=50)
    assert weights.sum() == length  # capped at the real tokens


def test_mask_positions_spread_over_the_caption():
  tokens = np.arange(3, 3 + T, dtype=np.int32)
  rng = np.random.default_rng(0)
  counts = sum(pretext.mask_tokens(tokens, T, rng)[2] for _ in range(500))
  assert counts.min() > 20  # every position gets masked sometimes (uniform: ~50 each)


def test_bert_style_random_and_kept_tokens():
  tokens = np.arange(3, 3 + T, dtype=np.int32)
  rng = np.random.default_rng(0)
  kept = pretext.mask_tokens(tokens, T, rng, num=T, keep_prob=1.0)
  np.testing.assert_array_equal(kept[0], tokens)
  np.testing.assert_array_equal(kept[1], tokens)  # still targets
  swapped, targets, _ = pretext.mask_tokens(tokens, T, rng, num=T, random_prob=1.0, vocab_size=20)
  assert ((swapped >= 3) & (swapped < 20)).all() and (targets == tokens).all()
  with pytest.raises(ValueError, match="vocab_size"):
    pretext.mask_tokens(tokens, T, rng, random_prob=1.0)


def test_mask_tokens_on_batches(split):
  mlm = pretext.MaskTokens(fraction=0.5)
  for batch in _batches(split, mlm, 0):
    assert batch["mlm_targets"].dtype == np.int32 and batch["mlm_mask"].dtype == np.float32
    originals = split.arrays["tokens"][batch["index"]]
    for row in range(len(batch["index"])):
      _check_masking(
        originals[row],
        batch["length"][row],
        batch["tokens"][row],
        batch["mlm_targets"][row],
        batch["mlm_mask"][row],
      )
  assert pretext.Rotation(pretext.RIGHT_ANGLES).num_classes == 4
