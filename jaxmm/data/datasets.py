"""From a dataset folder to PreparedSplits: read records, split, fit/load the text encoder, cache images.

Everything that can be wrong with the input is found here, before the first train step: unreadable
CSV rows, empty captions, missing or undecodable images.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence

import numpy as np

from jaxmm.data import comp5329
from jaxmm.data import images as images_lib
from jaxmm.data.pipeline import PreparedSplit
from jaxmm.data.text import TextEncoder

VOCAB_FILE = "vocab.json"
log = logging.getLogger("jaxmm")


@dataclasses.dataclass
class PreparedData:
  train: PreparedSplit | None
  val: PreparedSplit | None
  encoder: TextEncoder
  skipped: list[dict]
  train_captions: list[str] | None = None  # raw, for word vectors trained on them


def check_root(root: str) -> None:
  if not os.path.isdir(root):
    raise FileNotFoundError(
        f"data.root {root!r} does not exist. Point --config.data.root at a dataset folder "
        "(train.csv + data/), or make the synthetic one: python -m jaxmm.data.synthetic --root DIR")


def text_encoder_for(cfg_data, workdir: str | None, train_captions: Sequence[str]) -> TextEncoder:
  """Loads the workdir's vocab.json (so resume/evaluate/predict reuse it) or fits one on train."""
  path = os.path.join(workdir, VOCAB_FILE) if workdir else None
  if path and os.path.exists(path):
    return TextEncoder.load(path)
  enc = TextEncoder.fit(list(train_captions), max_len=cfg_data.max_len, min_freq=cfg_data.min_freq,
                        max_size=cfg_data.get("vocab_size") or None, stem=cfg_data.stem,
                        remove_stopwords=cfg_data.get("remove_stopwords", False),
                        lemmatize=cfg_data.get("lemmatize", False))
  if path:
    enc.save(path)
  return enc


def _check_captions(records: Sequence[comp5329.Record], csv_path: str, skip_bad: bool,
                    skipped: list[dict]) -> list[comp5329.Record]:
  empty = [r for r in records if not r.caption.strip()]
  if empty and not skip_bad:
    ids = ", ".join(r.image_id for r in empty[:5])
    raise comp5329.CsvFormatError(
        f"{csv_path}: {len(empty)} record(s) have an empty caption (first: {ids}). Fill them in or "
        "remove the rows, or set --config.data.skip_bad=True to train without them.")
  skipped.extend({"image_id": r.image_id, "reason": "empty caption"} for r in empty)
  return [r for r in records if r.caption.strip()]


def encode_records(records: Sequence[comp5329.Record], encoder: TextEncoder, *, images_dir: str,
                   image_size: int, cache_dir: str | None, skip_bad: bool, skipped: list[dict],
                   labelled: bool = True, with_images: bool = True) -> PreparedSplit:
  """Records -> a PreparedSplit (tokens, lengths, multi-hot labels, cached images)."""
  image_cache = image_index = None
  if with_images:
    paths = [os.path.join(images_dir, r.image_id) for r in records]
    cache, ok = images_lib.cached_images(paths, image_size, cache_dir=cache_dir, skip_bad=skip_bad)
    for i in np.flatnonzero(~ok):
      skipped.append({"image_id": records[i].image_id, "reason": "image missing or undecodable"})
    keep = np.flatnonzero(ok)
    records = [records[i] for i in keep]
    image_cache, image_index = cache.filename, keep.astype(np.int64)
  tokens, length = encoder.encode_batch([r.caption for r in records])
  arrays = {"tokens": tokens, "length": length}
  if labelled:
    arrays["labels"] = np.stack([comp5329.labels_to_multihot(r.labels) for r in records]) \
        if records else np.zeros((0, comp5329.NUM_LABELS), np.float32)
  return PreparedSplit(ids=[r.image_id for r in records], image_cache=image_cache,
                       image_index=image_index, arrays=arrays)


def split_records(records, cfg_data):
  """train/val split of the labelled CSV: 'random' (seeded) or 'last' (the last val_size records)."""
  n_val = int(cfg_data.val_size) if cfg_data.val_size >= 1 else int(round(len(records) * cfg_data.val_size))
  if cfg_data.split == "last":
    return list(records[:len(records) - n_val]), list(records[len(records) - n_val:])
  if cfg_data.split == "random":
    return comp5329.split_train_val(records, val_size=n_val, seed=cfg_data.split_seed)
  raise ValueError(f"data.split must be 'random' or 'last', got {cfg_data.split!r}")


def prepare_comp5329(cfg_data, workdir: str | None, *, with_images: bool = True) -> PreparedData:
  """The train and val splits of `data.root/train.csv`, ready for the pipelines."""
  check_root(cfg_data.root)
  csv_path = os.path.join(cfg_data.root, cfg_data.train_csv)
  records = comp5329.read_comp5329(csv_path)
  if cfg_data.get("limit"):
    records = records[:cfg_data.limit]
  skipped: list[dict] = []
  records = _check_captions(records, csv_path, cfg_data.skip_bad, skipped)
  unlabelled = [r.image_id for r in records if not r.labels]
  if unlabelled:
    raise comp5329.CsvFormatError(
        f"{csv_path}: {len(unlabelled)} record(s) have no label (first: {unlabelled[:5]}); "
        "every training record needs at least one label id.")
  train_recs, val_recs = split_records(records, cfg_data)
  images_dir = os.path.join(cfg_data.root, cfg_data.images_dir)
  if with_images and not os.path.isdir(images_dir):
    raise images_lib.ImageDataError(
        f"the images folder {images_dir!r} of {csv_path} does not exist; put the images there, "
        "or set --config.data.images_dir")
  encoder = text_encoder_for(cfg_data, workdir, [r.caption for r in train_recs])
  kw = dict(encoder=encoder, images_dir=images_dir,
            image_size=cfg_data.image_size, cache_dir=cfg_data.get("cache_dir") or None,
            skip_bad=cfg_data.skip_bad, skipped=skipped, with_images=with_images)
  try:
    train = encode_records(train_recs, **kw)
    val = encode_records(val_recs, **kw) if val_recs else None
  except images_lib.ImageDataError as e:  # say which CSV lists them
    raise images_lib.ImageDataError(f"{csv_path}: {e}") from None
  _report_skipped(skipped, workdir)
  return PreparedData(train=train, val=val, encoder=encoder, skipped=skipped,
                      train_captions=[r.caption for r in train_recs])


# --- image-caption matching (S0 layout) -------------------------------------------------------


def encode_matching_records(records, encoder: TextEncoder, *, images_dir: str, image_size: int,
                            cache_dir: str | None, skip_bad: bool, skipped: list[dict],
                            labelled: bool = True, with_images: bool = True) -> PreparedSplit:
  """Matching pairs -> a PreparedSplit (tokens, length, label int32); ids are the pair ids.

  Many pairs share an image: each distinct image is decoded and cached once, and the pairs index
  into that cache.
  """
  image_cache = image_index = None
  if with_images:
    unique = sorted({r.image_id for r in records})
    paths = [os.path.join(images_dir, f"{i}.jpg") for i in unique]
    cache, ok = images_lib.cached_images(paths, image_size, cache_dir=cache_dir, skip_bad=skip_bad)
    row_of = {image_id: k for k, image_id in enumerate(unique) if ok[k]}
    bad = [r for r in records if r.image_id not in row_of]
    skipped.extend({"id": r.id, "image_id": r.image_id, "reason": "image missing or undecodable"}
                   for r in bad)
    records = [r for r in records if r.image_id in row_of]
    image_cache = cache.filename
    image_index = np.asarray([row_of[r.image_id] for r in records], np.int64)
  tokens, length = encoder.encode_batch([r.caption for r in records])
  arrays = {"tokens": tokens, "length": length}
  if labelled:
    arrays["label"] = np.asarray([r.label for r in records], np.int32)
  return PreparedSplit(ids=[r.id for r in records], image_cache=image_cache,
                       image_index=image_index, arrays=arrays)


def _split_matching_by_image(records, cfg_data):
  """train/val from one CSV, keeping all pairs of an image on the same side (no image leaks)."""
  image_ids = sorted({r.image_id for r in records})
  n_val = (int(cfg_data.val_size) if cfg_data.val_size >= 1
           else int(round(len(image_ids) * cfg_data.val_size)))
  rng = np.random.default_rng(cfg_data.split_seed)
  val_images = set(rng.permutation(np.asarray(image_ids, dtype=object))[:n_val].tolist())
  return ([r for r in records if r.image_id not in val_images],
          [r for r in records if r.image_id in val_images])


def prepare_matching(cfg_data, workdir: str | None, *, with_images: bool = True) -> PreparedData:
  """train/val splits of an S0-layout folder: train.csv + train_images/, val.csv + val_images/.

  With `data.val_csv=''` the val split is cut from train.csv by image (data.val_size images).
  """
  from jaxmm.data import matching
  check_root(cfg_data.root)
  train_csv = os.path.join(cfg_data.root, cfg_data.train_csv)
  train_recs = matching.read_matching(train_csv)
  if cfg_data.get("limit"):
    train_recs = train_recs[:cfg_data.limit]
  unlabelled = [r.id for r in train_recs if r.label is None]
  if unlabelled:
    raise comp5329.CsvFormatError(f"{train_csv}: training needs the label column "
                                  "(header id,caption,image_id,label)")
  skipped: list[dict] = []
  val_images_dir = cfg_data.get("val_images_dir") or cfg_data.images_dir
  if cfg_data.get("val_csv"):
    val_csv = os.path.join(cfg_data.root, cfg_data.val_csv)
    val_recs = matching.read_matching(val_csv)
    if any(r.label is None for r in val_recs):
      raise comp5329.CsvFormatError(f"{val_csv}: the val split needs the label column")
  else:
    train_recs, val_recs = _split_matching_by_image(train_recs, cfg_data)
    val_images_dir = cfg_data.images_dir
  for name, recs in (("train", train_recs), ("val", val_recs)):
    empty = [r.id for r in recs if not r.caption.strip()]
    if empty and not cfg_data.skip_bad:
      raise comp5329.CsvFormatError(
          f"{name} split: {len(empty)} pair(s) have an empty caption (first ids: {empty[:5]}). "
          "Fill them in or set --config.data.skip_bad=True to train without them.")
    skipped.extend({"id": i, "reason": "empty caption"} for i in empty)
  train_recs = [r for r in train_recs if r.caption.strip()]
  val_recs = [r for r in val_recs if r.caption.strip()]
  encoder = text_encoder_for(cfg_data, workdir, [r.caption for r in train_recs])
  kw = dict(encoder=encoder, image_size=cfg_data.image_size,
            cache_dir=cfg_data.get("cache_dir") or None, skip_bad=cfg_data.skip_bad,
            skipped=skipped, with_images=with_images)
  train = encode_matching_records(train_recs, images_dir=os.path.join(
      cfg_data.root, cfg_data.images_dir), **kw)
  val = (encode_matching_records(val_recs, images_dir=os.path.join(cfg_data.root, val_images_dir),
                                 **kw) if val_recs else None)
  _report_skipped(skipped, workdir)
  return PreparedData(train=train, val=val, encoder=encoder, skipped=skipped,
                      train_captions=[r.caption for r in train_recs])


def _report_skipped(skipped: list[dict], workdir: str | None) -> None:
  if skipped:
    log.warning("skipped %d bad example(s) (data.skip_bad=True); first: %s", len(skipped),
                skipped[:5])
    if workdir:
      with open(os.path.join(workdir, "skipped.json"), "w") as f:
        json.dump(skipped, f, indent=1)
