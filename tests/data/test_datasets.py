"""Tests for dataset preparation: records -> PreparedSplits (jaxmm/data/datasets.py)."""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest

from jaxmm import workdir as workdir_lib
from jaxmm.configs import default
from jaxmm.data import comp5329, datasets
from jaxmm.data.comp5329 import CsvFormatError, Record, read_comp5329, write_comp5329
from jaxmm.data.images import ImageDataError, load_image, open_cache
from jaxmm.data.pipeline import eval_dataset, iterate
from jaxmm.data.synthetic import make_comp5329_synthetic, make_matching_synthetic
from jaxmm.data.text import UNK_ID, TextEncoder
from tests.conftest import COMP5329_DEV, requires

N_TRAIN, S = 60, 16


@pytest.fixture(scope="module")
def synth_master(tmp_path_factory) -> str:
  root = tmp_path_factory.mktemp("synth") / "comp"
  make_comp5329_synthetic(root, n_train=N_TRAIN, n_test=6, image_size=S, seed=0)
  return str(root)


@pytest.fixture
def root(synth_master, tmp_path) -> str:
  """A private copy of the synthetic dataset (tests may edit it)."""
  return shutil.copytree(synth_master, tmp_path / "data")


@pytest.fixture
def workdir(tmp_path) -> str:
  d = tmp_path / "run"
  d.mkdir()
  return str(d)


def _cfg(root: str, **kw):
  c = default.get_config()
  c.data.root = str(root)
  c.data.image_size = S
  c.data.max_len = 12
  c.data.val_size = 10
  c.data.update(kw)
  return c.data


def _records(root: str) -> list[Record]:
  return read_comp5329(os.path.join(root, "train.csv"))


def _rewrite(root: str, records) -> None:
  write_comp5329(os.path.join(root, "train.csv"), records, labelled=True)


@pytest.mark.parametrize(
  "split,val_size,n_val",
  [("random", 10, 10), ("random", 0.25, 15), ("last", 10, 10), ("last", 0.2, 12)],
)
def test_prepare_split_sizes(root, workdir, split, val_size, n_val):
  data = datasets.prepare_comp5329(_cfg(root, split=split, val_size=val_size), workdir)
  assert len(data.train) == N_TRAIN - n_val and len(data.val) == n_val
  ids = [r.image_id for r in _records(root)]
  assert sorted(data.train.ids + data.val.ids, key=ids.index) == ids  # a partition
  if split == "last":
    assert data.train.ids == ids[: N_TRAIN - n_val] and data.val.ids == ids[N_TRAIN - n_val :]
  else:
    assert data.val.ids != ids[N_TRAIN - n_val :]
  assert data.skipped == []
  assert not os.path.exists(os.path.join(workdir, "skipped.json"))


def test_random_split_seeded(root, workdir, tmp_path):
  a = datasets.prepare_comp5329(_cfg(root, split_seed=1), workdir)
  b = datasets.prepare_comp5329(_cfg(root, split_seed=1), None)
  c = datasets.prepare_comp5329(_cfg(root, split_seed=2), None)
  assert a.val.ids == b.val.ids and a.val.ids != c.val.ids


def test_bad_split_name(root, workdir):
  with pytest.raises(ValueError, match="data.split"):
    datasets.prepare_comp5329(_cfg(root, split="sequential"), workdir)


def test_prepared_arrays(root, workdir):
  data = datasets.prepare_comp5329(_cfg(root, split="last"), workdir)
  recs = {r.image_id: r for r in _records(root)}
  for sp in (data.train, data.val):
    n = len(sp)
    assert sp.arrays["tokens"].shape == (n, 12) and sp.arrays["tokens"].dtype == np.int32
    assert sp.arrays["length"].shape == (n,) and sp.arrays["length"].dtype == np.int32
    assert sp.arrays["labels"].shape == (n, comp5329.NUM_LABELS)
    assert sp.arrays["labels"].dtype == np.float32
    cache = np.asarray(open_cache(sp.image_cache))
    assert cache.shape[1:] == (S, S, 3) and len(sp.image_index) == n
    for i in (0, n - 1):
      r = recs[sp.ids[i]]
      np.testing.assert_array_equal(sp.arrays["labels"][i], comp5329.labels_to_multihot(r.labels))
      tokens, length = data.encoder.encode(r.caption)
      np.testing.assert_array_equal(sp.arrays["tokens"][i], tokens)
      assert sp.arrays["length"][i] == length
      img = load_image(os.path.join(root, "data", r.image_id), S)
      np.testing.assert_array_equal(cache[sp.image_index[i]], img)
  # The splits plug into the pipelines.
  (b, *_) = iterate(eval_dataset(data.val, batch_size=4), num_threads=1)
  assert b["image"].shape == (4, S, S, 3)


def test_limit(root, workdir):
  data = datasets.prepare_comp5329(_cfg(root, limit=20, val_size=5, split="last"), workdir)
  assert len(data.train) == 15 and len(data.val) == 5
  assert data.val.ids == [f"{i}.jpg" for i in range(15, 20)]


def test_no_val(root, workdir):
  data = datasets.prepare_comp5329(_cfg(root, val_size=0), workdir)
  assert data.val is None and len(data.train) == N_TRAIN


def test_vocab_written_and_reused(root, workdir):
  cfg = _cfg(root, split="last")
  first = datasets.prepare_comp5329(cfg, workdir)
  path = os.path.join(workdir, workdir_lib.VOCAB_FILE)
  assert os.path.isfile(path)
  assert TextEncoder.load(path).vocab == first.encoder.vocab
  # Fit on training captions only: a word only in a val caption is <unk>.
  assert "zebracorn" not in first.encoder.vocab

  # A different training set (new words) still gets the saved vocabulary.
  recs = _records(root)
  recs = [Record(r.image_id, r.labels, r.caption + " zebracorn quokka") for r in recs]
  _rewrite(root, recs)
  mtime = os.stat(path).st_mtime_ns
  second = datasets.prepare_comp5329(cfg, workdir)
  assert second.encoder.vocab == first.encoder.vocab
  assert "zebracorn" not in second.encoder.vocab
  assert os.stat(path).st_mtime_ns == mtime
  tokens, length = second.encoder.encode("zebracorn")
  assert length == 1 and tokens[0] == UNK_ID

  # Without a workdir (or in a fresh one) the vocabulary is fitted on the new captions.
  fresh = datasets.prepare_comp5329(cfg, None)
  assert "zebracorn" in fresh.encoder.vocab


def test_val_words_not_in_vocab(root, workdir):
  recs = _records(root)
  recs[-1] = Record(recs[-1].image_id, recs[-1].labels, "A zebracorn on a quokka.")
  _rewrite(root, recs)
  data = datasets.prepare_comp5329(_cfg(root, split="last"), workdir)
  assert "zebracorn" not in data.encoder.vocab and "quokka" not in data.encoder.vocab
  assert (data.val.arrays["tokens"][-1] == UNK_ID).sum() == 2


def test_text_only_needs_no_images(root, workdir):
  shutil.rmtree(os.path.join(root, "data"))
  data = datasets.prepare_comp5329(_cfg(root), workdir, with_images=False)
  for sp in (data.train, data.val):
    assert sp.image_cache is None and sp.image_index is None
    assert set(sp.arrays) == {"tokens", "length", "labels"}
  assert len(data.train) == N_TRAIN - 10
  (b, *_) = iterate(eval_dataset(data.train, batch_size=8), num_threads=1)
  assert "image" not in b and b["tokens"].shape == (8, 12)
  # With images it fails: the folder is gone.
  with pytest.raises(ImageDataError):
    datasets.prepare_comp5329(_cfg(root), workdir)


@pytest.mark.parametrize("caption", ["", "   "])
def test_empty_caption(root, workdir, caption):
  recs = _records(root)
  recs[7] = Record(recs[7].image_id, recs[7].labels, caption)
  _rewrite(root, recs)
  with pytest.raises(CsvFormatError, match=r"7\.jpg") as e:
    datasets.prepare_comp5329(_cfg(root), workdir)
  assert "empty caption" in str(e.value) and "train.csv" in str(e.value)
  assert "skip_bad" in str(e.value)

  data = datasets.prepare_comp5329(_cfg(root, skip_bad=True, split="last"), workdir)
  assert "7.jpg" not in data.train.ids + data.val.ids
  assert len(data.train) + len(data.val) == N_TRAIN - 1
  assert data.skipped == [
    {
      "image_id": "7.jpg",
      "reason": "empty caption",
      "csv": os.path.join(root, "train.csv"),
      "line": 9,
    }
  ]
  with open(os.path.join(workdir, "skipped.json")) as f:
    assert json.load(f) == data.skipped


def test_unlabelled_record_raises(root, workdir):
  recs = _records(root)
  recs[3] = Record(recs[3].image_id, (), recs[3].caption)
  _rewrite(root, recs)
  with pytest.raises(CsvFormatError, match=r"3\.jpg"):
    datasets.prepare_comp5329(_cfg(root, skip_bad=True), workdir)


def test_missing_image(root, workdir):
  os.remove(os.path.join(root, "data", "5.jpg"))  # a train record with split='last'
  os.remove(os.path.join(root, "data", "55.jpg"))  # a val record
  with pytest.raises(ImageDataError) as e:
    datasets.prepare_comp5329(_cfg(root, split="last"), workdir)
  assert "5.jpg" in str(e.value) and "missing" in str(e.value)
  assert not os.path.exists(os.path.join(workdir, "skipped.json"))

  data = datasets.prepare_comp5329(_cfg(root, split="last", skip_bad=True), workdir)
  assert len(data.train) == 49 and len(data.val) == 9
  assert "5.jpg" not in data.train.ids and "55.jpg" not in data.val.ids
  with open(os.path.join(workdir, "skipped.json")) as f:
    skipped = json.load(f)
  assert skipped == data.skipped
  assert sorted(s["image_id"] for s in skipped) == ["5.jpg", "55.jpg"]
  assert all(s["reason"] == "missing" for s in skipped)
  # The remaining rows still line up with their images.
  cache = np.asarray(open_cache(data.train.image_cache))
  i = data.train.ids.index("6.jpg")
  np.testing.assert_array_equal(
    cache[data.train.image_index[i]], load_image(os.path.join(root, "data", "6.jpg"), S)
  )
  recs = {r.image_id: r for r in _records(root)}
  np.testing.assert_array_equal(
    data.train.arrays["labels"][i], comp5329.labels_to_multihot(recs["6.jpg"].labels)
  )


def test_corrupt_image(root, workdir):
  path = os.path.join(root, "data", "2.jpg")
  with open(path, "wb") as f:
    f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
  with pytest.raises(ImageDataError, match=r"2\.jpg"):
    datasets.prepare_comp5329(_cfg(root), workdir)
  data = datasets.prepare_comp5329(_cfg(root, skip_bad=True), workdir)
  assert [s["image_id"] for s in data.skipped] == ["2.jpg"]


def test_truncated_image_names_csv_and_file(root, workdir):
  path = os.path.join(root, "data", "3.jpg")
  data = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(data[: len(data) // 2])  # a download or copy cut short
  with pytest.raises(ImageDataError) as e:
    datasets.prepare_comp5329(_cfg(root), workdir)
  msg = str(e.value)
  assert msg.startswith(os.path.join(root, "train.csv") + ":") and path in msg
  assert "(1 truncated; 1 in train)" in msg and "skip_bad" in msg


def _break_images(root: str) -> dict[str, str]:
  """Four unusable images, two in each split of split='last' / val_size=10: {name: reason}."""
  from PIL import Image

  d = os.path.join(root, "data")
  os.remove(os.path.join(d, "5.jpg"))
  with open(os.path.join(d, "3.jpg"), "r+b") as f:
    f.truncate(os.path.getsize(os.path.join(d, "3.jpg")) // 2)
  with open(os.path.join(d, "52.jpg"), "w") as f:
    f.write("this is a caption, not a picture\n")
  Image.new("RGB", (400, 300), (0, 90, 200)).save(os.path.join(d, "57.jpg"))  # 120,000 pixels
  return {"5.jpg": "missing", "3.jpg": "truncated", "52.jpg": "not an image", "57.jpg": "too large"}


def test_bad_images_of_every_split_are_reported_at_once(root, workdir, caplog):
  broken = _break_images(root)
  csv_path = os.path.join(root, "train.csv")
  cfg = _cfg(root, split="last", max_image_pixels=100_000)  # the synthetic images are 16x16
  with pytest.raises(ImageDataError) as e:
    datasets.prepare_comp5329(cfg, workdir)
  msg = str(e.value)
  assert msg.startswith(f"{csv_path}: 4 image(s) cannot be used (")
  assert "; 2 in train, 2 in val):" in msg
  for name, reason in broken.items():
    line = int(name.split(".")[0]) + 2  # the header is line 1
    split = "train" if int(name.split(".")[0]) < 50 else "val"
    assert f"\n  {split}, line {line}: {os.path.join(root, 'data', name)}: {reason}" in msg, name
  assert "--config.data.max_image_pixels" in msg and "skip_bad" in msg
  assert not os.path.exists(os.path.join(workdir, "skipped.json"))

  caplog.set_level(logging.WARNING, "jaxmm")
  data = datasets.prepare_comp5329(
    _cfg(root, split="last", max_image_pixels=100_000, skip_bad=True), workdir
  )
  assert len(data.train) == 48 and len(data.val) == 8
  assert not set(broken) & set(data.train.ids + data.val.ids)
  with open(os.path.join(workdir, "skipped.json")) as f:
    skipped = json.load(f)
  assert skipped == data.skipped
  by_id = {s["image_id"]: s for s in skipped}
  assert {i: s["reason"] for i, s in by_id.items()} == broken
  for name, s in by_id.items():
    assert s["path"] == os.path.join(root, "data", name) and s["csv"] == csv_path
    assert s["line"] == int(name.split(".")[0]) + 2
    assert s["split"] == ("train" if int(name.split(".")[0]) < 50 else "val")
  assert "JPEG end marker" in by_id["3.jpg"]["detail"]
  assert "b'this is a capt" in by_id["52.jpg"]["detail"]
  assert "400x300 = 120,000 pixels" in by_id["57.jpg"]["detail"]
  (record,) = [r for r in caplog.records if "skipped 4 example(s)" in r.getMessage()]
  assert all(os.path.join(root, "data", name) in record.getMessage() for name in broken)

  # The key is read from the config: at the default the 400x300 image is fine.
  data = datasets.prepare_comp5329(_cfg(root, split="last", skip_bad=True), workdir)
  assert "57.jpg" in data.val.ids and len(data.skipped) == 3


def test_header_only_csv_names_the_file(root, workdir):
  csv_path = os.path.join(root, "train.csv")
  with open(csv_path, "w") as f:
    f.write(comp5329.HEADER_LABELLED + "\n")
  with pytest.raises(
    CsvFormatError,
    match=rf"^{csv_path}: no records: the file holds only its "
    "header",
  ):
    datasets.prepare_comp5329(_cfg(root), workdir)


def test_val_size_larger_than_the_data_names_key_and_file(root, workdir):
  with pytest.raises(
    ValueError,
    match=r"data.val_size=16 asks for 16 validation records, but "
    r".*train\.csv has 12 usable record\(s\)",
  ):
    datasets.prepare_comp5329(_cfg(root, limit=12, val_size=16), workdir)


def test_latin1_csv_names_file_line_and_fix(root, workdir):
  csv_path = os.path.join(root, "train.csv")
  recs = _records(root)
  recs[4] = Record(recs[4].image_id, recs[4].labels, "a cat in a café")
  _rewrite(root, recs)
  with open(csv_path, "rb") as f:
    raw = f.read()
  with open(csv_path, "wb") as f:
    f.write(raw.decode("utf-8").encode("latin-1"))
  with pytest.raises(
    CsvFormatError,
    match=rf"^{csv_path}:6: not UTF-8 text.*iconv -f latin1 "
    "-t utf-8",
  ):
    datasets.prepare_comp5329(_cfg(root), workdir)


# --- matching (S0 layout) ----------------------------------------------------------------------


@pytest.fixture
def match_root(tmp_path) -> str:
  root = make_matching_synthetic(tmp_path / "match", n_train=12, n_val=6, image_size=S, seed=0)
  # Two more pairs on image 3, so one bad image takes three pairs (lines 5, 14, 15) with it.
  with open(root / "train.csv", "a") as f:
    f.write("100,a second caption,3,0\n101,a third caption,3,1\n")
  return str(root)


def _match_cfg(root: str, **kw):
  return _cfg(
    root,
    train_csv="train.csv",
    images_dir="train_images",
    val_csv="val.csv",
    val_images_dir="val_images",
    **kw,
  )


def test_matching_bad_images_of_both_splits_at_once(match_root, workdir):
  os.remove(os.path.join(match_root, "train_images", "3.jpg"))
  with open(os.path.join(match_root, "val_images", "14.jpg"), "w") as f:
    f.write("not a jpeg")
  with pytest.raises(ImageDataError) as e:
    datasets.prepare_matching(_match_cfg(match_root), workdir)
  msg = str(e.value)
  assert msg.startswith(
    "2 image(s) cannot be used (1 missing, 1 not an image; 1 in train, 1 in val):"
  )
  assert (
    f"  train, train.csv lines 5, 14, 15: {os.path.join(match_root, 'train_images', '3.jpg')}"
    ": missing"
  ) in msg
  assert (
    f"  val, val.csv line 4: {os.path.join(match_root, 'val_images', '14.jpg')}: not an "
    "image" in msg
  )

  data = datasets.prepare_matching(_match_cfg(match_root, skip_bad=True), workdir)
  assert len(data.train) == 14 - 3 and len(data.val) == 5
  with open(os.path.join(workdir, "skipped.json")) as f:
    skipped = json.load(f)
  assert [(s["id"], s["image_id"], s["reason"], s["line"], s["split"]) for s in skipped] == [
    ("3", "3", "missing", 5, "train"),
    ("100", "3", "missing", 14, "train"),
    ("101", "3", "missing", 15, "train"),
    ("2", "14", "not an image", 4, "val"),
  ]
  assert skipped[3]["csv"] == os.path.join(match_root, "val.csv")


def test_matching_header_only_csv_names_the_file(match_root, workdir):
  csv_path = os.path.join(match_root, "val.csv")
  with open(csv_path, "w") as f:
    f.write("id,caption,image_id,label\n")
  with pytest.raises(CsvFormatError, match=rf"^{csv_path}: no pairs: the file holds only"):
    datasets.prepare_matching(_match_cfg(match_root), workdir)


def test_odd_but_valid_images_are_kept(root, workdir):
  """Grayscale, CMYK, PNG bytes behind a .jpg name, RGBA, 16-bit: decoded as RGB, none skipped,
  the pixels as the file holds them (exactly for the lossless formats)."""
  from PIL import Image

  odd = {
    "1.jpg": ("L", "JPEG"),
    "2.jpg": ("CMYK", "JPEG"),
    "3.jpg": ("RGB", "PNG"),
    "4.jpg": ("RGBA", "PNG"),
    "5.jpg": ("I;16", "PNG"),
  }
  want = {}
  for name, (mode, fmt) in odd.items():
    path = os.path.join(root, "data", name)
    with Image.open(path) as im:
      im = im.convert("L" if mode == "I;16" else mode)
    want[name] = np.asarray(im.convert("RGB"), np.float64)
    if mode == "I;16":
      im = Image.fromarray(np.asarray(im).astype(np.uint16) * 257)  # the same picture, 16 bits
    im.save(path, format=fmt, quality=95)
  data = datasets.prepare_comp5329(_cfg(root, split="last"), workdir)
  assert data.skipped == [] and len(data.train) + len(data.val) == N_TRAIN
  cache = np.asarray(open_cache(data.train.image_cache))
  for name, (_, fmt) in odd.items():
    got = cache[data.train.image_index[data.train.ids.index(name)]].astype(np.float64)
    err = np.abs(got - want[name]).mean()
    assert err == 0 if fmt == "PNG" else err < 4, (name, err)  # JPEG: its own loss only


def test_missing_images_folder_is_named(root, workdir):
  shutil.rmtree(os.path.join(root, "data"))
  with pytest.raises(
    ImageDataError,
    match=r"the images folder '.*data' of .*train\.csv does not "
    r"exist",
  ):
    datasets.prepare_comp5329(_cfg(root), workdir)


def test_missing_root(tmp_path, workdir):
  missing = str(tmp_path / "no_such_dataset")
  with pytest.raises(FileNotFoundError, match="no_such_dataset"):
    datasets.prepare_comp5329(_cfg(missing), workdir)


def test_missing_csv(root, workdir):
  with pytest.raises(FileNotFoundError, match="nope.csv"):
    datasets.prepare_comp5329(_cfg(root, train_csv="nope.csv"), workdir)


def test_cache_dir_setting(root, workdir, tmp_path):
  cache_dir = tmp_path / "mycache"
  data = datasets.prepare_comp5329(_cfg(root, cache_dir=str(cache_dir)), workdir)
  assert data.train.image_cache.startswith(str(cache_dir) + os.sep)


@pytest.mark.realdata
@requires(os.path.join(COMP5329_DEV, "train.csv"))
def test_real_data_small(workdir):
  data = datasets.prepare_comp5329(_cfg(COMP5329_DEV, limit=24, val_size=4, split="last"), workdir)
  assert len(data.train) == 20 and len(data.val) == 4
  assert data.val.ids == [f"{i}.jpg" for i in range(20, 24)]
  assert np.asarray(open_cache(data.train.image_cache)).shape == (20, S, S, 3)
