"""Pretext-task transforms (S0's self-supervised pretraining) for
`pipeline.train_dataset(extra_map=)`.

* rotation: the image rotated by one of `angles` (S0: -60, -30, 0, 30, 60 degrees, the corners
  filled with `fill`; or 0/90/180/270, exact) and its class index in `rotation` (int32);
* masked tokens: `num` real tokens (or `fraction` of them) replaced by the encoder's mask id
  (`<mask>`, or BERT's [MASK]); `mlm_targets` holds the original ids there and IGNORE_ID
  elsewhere, `mlm_mask` 1.0 there and 0.0 elsewhere, so a loss sees the masked positions only.
  Padding, [CLS] and [SEP] are never masked;
* autoencoder reconstruction needs no transform: its target is the batch's own `image`.

Each is a `grain.transforms.RandomMap`: grain hands it a generator seeded per (seed, epoch, index)
(see `pipeline.train_dataset`), so a pretext batch is as reproducible as an augmented one.
"""

from __future__ import annotations

from collections.abc import Sequence

import grain
import numpy as np
from PIL import Image

from jaxmm.data.text import MASK_ID, SPECIAL_TOKENS

S0_ANGLES: tuple[int, ...] = (-60, -30, 0, 30, 60)
RIGHT_ANGLES: tuple[int, ...] = (0, 90, 180, 270)
IGNORE_ID = -1  # mlm_targets where nothing was masked


def rotate(img_HxWx3: np.ndarray, angle: float, *, fill: int = 0) -> np.ndarray:
  """uint8 image rotated counter-clockwise by `angle` degrees, same shape.

  Multiples of 90 are exact (np.rot90; they need a square image); other angles go through PIL's
  bilinear rotation with the uncovered corners set to `fill` (0..255).
  """
  if angle % 90 == 0:
    if img_HxWx3.shape[0] != img_HxWx3.shape[1] and angle % 180:
      raise ValueError(
        f"rotating a non-square {img_HxWx3.shape[:2]} image by {angle} changes its shape"
      )
    return np.ascontiguousarray(np.rot90(img_HxWx3, k=int(angle // 90) % 4))
  im = Image.fromarray(np.ascontiguousarray(img_HxWx3))
  out = im.rotate(float(angle), resample=Image.BILINEAR, fillcolor=(int(fill),) * 3)
  return np.asarray(out, dtype=np.uint8)


class Rotation(grain.transforms.RandomMap):
  """Adds `rotation` (int32 class index into `angles`) and rotates `image` accordingly."""

  def __init__(self, angles: Sequence[float] = S0_ANGLES, *, fill: int = 0):
    if len(angles) < 2 or len(set(angles)) != len(angles):
      raise ValueError(f"rotation needs >= 2 distinct angles; got {tuple(angles)}")
    self.angles = tuple(angles)
    self.fill = int(fill)

  @property
  def num_classes(self) -> int:
    return len(self.angles)

  def random_map(self, ex, rng: np.random.Generator):
    k = int(rng.integers(len(self.angles)))
    ex = dict(ex)
    ex["image"] = rotate(ex["image"], self.angles[k], fill=self.fill)
    ex["rotation"] = np.int32(k)
    return ex


def mask_tokens(
  tokens_T: np.ndarray,
  length: int,
  rng: np.random.Generator,
  *,
  num: int = 1,
  fraction: float = 0.0,
  random_prob: float = 0.0,
  keep_prob: float = 0.0,
  vocab_size: int | None = None,
  mask_id: int = MASK_ID,
  boundary_ids: Sequence[int] = (),
  first_word_id: int = len(SPECIAL_TOKENS),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """-> (tokens_T with `<mask>`s, mlm_targets_T int32, mlm_mask_T float32).

  Picks `max(1, round(fraction * n))` positions when fraction > 0, else `num`, among the n
  maskable ones: the first `length` (never padding) that hold no `boundary_ids` (BERT's [CLS] /
  [SEP]); at most all of them. Of the picked positions a share `random_prob` gets a random word
  id in [first_word_id, vocab_size) and `keep_prob` keeps its token (BERT's 10%/10%), the rest
  `mask_id` (the encoder's: `<mask>` or [MASK]); all of them are targets.
  """
  length = int(length)
  if not 1 <= length <= len(tokens_T):
    raise ValueError(f"length {length} outside [1, {len(tokens_T)}]")
  positions = np.arange(length)
  if len(boundary_ids):
    positions = positions[~np.isin(np.asarray(tokens_T[:length]), boundary_ids)]
  count = max(1, int(round(fraction * len(positions)))) if fraction > 0 else int(num)
  count = min(count, len(positions))
  picked = positions[rng.choice(len(positions), size=count, replace=False)]
  masked = np.array(tokens_T, dtype=np.int32, copy=True)
  targets = np.full(len(tokens_T), IGNORE_ID, np.int32)
  weights = np.zeros(len(tokens_T), np.float32)
  targets[picked] = masked[picked]
  weights[picked] = 1.0
  u = rng.random(count) if (random_prob or keep_prob) else np.ones(count)
  masked[picked[u >= random_prob + keep_prob]] = mask_id
  swap = picked[u < random_prob]
  if len(swap):
    if vocab_size is None or vocab_size <= first_word_id:
      raise ValueError("random_prob > 0 needs the vocab_size (with at least one word)")
    masked[swap] = rng.integers(first_word_id, vocab_size, size=len(swap))
  return masked, targets, weights


class MaskTokens(grain.transforms.RandomMap):
  """Masks `tokens` (see `mask_tokens`); adds `mlm_targets` (T,) int32 and `mlm_mask` (T,)
  float32."""

  def __init__(
    self,
    *,
    num: int = 1,
    fraction: float = 0.0,
    random_prob: float = 0.0,
    keep_prob: float = 0.0,
    vocab_size: int | None = None,
    mask_id: int = MASK_ID,
    boundary_ids: Sequence[int] = (),
    first_word_id: int = len(SPECIAL_TOKENS),
  ):
    if fraction < 0 or fraction > 1 or (fraction == 0 and num < 1):
      raise ValueError(
        f"mask either num >= 1 tokens or a fraction in (0, 1]; got num={num}, fraction={fraction}"
      )
    if random_prob < 0 or keep_prob < 0 or random_prob + keep_prob > 1:
      raise ValueError(
        f"random_prob + keep_prob must lie in [0, 1]; got {random_prob}, {keep_prob}"
      )
    self.kw = dict(
      num=num,
      fraction=fraction,
      random_prob=random_prob,
      keep_prob=keep_prob,
      vocab_size=vocab_size,
      mask_id=int(mask_id),
      boundary_ids=tuple(int(i) for i in boundary_ids),
      first_word_id=int(first_word_id),
    )

  def random_map(self, ex, rng: np.random.Generator):
    ex = dict(ex)
    ex["tokens"], ex["mlm_targets"], ex["mlm_mask"] = mask_tokens(
      ex["tokens"], int(ex["length"]), rng, **self.kw
    )
    return ex
