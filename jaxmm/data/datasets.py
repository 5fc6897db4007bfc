"""From a dataset folder to PreparedSplits: read records, split, fit/load the text encoder, store
images.

Everything that can be wrong with the input is found here, before the first train step: unreadable
CSV rows, empty captions, missing or undecodable images, labels outside the run's label set.
A folder is in COMP5329's layout, S0's matching layout or the plain table layout (jaxmm/data/
table.py tells which); `prepare_multilabel` and `prepare_pairs` read any layout of their task.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence

import numpy as np

from jaxmm.data import comp5329, encoders, table
from jaxmm.data import images as images_lib
from jaxmm.data import labels as labels_lib
from jaxmm.data.labels import LabelSet
from jaxmm.data.pipeline import PreparedSplit
from jaxmm.data.text import TextEncoder
from jaxmm.workdir import LABELS_FILE, SKIPPED_FILE

log = logging.getLogger("jaxmm")


@dataclasses.dataclass
class PreparedData:
  train: PreparedSplit | None
  val: PreparedSplit | None
  encoder: TextEncoder
  skipped: list[dict]
  train_captions: list[str] | None = None  # raw, for word vectors trained on them
  labels: LabelSet | None = None  # multi-label data: the label set, in head order


def check_root(root: str) -> None:
  if not root:
    raise FileNotFoundError(
      "data.root is not set: pass --config.data.root=DIR, a folder with train.jsonl or train.csv "
      "(columns image, text, labels) and the images they name"
    )
  if not os.path.isdir(root):
    raise FileNotFoundError(
      f"data.root {root!r} does not exist. Point --config.data.root at a dataset folder "
      "(train.csv + data/), or make the synthetic one: python -m jaxmm.data.synthetic --root DIR"
    )


def text_encoder_for(
  cfg_data, workdir: str | None, train_captions: Sequence[str], text_cfg=None
) -> TextEncoder:
  """Loads the workdir's vocab.json (so resume/evaluate/predict reuse it) or fits one on train:
  word-level, or WordPiece for a BERT text tower `text_cfg` (model.text; jaxmm.data.encoders)."""
  return encoders.text_encoder_for(cfg_data, text_cfg, workdir, train_captions)


def _check_nonempty(records: Sequence, csv_path: str, what: str = "records") -> None:
  if not records:
    raise comp5329.CsvFormatError(
      f"{csv_path}: no {what}: the file holds only its header. Check that data.root and the "
      "CSV name point at the full file, and that a copy or export was not cut short."
    )


def _check_captions(
  records: Sequence[comp5329.Record], csv_path: str, skip_bad: bool, skipped: list[dict]
) -> list[comp5329.Record]:
  empty = [r for r in records if not r.caption.strip()]
  if empty and not skip_bad:
    ids = ", ".join(f"{r.image_id} (line {r.line})" for r in empty[:5])
    raise comp5329.CsvFormatError(
      f"{csv_path}: {len(empty)} record(s) have an empty caption (first: {ids}). Fill them in or "
      "remove the rows, or set --config.data.skip_bad=True to train without them."
    )
  skipped.extend(_entry(r, "empty caption", csv=csv_path) for r in empty)
  kept = [r for r in records if r.caption.strip()]
  if empty and not kept:
    raise comp5329.CsvFormatError(
      f"{csv_path}: every record has an empty caption; nothing to train on"
    )
  return kept


def _entry(
  record,
  reason: str,
  *,
  detail: str = "",
  path: str | None = None,
  csv: str | None = None,
  split: str | None = None,
) -> dict:
  """One skipped.json entry: the record (and pair id for matching), why, PIL's words, the image
  file, and where the record is: its CSV, its line there (the header is line 1) and its split."""
  entry = {"id": record.id} if hasattr(record, "id") else {}
  entry.update(image_id=record.image_id, reason=reason)
  for key, value in (
    ("detail", detail),
    ("path", path),
    ("csv", csv),
    ("line", getattr(record, "line", 0)),
    ("split", split),
  ):
    if value:
      entry[key] = value
  return entry


@dataclasses.dataclass
class _Images:
  """A split's prepared image store, before its bad files are reported or dropped."""

  image_cache: str | np.ndarray  # the store's folder; an empty array for a split of no records
  row: list[int | None]  # per record: its row in the cache, None when its image is bad
  # (bad file, the records that use it): several matching pairs can share one image.
  bad: list[tuple[images_lib.BadImage, list]]


def _decode_images(
  records: Sequence,
  image_paths: Sequence[str],
  image_of: Sequence[int],
  *,
  image_size: int,
  cache_dir: str | None,
  max_image_pixels: int,
) -> _Images:
  """Decodes `image_paths` (distinct files); record k uses file `image_of[k]`."""
  if not len(image_paths):  # a header-only file (TFDS writes no dataset of no examples)
    empty = np.zeros((0, image_size, image_size, 3), np.uint8)
    return _Images(image_cache=empty, row=[], bad=[])
  cache, ok, bad = images_lib.decode_images(
    image_paths, image_size, cache_dir=cache_dir, max_image_pixels=max_image_pixels
  )
  users: dict[int, list] = {b.index: [] for b in bad}
  for r, k in zip(records, image_of):
    if k in users:
      users[k].append(r)
  return _Images(
    image_cache=cache.folder,
    row=[int(k) if ok[k] else None for k in image_of],
    bad=[(b, users[b.index]) for b in bad],
  )


def _where(split: str | None, csv: str | None, records: Sequence) -> str:
  """'train, line 7: ' / 'val, val.csv lines 3, 9: ': where a bad image is used."""
  lines = [r.line for r in records if getattr(r, "line", 0)]
  shown = ", ".join(str(n) for n in lines[:5]) + (f" (+{len(lines) - 5})" if len(lines) > 5 else "")
  rows = f"{os.path.basename(csv) + ' ' if csv else ''}line{'s' * (len(lines) > 1)} {shown}"
  parts = [p for p in (split, rows if lines else "") if p]
  return ", ".join(parts) + ": " if parts else ""


def _check_images(
  splits: Sequence[tuple[str | None, str | None, _Images | None]],
  skip_bad: bool,
  skipped: list[dict],
) -> None:
  """Raises one ImageDataError for the bad images of every split, or (skip_bad) records them.

  `splits` holds (split name, CSV path, decoded images) for each split.
  """
  splits = [(name, csv, im) for name, csv, im in splits if im is not None]
  csvs = {csv for _, csv, _ in splits}
  one_csv = next(iter(csvs)) if len(csvs) == 1 else None
  items, per_split = [], {}
  for name, csv, im in splits:
    for bad, records in im.bad:
      items.append((_where(name, None if one_csv else csv, records), bad))
      per_split[name] = per_split.get(name, 0) + 1
  if items and not skip_bad:
    extra = (
      "; " + ", ".join(f"{n} in {name}" for name, n in per_split.items()) if len(splits) > 1 else ""
    )
    message = images_lib.bad_images_message(items, extra=extra)
    raise images_lib.ImageDataError(f"{one_csv}: {message}" if one_csv else message)
  for name, csv, im in splits:
    for bad, records in im.bad:
      skipped.extend(
        _entry(r, bad.reason, detail=bad.detail, path=bad.path, csv=csv, split=name)
        for r in records
      )


def _to_split(
  records: Sequence,
  images: _Images | None,
  encoder: TextEncoder,
  ids: list[str],
  labels: dict[str, np.ndarray],
) -> PreparedSplit:
  """Tokens + labels of the records whose image is usable, pointing into the image cache."""
  image_cache = image_index = None
  keep = np.arange(len(records))
  if images is not None:
    keep = np.asarray([k for k, row in enumerate(images.row) if row is not None], np.int64)
    image_cache = images.image_cache
    image_index = np.asarray([images.row[k] for k in keep], np.int64)
  tokens, length = encoder.encode_batch([records[k].caption for k in keep])
  arrays = {"tokens": tokens, "length": length}
  arrays.update({key: value[keep] for key, value in labels.items()})
  return PreparedSplit(
    ids=[ids[k] for k in keep], image_cache=image_cache, image_index=image_index, arrays=arrays
  )


def _comp5329_images(
  records, images_dir: str, image_size: int, cache_dir: str | None, max_image_pixels: int
) -> _Images:
  paths = [os.path.join(images_dir, r.image_id) for r in records]
  return _decode_images(
    records,
    paths,
    range(len(records)),
    image_size=image_size,
    cache_dir=cache_dir,
    max_image_pixels=max_image_pixels,
  )


def _multihot(records) -> np.ndarray:
  if not records:
    return np.zeros((0, comp5329.NUM_LABELS), np.float32)
  return np.stack([comp5329.labels_to_multihot(r.labels) for r in records])


def encode_records(
  records: Sequence[comp5329.Record],
  encoder: TextEncoder,
  *,
  images_dir: str,
  image_size: int,
  cache_dir: str | None,
  skip_bad: bool,
  skipped: list[dict],
  labelled: bool = True,
  with_images: bool = True,
  max_image_pixels: int = images_lib.MAX_IMAGE_PIXELS,
  csv_path: str | None = None,
) -> PreparedSplit:
  """Records -> a PreparedSplit (tokens, lengths, multi-hot labels, cached images).

  Bad images raise one ImageDataError naming every file (and, with `csv_path`, the CSV), unless
  `skip_bad`, where their records are left out and listed in `skipped`.
  """
  images = (
    _comp5329_images(records, images_dir, image_size, cache_dir, max_image_pixels)
    if with_images
    else None
  )
  _check_images([(None, csv_path, images)], skip_bad, skipped)
  return _to_split(
    records,
    images,
    encoder,
    [r.image_id for r in records],
    {"labels": _multihot(records)} if labelled else {},
  )


def split_records(records, cfg_data, csv_path: str | None = None):
  """train/val split of the labelled CSV: 'random' (seeded) or 'last' (the last val_size
  records)."""
  n_val = (
    int(cfg_data.val_size)
    if cfg_data.val_size >= 1
    else int(round(len(records) * cfg_data.val_size))
  )
  if not 0 <= n_val < len(records):
    raise ValueError(
      f"data.val_size={cfg_data.val_size:g} asks for {n_val} validation records, but "
      f"{csv_path or 'the CSV'} has {len(records)} usable record(s) (after data.limit and "
      "skipped rows); lower data.val_size so that some records are left to train on."
    )
  if cfg_data.split == "last":
    return list(records[: len(records) - n_val]), list(records[len(records) - n_val :])
  if cfg_data.split == "random":
    return comp5329.split_train_val(records, val_size=n_val, seed=cfg_data.split_seed)
  raise ValueError(f"data.split must be 'random' or 'last', got {cfg_data.split!r}")


def _max_image_pixels(cfg_data) -> int:
  return int(cfg_data.get("max_image_pixels") or images_lib.MAX_IMAGE_PIXELS)


def prepare_comp5329(
  cfg_data, workdir: str | None, *, with_images: bool = True, text_cfg=None
) -> PreparedData:
  """The train and val splits of `data.root/train.csv`, ready for the pipelines.

  Every image of both splits is checked before anything is returned: bad ones raise a single
  error listing them all, or with data.skip_bad are left out and listed in skipped.json.
  """
  check_root(cfg_data.root)
  csv_path = os.path.join(cfg_data.root, cfg_data.train_csv)
  records = comp5329.read_comp5329(csv_path)
  _check_nonempty(records, csv_path)
  if cfg_data.get("limit"):
    records = records[: cfg_data.limit]
  skipped: list[dict] = []
  records = _check_captions(records, csv_path, cfg_data.skip_bad, skipped)
  unlabelled = [r.image_id for r in records if not r.labels]
  if unlabelled:
    raise comp5329.CsvFormatError(
      f"{csv_path}: {len(unlabelled)} record(s) have no label (first: {unlabelled[:5]}); "
      "every training record needs at least one label id."
    )
  train_recs, val_recs = split_records(records, cfg_data, csv_path)
  images_dir = os.path.join(cfg_data.root, cfg_data.images_dir)
  if with_images and not os.path.isdir(images_dir):
    raise images_lib.ImageDataError(
      f"the images folder {images_dir!r} of {csv_path} does not exist; put the images there, "
      "or set --config.data.images_dir"
    )
  decoded = {"train": None, "val": None}
  if with_images:
    for name, recs in (("train", train_recs), ("val", val_recs)):
      if recs:
        decoded[name] = _comp5329_images(
          recs,
          images_dir,
          cfg_data.image_size,
          cfg_data.get("cache_dir") or None,
          _max_image_pixels(cfg_data),
        )
  _check_images([(name, csv_path, im) for name, im in decoded.items()], cfg_data.skip_bad, skipped)
  encoder = text_encoder_for(cfg_data, workdir, [r.caption for r in train_recs], text_cfg)
  train, val = (
    _to_split(recs, decoded[name], encoder, [r.image_id for r in recs], {"labels": _multihot(recs)})
    if recs
    else None
    for name, recs in (("train", train_recs), ("val", val_recs))
  )
  _report_skipped(skipped, workdir)
  _check_left(skipped, train=train, val=val)
  return PreparedData(
    train=train,
    val=val,
    encoder=encoder,
    skipped=skipped,
    train_captions=[r.caption for r in train_recs],
  )


# --- image-caption matching (S0 layout) -------------------------------------------------------


def _matching_images(
  records, images_dir: str, image_size: int, cache_dir: str | None, max_image_pixels: int
) -> _Images:
  # Many pairs share an image: each distinct image is decoded and cached once.
  unique = sorted({r.image_id for r in records})
  position = {image_id: k for k, image_id in enumerate(unique)}
  paths = [os.path.join(images_dir, f"{i}.jpg") for i in unique]
  return _decode_images(
    records,
    paths,
    [position[r.image_id] for r in records],
    image_size=image_size,
    cache_dir=cache_dir,
    max_image_pixels=max_image_pixels,
  )


def _match_labels(records) -> dict[str, np.ndarray]:
  return {"label": np.asarray([r.label for r in records], np.int32)}


def encode_matching_records(
  records,
  encoder: TextEncoder,
  *,
  images_dir: str,
  image_size: int,
  cache_dir: str | None,
  skip_bad: bool,
  skipped: list[dict],
  labelled: bool = True,
  with_images: bool = True,
  max_image_pixels: int = images_lib.MAX_IMAGE_PIXELS,
  csv_path: str | None = None,
) -> PreparedSplit:
  """Matching pairs -> a PreparedSplit (tokens, length, label int32); ids are the pair ids.

  Many pairs share an image: each distinct image is decoded and cached once, and the pairs index
  into that cache. Bad images raise or are skipped as in `encode_records`.
  """
  images = (
    _matching_images(records, images_dir, image_size, cache_dir, max_image_pixels)
    if with_images
    else None
  )
  _check_images([(None, csv_path, images)], skip_bad, skipped)
  return _to_split(
    records, images, encoder, [r.id for r in records], _match_labels(records) if labelled else {}
  )


def _split_matching_by_image(records, cfg_data, csv_path: str | None = None):
  """train/val from one CSV, keeping all pairs of an image on the same side (no image leaks)."""
  image_ids = sorted({r.image_id for r in records})
  n_val = (
    int(cfg_data.val_size)
    if cfg_data.val_size >= 1
    else int(round(len(image_ids) * cfg_data.val_size))
  )
  if not 0 <= n_val < len(image_ids):
    raise ValueError(
      f"data.val_size={cfg_data.val_size:g} asks for {n_val} validation images, but "
      f"{csv_path or 'the CSV'} has {len(image_ids)} distinct image(s); lower data.val_size, or "
      "give a separate data.val_csv."
    )
  rng = np.random.default_rng(cfg_data.split_seed)
  val_images = set(rng.permutation(np.asarray(image_ids, dtype=object))[:n_val].tolist())
  return (
    [r for r in records if r.image_id not in val_images],
    [r for r in records if r.image_id in val_images],
  )


def prepare_matching(
  cfg_data, workdir: str | None, *, with_images: bool = True, text_cfg=None
) -> PreparedData:
  """train/val splits of an S0-layout folder: train.csv + train_images/, val.csv + val_images/.

  With `data.val_csv=''` the val split is cut from train.csv by image (data.val_size images).
  Bad images of both splits are reported together, as in `prepare_comp5329`.
  """
  from jaxmm.data import matching

  check_root(cfg_data.root)
  train_csv = os.path.join(cfg_data.root, cfg_data.train_csv)
  train_recs = matching.read_matching(train_csv)
  _check_nonempty(train_recs, train_csv, "pairs")
  if cfg_data.get("limit"):
    train_recs = train_recs[: cfg_data.limit]
  unlabelled = [r.id for r in train_recs if r.label is None]
  if unlabelled:
    raise comp5329.CsvFormatError(
      f"{train_csv}: training needs the label column (header id,caption,image_id,label)"
    )
  val_images_dir = cfg_data.get("val_images_dir") or cfg_data.images_dir
  val_csv = train_csv
  if cfg_data.get("val_csv"):
    val_csv = os.path.join(cfg_data.root, cfg_data.val_csv)
    val_recs = matching.read_matching(val_csv)
    _check_nonempty(val_recs, val_csv, "pairs")
    if any(r.label is None for r in val_recs):
      raise comp5329.CsvFormatError(f"{val_csv}: the val split needs the label column")
  else:
    train_recs, val_recs = _split_matching_by_image(train_recs, cfg_data, train_csv)
    val_images_dir = cfg_data.images_dir
  dirs = {"train": cfg_data.images_dir, "val": val_images_dir}

  def images_of(name, recs):
    return _matching_images(
      recs,
      os.path.join(cfg_data.root, dirs[name]),
      cfg_data.image_size,
      cfg_data.get("cache_dir") or None,
      _max_image_pixels(cfg_data),
    )

  return _prepare_pairs(
    cfg_data,
    workdir,
    {"train": train_recs, "val": val_recs},
    {"train": train_csv, "val": val_csv},
    images_of,
    with_images,
    text_cfg,
  )


def _pair_id(record) -> str:
  """A pair's id: S0's id column; a table row's image (a table has no id column)."""
  return getattr(record, "id", record.image_id)


def _prepare_pairs(
  cfg_data,
  workdir: str | None,
  recs_of: dict,
  csv_of: dict,
  images_of,
  with_images: bool,
  text_cfg=None,
) -> PreparedData:
  """Matching pairs of both splits -> PreparedData: empty captions and bad images of both splits
  reported together; `images_of(split name, records)` decodes a split's images."""
  skipped: list[dict] = []
  for name, recs in recs_of.items():
    empty = [r for r in recs if not r.caption.strip()]
    if empty and not cfg_data.skip_bad:
      first = ", ".join(f"{_pair_id(r)} (line {r.line})" for r in empty[:5])
      raise comp5329.CsvFormatError(
        f"{csv_of[name]}: {name} split: {len(empty)} pair(s) have an empty caption (first: "
        f"{first}). Fill them in or set --config.data.skip_bad=True to train without them."
      )
    skipped.extend(_entry(r, "empty caption", csv=csv_of[name], split=name) for r in empty)
  train_recs = [r for r in recs_of["train"] if r.caption.strip()]
  val_recs = [r for r in recs_of["val"] if r.caption.strip()]
  if not train_recs:
    raise comp5329.CsvFormatError(
      f"{csv_of['train']}: every pair has an empty caption; nothing to train on"
    )
  decoded = {"train": None, "val": None}
  if with_images:
    for name, recs in (("train", train_recs), ("val", val_recs)):
      if recs:
        decoded[name] = images_of(name, recs)
  _check_images(
    [(name, csv_of[name], im) for name, im in decoded.items()], cfg_data.skip_bad, skipped
  )
  encoder = text_encoder_for(cfg_data, workdir, [r.caption for r in train_recs], text_cfg)
  train, val = (
    _to_split(recs, decoded[name], encoder, [_pair_id(r) for r in recs], _match_labels(recs))
    if recs
    else None
    for name, recs in (("train", train_recs), ("val", val_recs))
  )
  _report_skipped(skipped, workdir)
  _check_left(skipped, train=train, val=val)
  return PreparedData(
    train=train,
    val=val,
    encoder=encoder,
    skipped=skipped,
    train_captions=[r.caption for r in train_recs],
  )


def _report_skipped(skipped: list[dict], workdir: str | None) -> None:
  if not skipped:
    return
  where = ""
  if workdir:
    from jaxmm.workdir import writes_files  # deferred: it imports jax

    path = os.path.join(workdir, SKIPPED_FILE)
    if writes_files():  # process 0 of a run on several hosts
      with open(path, "w") as f:
        json.dump(skipped, f, indent=1)
    where = f"; every one is listed in {path}"
  shown = "\n".join(
    f"  {s.get('path') or s['image_id']}: {s['reason']}"
    + (f" (line {s['line']})" if s.get("line") else "")
    for s in skipped[:20]
  )
  more = f"\n  ... and {len(skipped) - 20} more" if len(skipped) > 20 else ""
  log.warning(
    "skipped %d example(s) (data.skip_bad=True): %s%s\n%s%s",
    len(skipped),
    images_lib.reason_counts([s["reason"] for s in skipped]),
    where,
    shown,
    more,
  )


def _check_left(skipped: list[dict], **splits: PreparedSplit | None) -> None:
  """A split that data.skip_bad emptied stops the run now, not at its first batch or eval."""
  for name, split in splits.items():
    lost = [s for s in skipped if s.get("split") in (name, None)]
    if split is not None and not len(split) and lost:
      files = sorted({s["csv"] for s in lost if s.get("csv")})
      raise images_lib.ImageDataError(
        f"{name}{' (' + ', '.join(files) + ')' if files else ''}: no example is left once "
        f"data.skip_bad left out the {len(lost)} that cannot be used (listed above): "
        "check data.root and the image paths of the file, or fix the images"
      )


# --- the layouts of each task: COMP5329 / S0, or a plain table --------------------------------


def prepare_multilabel(
  cfg_data,
  workdir: str | None,
  *,
  with_images: bool = True,
  labels: LabelSet | None = None,
  save_labels: bool = True,
  task_key: str = "task",
  text_cfg=None,
) -> PreparedData:
  """The train and val splits of a multi-label folder (COMP5329's layout or a table).

  labels: the label set when it is known already (a restored workdir's); otherwise data.labels,
  the workdir's labels.json or the training file's names, saved as labels.json in `workdir`
  (when `save_labels`). task_key: the key named when the folder holds matching data.
  text_cfg: model.text, whose tower chooses the text encoder (jaxmm.data.encoders).
  """
  check_root(cfg_data.root)
  layout = table.find_layout(cfg_data, "multilabel", task_key=task_key)
  if layout.name == "table":
    data = _prepare_table_multilabel(
      cfg_data,
      workdir,
      layout.train_path,
      with_images=with_images,
      labels=labels,
      text_cfg=text_cfg,
    )
  else:
    if cfg_data.get("labels"):
      raise ValueError(
        f"data.labels fixes the label set of a table; {cfg_data.root} holds COMP5329 data, whose "
        "labels are its 18 ids: set --config.data.labels=()"
      )
    if labels is not None and labels.ids is None:
      raise ValueError(
        f"{layout.train_path} is a COMP5329-layout file (label ids) but the run's labels are "
        f"names ({labels.describe()}): give a table (image, text, labels) instead"
      )
    data = prepare_comp5329(cfg_data, workdir, with_images=with_images, text_cfg=text_cfg)
    data.labels = labels or labels_lib.COMP5329
  if save_labels and workdir and labels is None:
    _save_labels(data.labels, workdir)
  return data


def label_set_of(cfg_data) -> LabelSet:
  """The label set of a multi-label folder without preparing it: data.labels, else COMP5329's,
  else the sorted names of the table's training file."""
  check_root(cfg_data.root)
  layout = table.find_layout(cfg_data, "multilabel")
  if layout.name == "comp5329":
    return labels_lib.COMP5329
  records = table.read_table(
    layout.train_path, table.Columns.from_config(cfg_data), _label_sep(cfg_data), need="labels"
  )
  return labels_lib.for_training(cfg_data, None, records, layout.train_path)[0]


def _save_labels(label_set: LabelSet, workdir: str) -> None:
  """labels.json beside vocab.json, for evaluation and prediction (process 0 of several writes)."""
  from jaxmm.workdir import writes_files  # deferred: it imports jax

  path = os.path.join(workdir, LABELS_FILE)
  if not os.path.exists(path) and writes_files():
    labels_lib.save(label_set, path)


def prepare_pairs(
  cfg_data, workdir: str | None, *, with_images: bool = True, task_key: str = "task", text_cfg=None
) -> PreparedData:
  """The train and val splits of a matching folder (S0's layout or a table with `match`)."""
  check_root(cfg_data.root)
  layout = table.find_layout(cfg_data, "matching", task_key=task_key)
  if layout.name == "matching":
    return prepare_matching(cfg_data, workdir, with_images=with_images, text_cfg=text_cfg)
  columns, sep = table.Columns.from_config(cfg_data), _label_sep(cfg_data)
  train_path = layout.train_path
  train_recs = table.read_table(train_path, columns, sep, need="match")
  _check_nonempty(train_recs, train_path, "pairs")
  if cfg_data.get("limit"):
    train_recs = train_recs[: cfg_data.limit]
  val_path = table.val_file(cfg_data)
  if val_path:
    val_recs = table.read_table(val_path, columns, sep, need="match")
    _check_nonempty(val_recs, val_path, "pairs")
  else:
    train_recs, val_recs = _split_matching_by_image(train_recs, cfg_data, train_path)
    val_path = train_path
  return _prepare_pairs(
    cfg_data,
    workdir,
    {"train": train_recs, "val": val_recs},
    {"train": train_path, "val": val_path},
    lambda name, recs: _table_images(recs, cfg_data),
    with_images,
    text_cfg,
  )


def _label_sep(cfg_data) -> str:
  return cfg_data.get("label_sep") or "|"


def _table_images(
  records,
  cfg_data=None,
  *,
  image_size: int | None = None,
  cache_dir: str | None = None,
  max_image_pixels: int = images_lib.MAX_IMAGE_PIXELS,
) -> _Images:
  """Each distinct image file of a table decoded once (rows may share an image)."""
  if cfg_data is not None:
    image_size, cache_dir = cfg_data.image_size, cfg_data.get("cache_dir") or None
    max_image_pixels = _max_image_pixels(cfg_data)
  position: dict[str, int] = {}
  for r in records:
    position.setdefault(r.path, len(position))
  return _decode_images(
    records,
    list(position),
    [position[r.path] for r in records],
    image_size=image_size,
    cache_dir=cache_dir,
    max_image_pixels=max_image_pixels,
  )


def _prepare_table_multilabel(
  cfg_data,
  workdir: str | None,
  train_path: str,
  *,
  with_images: bool,
  labels: LabelSet | None,
  text_cfg=None,
) -> PreparedData:
  columns, sep = table.Columns.from_config(cfg_data), _label_sep(cfg_data)
  records = table.read_table(train_path, columns, sep, need="labels")
  _check_nonempty(records, train_path)
  origin = "the workdir's labels"
  if labels is None:
    labels, origin = labels_lib.for_training(cfg_data, workdir, records, train_path)
  labels_lib.check_known(records, labels, train_path, origin)
  if cfg_data.get("limit"):
    records = records[: cfg_data.limit]
  skipped: list[dict] = []
  records = _check_captions(records, train_path, cfg_data.skip_bad, skipped)
  val_path = table.val_file(cfg_data)
  if val_path:
    val_recs = table.read_table(val_path, columns, sep, need="labels")
    _check_nonempty(val_recs, val_path)
    labels_lib.check_known(val_recs, labels, val_path, origin)
    train_recs, val_recs = records, _check_captions(val_recs, val_path, cfg_data.skip_bad, skipped)
  else:
    train_recs, val_recs = split_records(records, cfg_data, train_path)
  path_of = {"train": train_path, "val": val_path or train_path}
  decoded = {"train": None, "val": None}
  if with_images:
    for name, recs in (("train", train_recs), ("val", val_recs)):
      if recs:
        decoded[name] = _table_images(recs, cfg_data)
  _check_images(
    [(name, path_of[name], im) for name, im in decoded.items()], cfg_data.skip_bad, skipped
  )
  encoder = text_encoder_for(cfg_data, workdir, [r.caption for r in train_recs], text_cfg)
  train, val = (
    _to_split(
      recs,
      decoded[name],
      encoder,
      [r.image_id for r in recs],
      {"labels": labels.multihot_batch([r.labels for r in recs])},
    )
    if recs
    else None
    for name, recs in (("train", train_recs), ("val", val_recs))
  )
  _report_skipped(skipped, workdir)
  _check_left(skipped, train=train, val=val)
  log.info(
    "%s: %d labels (%s) from %s; %d train and %d val rows",
    train_path,
    len(labels),
    labels.describe(),
    origin,
    len(train),
    len(val) if val is not None else 0,
  )
  _warn_joined_names(labels, sep)
  return PreparedData(
    train=train,
    val=val,
    encoder=encoder,
    skipped=skipped,
    train_captions=[r.caption for r in train_recs],
    labels=labels,
  )


def _warn_joined_names(labels: LabelSet, sep: str) -> None:
  """A label column joined by another separator, or a list written as text, reads as names
  that combine several labels: the run goes on (such names can be meant), with a warning."""
  listed = [n for n in labels.names if n.startswith("[") and n.endswith("]")]
  if listed:
    log.warning(
      "label names such as %r look like lists written as text: write a row's labels joined by "
      "%r (or as a JSON list in a .jsonl file)",
      listed[0],
      sep,
    )
    return
  for other in (",", ";"):
    joined = [n for n in labels.names if other in n]
    if other != sep and joined:
      log.warning(
        "label names such as %r hold %r: if that joins a row's labels, set "
        "--config.data.label_sep=%r (the labels are now joined by %r)",
        joined[0],
        other,
        other,
        sep,
      )


def encode_table_records(
  records,
  encoder: TextEncoder,
  *,
  labels: LabelSet | None,
  image_size: int,
  cache_dir: str | None,
  skip_bad: bool,
  skipped: list[dict],
  labelled: bool = True,
  with_images: bool = True,
  max_image_pixels: int = images_lib.MAX_IMAGE_PIXELS,
  csv_path: str | None = None,
  images_dir: str | None = None,
) -> PreparedSplit:
  """Table rows -> a PreparedSplit: multi-hot `labels` over `labels` (multi-label data), or the
  `label` of each pair when `labels` is None (matching). Ids are the image column as written.
  `images_dir` is unused: a table's rows name their image files."""
  del images_dir
  images = (
    _table_images(
      records, image_size=image_size, cache_dir=cache_dir, max_image_pixels=max_image_pixels
    )
    if with_images
    else None
  )
  _check_images([(None, csv_path, images)], skip_bad, skipped)
  targets = {}
  if labelled:
    targets = (
      {"labels": labels.multihot_batch([r.labels for r in records])}
      if labels
      else _match_labels(records)
    )
  return _to_split(records, images, encoder, [r.image_id for r in records], targets)
