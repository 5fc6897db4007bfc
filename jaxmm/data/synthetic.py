"""Synthetic COMP5329-style data (the embedded default data set) and an S0 matching set.

Each of the 18 labels is a coloured shape: six colours (hues far apart) x three shapes (circle,
square, triangle), and a few nouns (see `CLASSES`). Choices, and why:

* Labels: 1-4 per image, 1 (person) on ~76% of images, the others skewed (~1-15%), like the
  course data, so samples-F1 and thresholds behave as they do there.
* Image side is imperfect by design: 55% of objects are drawn clearly, the rest are blurred
  (out of focus) or mostly cut off at the edge. Such an object still shows its colour but not its
  shape, so the image alone narrows it to the three classes of that colour and no further. Grey
  clutter, a textured background, colour jitter and occasional occluders add noise on top.
* Text side is imperfect by design: each present object is named with probability 0.6 (at least
  one per caption), by one of a few synonyms, among filler words; and 15% of captions also name an
  ABSENT object in exactly the same way, which text alone cannot tell from a real mention.
* Fusion resolves most of both: a named object with a blob of its colour is present; a named
  object with no trace is a decoy. What stays ambiguous is a blurred or cut-off object nobody
  names. So image-only and text-only models land clearly below a fused one; the rates above are
  the `Difficulty` knobs. Ceilings (generator metadata) at the defaults: image 0.88, text 0.82,
  fused 0.965 samples-F1; linear models reach 0.76 / 0.82 / 0.91 (benchmarks/RESULTS.md,
"Synthetic demo").

Every example is drawn from its own `random.Random` keyed by (seed, index): the same seed gives
byte-identical files, and an example does not depend on how many others are generated.
"""

from __future__ import annotations

import argparse
import colorsys
import csv
import dataclasses
import math
import os
import pathlib
import random
import re
import sys
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from jaxmm.data import table
from jaxmm.data.comp5329 import LABEL_IDS, LABEL_NAMES, Record, write_comp5329


@dataclasses.dataclass(frozen=True)
class ClassSpec:
  """How one label looks and is named; `weight` is its relative frequency among non-person
  labels."""

  label: int
  colour: str
  shape: str
  nouns: tuple[str, ...]
  weight: float


# Hue in degrees; six hues 55-65 degrees apart so colour jitter never crosses to another colour.
HUES = {"red": 0, "yellow": 55, "green": 120, "cyan": 185, "blue": 235, "magenta": 300}
# Each colour mixes frequent and rare labels, so "which of the three?" is a real question.
CLASSES: tuple[ClassSpec, ...] = (
  ClassSpec(1, "red", "circle", ("person", "man", "woman", "boy", "girl", "child"), 0.0),
  ClassSpec(2, "green", "triangle", ("bicycle", "bike"), 3.0),
  ClassSpec(3, "blue", "square", ("car", "sedan", "taxi"), 7.0),
  ClassSpec(4, "magenta", "triangle", ("motorcycle", "motorbike", "scooter"), 3.0),
  ClassSpec(5, "cyan", "triangle", ("airplane", "plane", "jet"), 2.5),
  ClassSpec(6, "yellow", "square", ("bus", "minibus"), 3.0),
  ClassSpec(7, "magenta", "square", ("train", "locomotive", "tram"), 3.0),
  ClassSpec(8, "green", "square", ("truck", "lorry", "pickup"), 5.0),
  ClassSpec(9, "blue", "triangle", ("boat", "ship", "yacht"), 3.0),
  ClassSpec(10, "yellow", "circle", ("traffic light", "traffic signal", "stoplight"), 4.0),
  ClassSpec(11, "red", "triangle", ("fire hydrant", "hydrant"), 1.2),
  ClassSpec(13, "red", "square", ("stop sign", "octagonal sign"), 1.0),
  ClassSpec(14, "cyan", "square", ("parking meter", "meter"), 0.7),
  ClassSpec(15, "cyan", "circle", ("bench", "seat"), 4.0),
  ClassSpec(16, "blue", "circle", ("bird", "pigeon", "seagull"), 3.0),
  ClassSpec(17, "magenta", "circle", ("cat", "kitten"), 3.0),
  ClassSpec(18, "green", "circle", ("dog", "puppy", "hound"), 3.5),
  ClassSpec(19, "yellow", "triangle", ("horse", "pony", "stallion"), 2.5),
)
SPECS = {c.label: c for c in CLASSES}
assert tuple(sorted(SPECS)) == LABEL_IDS

P_PERSON = 0.76
N_LABELS_P = (0.42, 0.33, 0.17, 0.08)  # P(1..4 labels on an image)
DECOY_PERSON_WEIGHT = 10.0  # person as a decoy about as often as a frequent object


@dataclasses.dataclass(frozen=True)
class Difficulty:
  """The knobs that set how much each modality alone can tell (defaults: the demo data set)."""

  p_clear: float = 0.55  # objects drawn whole and sharp; the rest split evenly: blurred / edge-cut
  p_mention: float = 0.6  # each present object is named with this probability (at least one is)
  p_decoy: float = 0.15  # captions that also name one absent object

  def __post_init__(self):
    for name in ("p_clear", "p_mention", "p_decoy"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"Difficulty.{name}={getattr(self, name)} must lie in [0, 1]")

  def modes(self) -> tuple[tuple[str, float], ...]:
    rest = (1.0 - self.p_clear) / 2
    return (("clear", self.p_clear), ("blur", rest), ("edge", rest))


_ADJS = ("small", "large", "old", "new", "little", "distant", "lonely", "busy")
_PLACES = (
  "in the park",
  "on a busy street",
  "near the beach",
  "at the station",
  "in the city",
  "on the road",
  "in a field",
  "by the river",
  "in the garden",
  "outside a shop",
  "in the yard",
  "near the harbour",
  "downtown",
  "in a quiet lane",
)
_TIMES = (
  "on a sunny day",
  "at night",
  "in the morning",
  "in the rain",
  "at dusk",
  "during the day",
  "in winter",
  "after lunch",
)
_TEMPLATES = (
  "a photo of {L} {P}.",
  "{L} {P}.",
  "there is {L} {P}.",
  "{P}, {L}.",
  "an image showing {L}.",
  "{L} can be seen {P} {T}.",
  "a picture of {L} {T}.",
  "{L} {P} {T}.",
  "maybe {L} {P}.",
  "a blurry shot of {L}.",
  "{L}, {T}.",
)
_JOINERS = (" and ", " with ", " next to ", " near ")


@dataclasses.dataclass(frozen=True)
class SynthExample:
  """One generated example and how it was made (for oracles and tests)."""

  labels: tuple[int, ...]  # sorted
  modes: tuple[str, ...]  # per label: "clear" | "blur" | "edge"
  mentioned: tuple[int, ...]  # present labels the caption names
  decoys: tuple[int, ...]  # absent labels the caption names
  caption: str


def _sample_labels(rng: random.Random) -> tuple[int, ...]:
  n = rng.choices([1, 2, 3, 4], weights=N_LABELS_P)[0]
  labels = [1] if rng.random() < P_PERSON else []
  pool = [c.label for c in CLASSES if c.label != 1]
  while len(labels) < n:
    pick = rng.choices(pool, weights=[SPECS[lab].weight for lab in pool])[0]
    labels.append(pick)
    pool.remove(pick)
  return tuple(sorted(labels))


def _noun_phrase(rng: random.Random, label: int) -> str:
  noun = rng.choice(SPECS[label].nouns)
  if rng.random() < 0.3:
    noun = f"{rng.choice(_ADJS)} {noun}"
  article = rng.choice(("a", "the", "a", "one"))
  if article == "a" and noun[0] in "aeiou":
    article = "an"
  return f"{article} {noun}"


def _caption(
  rng: random.Random, labels: tuple[int, ...], difficulty: Difficulty
) -> tuple[str, tuple[int, ...], tuple[int, ...]]:
  """Returns (caption, present labels named, absent labels named)."""
  mentioned = [lab for lab in labels if rng.random() < difficulty.p_mention] or [rng.choice(labels)]
  decoys: list[int] = []
  if rng.random() < difficulty.p_decoy:
    absent = [c.label for c in CLASSES if c.label not in labels]
    weights = [DECOY_PERSON_WEIGHT if lab == 1 else SPECS[lab].weight for lab in absent]
    decoys.append(rng.choices(absent, weights=weights)[0])
  # Decoys go through the same phrasing and shuffle as real mentions: indistinguishable in text.
  named = mentioned + decoys
  rng.shuffle(named)
  phrases = [_noun_phrase(rng, lab) for lab in named]
  if len(phrases) == 1:
    listed = phrases[0]
  elif len(phrases) == 2:
    listed = phrases[0] + rng.choice(_JOINERS) + phrases[1]
  else:
    listed = ", ".join(phrases[:-1]) + " and " + phrases[-1]
  text = rng.choice(_TEMPLATES).format(L=listed, P=rng.choice(_PLACES), T=rng.choice(_TIMES))
  return text[0].upper() + text[1:], tuple(sorted(mentioned)), tuple(decoys)


_NOUN_RE = [
  (c.label, re.compile(r"\b(?:" + "|".join(re.escape(n) for n in c.nouns) + r")\b"))
  for c in CLASSES
]


def mentioned_labels(caption: str) -> set[int]:
  """Labels whose nouns occur in `caption` (the text-only keyword oracle)."""
  text = caption.lower()
  return {label for label, pattern in _NOUN_RE if pattern.search(text)}


def _texture_tiles(size: int, seed: int, n: int = 16) -> list[Image.Image]:
  """Background textures (smooth blotches + fine grain around 128), made once per seed and size."""
  rng = np.random.default_rng(seed)
  tiles = []
  for _ in range(n):
    coarse = rng.normal(0, 14, (6, 6, 1)) + rng.normal(0, 5, (6, 6, 3))
    coarse_im = Image.fromarray(np.clip(128 + coarse, 0, 255).astype(np.uint8))
    smooth = np.asarray(coarse_im.resize((size, size), Image.BILINEAR), np.float32)
    grain = rng.normal(0, 5, (size, size, 1))
    tiles.append(Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8)))
  return tiles


_TRANSPOSES = (
  None,
  Image.Transpose.FLIP_LEFT_RIGHT,
  Image.Transpose.FLIP_TOP_BOTTOM,
  Image.Transpose.ROTATE_90,
  Image.Transpose.ROTATE_180,
  Image.Transpose.ROTATE_270,
)


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
  if shape == "circle":
    k, r = 20, r * 0.9  # shrink so a circle and a square of the same r cover similar areas
  elif shape == "square":
    k = 4
  else:
    k, r = 3, r * 1.2
  angles = [angle + 2 * math.pi * i / k for i in range(k)]
  return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles]


def _object_colour(rng: random.Random, colour: str) -> tuple[int, int, int]:
  hue = (HUES[colour] + rng.uniform(-8, 8)) % 360 / 360
  r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.65, 1.0), rng.uniform(0.65, 1.0))
  return int(r * 255), int(g * 255), int(b * 255)


def _clutter_colour(rng: random.Random) -> tuple[int, int, int]:
  # Saturation <= 0.15: greys and dull browns that no class colour can be confused with.
  r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0, 0.15), rng.uniform(0.15, 0.9))
  return int(r * 255), int(g * 255), int(b * 255)


def _draw_clutter(rng: random.Random, draw: ImageDraw.ImageDraw, size: int) -> None:
  cx, cy = rng.uniform(0, size), rng.uniform(0, size)
  if rng.random() < 0.4:
    x2, y2 = rng.uniform(0, size), rng.uniform(0, size)
    width = max(1, int(size * rng.uniform(0.02, 0.08)))
    draw.line([(cx, cy), (x2, y2)], fill=_clutter_colour(rng), width=width)
  else:
    shape = rng.choice(("circle", "square", "triangle"))
    r = size * rng.uniform(0.06, 0.2)
    draw.polygon(_polygon(shape, cx, cy, r, rng.uniform(0, 2 * math.pi)), fill=_clutter_colour(rng))


def _draw_blurred(
  im: Image.Image, polygon: list[tuple[float, float]], r: float, colour: tuple[int, int, int]
) -> None:
  """An out-of-focus object: a soft blob of its colour whose outline (the shape) is lost."""
  mask = Image.new("L", im.size, 0)
  ImageDraw.Draw(mask).polygon(polygon, fill=255)
  # Blur wider than the shape's corners, then re-boost so the blob's core keeps full colour.
  mask = mask.filter(ImageFilter.GaussianBlur(0.7 * r)).point(lambda v: min(255, 2 * v))
  im.paste(colour, (0, 0), mask)


def _render(
  rng: random.Random,
  labels: tuple[int, ...],
  modes: tuple[str, ...],
  size: int,
  tiles: list[Image.Image],
) -> Image.Image:
  base = rng.uniform(60, 180)
  tint = tuple(int(base + rng.uniform(-15, 15)) for _ in range(3))
  tile = tiles[rng.randrange(len(tiles))]
  transpose = rng.choice(_TRANSPOSES)
  if transpose is not None:
    tile = tile.transpose(transpose)
  im = ImageChops.add(Image.new("RGB", (size, size), tint), tile, 1.0, -128)
  draw = ImageDraw.Draw(im)
  for _ in range(rng.randint(0, 2)):
    _draw_clutter(rng, draw, size)
  order = list(zip(labels, modes))
  rng.shuffle(order)
  for label, mode in order:
    spec = SPECS[label]
    if mode == "blur":
      r = size * rng.uniform(0.08, 0.13)
      cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
      _draw_blurred(
        im,
        _polygon(spec.shape, cx, cy, r, rng.uniform(0, 2 * math.pi)),
        r,
        _object_colour(rng, spec.colour),
      )
      continue
    r = size * rng.uniform(0.11, 0.19)
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    if mode == "edge":  # only a 10-30% slice of the object's width stays in the frame
      depth = rng.uniform(0.10, 0.30) * 2 * r
      pos = depth - r if rng.random() < 0.5 else size + r - depth
      if rng.random() < 0.5:
        cx = pos
      else:
        cy = pos
    draw.polygon(
      _polygon(spec.shape, cx, cy, r, rng.uniform(0, 2 * math.pi)),
      fill=_object_colour(rng, spec.colour),
    )
  if rng.random() < 0.2:  # an occluder on top of the objects
    _draw_clutter(rng, draw, size)
  return im


def synth_examples(
  n: int,
  *,
  image_size: int = 64,
  seed: int = 0,
  start: int = 0,
  difficulty: Difficulty | None = None,
) -> Iterator[tuple[SynthExample, Image.Image]]:
  """Yields examples `start .. start+n-1` of the seed's stream, with their PIL images."""
  difficulty = difficulty or Difficulty()
  tiles = _texture_tiles(image_size, seed)
  mode_names, mode_weights = zip(*difficulty.modes())
  for index in range(start, start + n):
    # A string seed is hashed with SHA-512 by `random`: stable across runs and PYTHONHASHSEED.
    rng = random.Random(f"jaxmm-synthetic:{seed}:{index}")
    labels = _sample_labels(rng)
    modes = tuple(rng.choices(mode_names, weights=mode_weights, k=len(labels)))
    caption, mentioned, decoys = _caption(rng, labels, difficulty)
    image = _render(rng, labels, modes, image_size, tiles)
    yield SynthExample(labels, modes, mentioned, decoys, caption), image


def _save_jpeg(image: Image.Image, path: pathlib.Path) -> None:
  # 4:4:4 chroma keeps the colour of small and blurred objects, the cue the data set is built on.
  image.save(path, "JPEG", quality=92, subsampling=0)


def _readme(
  task: str, seed: int, image_size: int, counts: dict[str, int], d: Difficulty, extra: str = ""
) -> str:
  lines = [
    f"jaxmm synthetic data ({task}), made by jaxmm.data.synthetic",
    f"seed={seed} image_size={image_size} " + " ".join(f"{k}={v}" for k, v in counts.items()),
    f"difficulty: p_clear={d.p_clear} p_mention={d.p_mention} p_decoy={d.p_decoy}",
    f"Regenerate: python -m jaxmm.data.synthetic --root DIR --task {task} --seed {seed} "
    f"--image_size {image_size} --p_clear {d.p_clear} --p_mention {d.p_mention} "
    f"--p_decoy {d.p_decoy}{extra}",
    "",
    "Each label is a coloured shape named by a few nouns:",
  ]
  lines += [f"  {c.label:2d}  {c.colour:7s} {c.shape:8s} {', '.join(c.nouns)}" for c in CLASSES]
  lines += [
    "",
    f"Labels per image 1-4 (P={N_LABELS_P}); label 1 on ~{P_PERSON:.0%} of images.",
    "Objects drawn: "
    + ", ".join(f"{m} {p:.1%}" for m, p in d.modes())
    + " (blurred and edge-cut objects show their colour, not their shape).",
    f"Captions name each present object with p={d.p_mention} (at least one) and an absent "
    f"one in {d.p_decoy:.0%} of captions.",
    "",
  ]
  return "\n".join(lines)


def make_comp5329_synthetic(
  root: str | pathlib.Path,
  *,
  n_train: int = 5000,
  n_test: int = 500,
  image_size: int = 64,
  seed: int = 0,
  difficulty: Difficulty | None = None,
) -> pathlib.Path:
  """Writes train.csv (labelled), test.csv (unlabelled) and data/<i>.jpg under `root`."""
  root = pathlib.Path(root)
  difficulty = difficulty or Difficulty()
  (root / "data").mkdir(parents=True, exist_ok=True)
  train: list[Record] = []
  test: list[Record] = []
  stream = synth_examples(n_train + n_test, image_size=image_size, seed=seed, difficulty=difficulty)
  for i, (ex, image) in enumerate(stream):
    image_id = f"{i}.jpg"
    _save_jpeg(image, root / "data" / image_id)
    (train if i < n_train else test).append(Record(image_id, ex.labels, ex.caption))
  write_comp5329(root / "train.csv", train, labelled=True)
  write_comp5329(root / "test.csv", test, labelled=False)
  counts = {"n_train": n_train, "n_test": n_test}
  (root / "README.txt").write_text(
    _readme("comp5329", seed, image_size, counts, difficulty), encoding="utf-8"
  )
  return root


def make_table_synthetic(
  root: str | pathlib.Path,
  *,
  n_train: int = 5000,
  n_test: int = 500,
  image_size: int = 64,
  seed: int = 0,
  difficulty: Difficulty | None = None,
  fmt: str = "jsonl",
) -> pathlib.Path:
  """The examples of `make_comp5329_synthetic` in the plain table layout: train.<fmt> (image, text,
  labels: COCO names joined by '|'), test.<fmt> (image, text) and images/<i>.jpg."""
  if fmt not in ("jsonl", "csv"):
    raise ValueError(f"fmt={fmt!r}: 'jsonl' or 'csv'")
  root = pathlib.Path(root)
  difficulty = difficulty or Difficulty()
  (root / "images").mkdir(parents=True, exist_ok=True)
  rows: dict[str, list[dict]] = {"train": [], "test": []}
  stream = synth_examples(n_train + n_test, image_size=image_size, seed=seed, difficulty=difficulty)
  for i, (ex, image) in enumerate(stream):
    _save_jpeg(image, root / "images" / f"{i}.jpg")
    row = {"image": f"images/{i}.jpg", "text": ex.caption}
    if i < n_train:
      row["labels"] = "|".join(LABEL_NAMES[label] for label in ex.labels)
    rows["train" if i < n_train else "test"].append(row)
  table.write_table(root / f"train.{fmt}", rows["train"], ("image", "text", "labels"))
  table.write_table(root / f"test.{fmt}", rows["test"], ("image", "text"))
  counts = {"n_train": n_train, "n_test": n_test}
  (root / "README.txt").write_text(
    _readme("table", seed, image_size, counts, difficulty, extra=f" --format {fmt}"),
    encoding="utf-8",
  )
  return root


def make_matching_synthetic(
  root: str | pathlib.Path,
  *,
  n_train: int = 2000,
  n_val: int = 400,
  image_size: int = 64,
  seed: int = 0,
  difficulty: Difficulty | None = None,
) -> pathlib.Path:
  """Writes the S0 matching layout: {train,val}.csv (id,caption,image_id,label) + *_images/."""
  root = pathlib.Path(root)
  difficulty = difficulty or Difficulty()
  stream = synth_examples(n_train + n_val, image_size=image_size, seed=seed, difficulty=difficulty)
  next_id = 0
  for split, n in (("train", n_train), ("val", n_val)):
    image_dir = root / f"{split}_images"
    image_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for _ in range(n):
      ex, image = next(stream)
      image_id = str(next_id)
      next_id += 1
      _save_jpeg(image, image_dir / f"{image_id}.jpg")
      items.append((image_id, ex))
    rng = random.Random(f"jaxmm-matching:{seed}:{split}")
    rows = []
    for row_id, (image_id, ex) in enumerate(items):
      caption, label = ex.caption, 1
      if rng.random() < 0.5 and n > 1:
        # Another image's caption that names something this image lacks, so the pair is a
        # real mismatch; give up after a few tries (tiny splits) and keep the true caption.
        for _ in range(50):
          other = items[rng.randrange(n)][1]
          if not set(other.mentioned + other.decoys) <= set(ex.labels):
            caption, label = other.caption, 0
            break
      rows.append((row_id, caption, image_id, label))
    with open(root / f"{split}.csv", "w", encoding="utf-8", newline="") as f:
      writer = csv.writer(f, lineterminator="\n")
      writer.writerow(("id", "caption", "image_id", "label"))
      writer.writerows(rows)
  counts = {"n_train": n_train, "n_val": n_val}
  (root / "README.txt").write_text(
    _readme("matching", seed, image_size, counts, difficulty), encoding="utf-8"
  )
  return root


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(
    prog="python -m jaxmm.data.synthetic", description=__doc__.split("\n")[0]
  )
  d = Difficulty()
  p.add_argument("--root", required=True, help="output folder (created if missing)")
  p.add_argument(
    "--task",
    choices=("comp5329", "matching", "table"),
    default="comp5329",
    help="table: the comp5329 examples as a table (train.jsonl, label names)",
  )
  p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="--task table only")
  p.add_argument(
    "--n_train", type=int, default=None, help="default 5000 (comp5329) / 2000 (matching)"
  )
  p.add_argument("--n_test", type=int, default=500, help="comp5329 test examples")
  p.add_argument("--n_val", type=int, default=400, help="matching validation pairs")
  p.add_argument("--image_size", type=int, default=64)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--p_clear", type=float, default=d.p_clear, help="share of objects drawn whole")
  p.add_argument("--p_mention", type=float, default=d.p_mention, help="P(caption names an object)")
  p.add_argument("--p_decoy", type=float, default=d.p_decoy, help="P(caption names an absent one)")
  a = p.parse_args(argv)
  for name in ("p_clear", "p_mention", "p_decoy"):
    if not 0.0 <= getattr(a, name) <= 1.0:
      p.error(f"--{name}={getattr(a, name)}: a probability, between 0 and 1")
  if a.image_size < 8:
    p.error(f"--image_size={a.image_size}: the objects need at least 8 pixels a side")
  if a.n_train is not None and a.n_train < 1:
    p.error(f"--n_train={a.n_train}: a count of examples, at least 1")
  for name in ("n_test", "n_val"):
    if getattr(a, name) < 0:
      p.error(f"--{name}={getattr(a, name)}: a count of examples, at least 0")
  if os.path.exists(a.root) and not os.path.isdir(a.root):
    p.error(f"--root={a.root} is a file: pass a folder")
  difficulty = Difficulty(a.p_clear, a.p_mention, a.p_decoy)
  common = dict(image_size=a.image_size, seed=a.seed, difficulty=difficulty)
  if a.task == "comp5329":
    out = make_comp5329_synthetic(
      a.root, n_train=5000 if a.n_train is None else a.n_train, n_test=a.n_test, **common
    )
  elif a.task == "table":
    out = make_table_synthetic(
      a.root,
      n_train=5000 if a.n_train is None else a.n_train,
      n_test=a.n_test,
      fmt=a.format,
      **common,
    )
  else:
    out = make_matching_synthetic(
      a.root, n_train=2000 if a.n_train is None else a.n_train, n_val=a.n_val, **common
    )
  print(f"wrote synthetic {a.task} data to {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
