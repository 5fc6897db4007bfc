"""The TFDS ArrayRecord image store: file order, bad files in its metadata, sharing, pickling."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import tempfile

import numpy as np
import pytest
from PIL import Image

from jaxmm.data import images, store

S = 16


def _files(folder, n: int = 6) -> list[str]:
  """n distinct real images: JPEGs and PNGs, each a flat colour its index decides."""
  paths = []
  for i in range(n):
    path = os.path.join(folder, f"{i}.{'png' if i % 2 else 'jpg'}")
    Image.fromarray(np.full((24, 20, 3), 30 * i, np.uint8)).save(path)
    paths.append(path)
  return paths


def _loader(paths):
  def load(i):
    try:
      return images.load_image(paths[i], S), None
    except (OSError, ValueError) as e:
      return None, ("undecodable", str(e))

  return load


def test_records_are_the_files_in_order(tmp_path):
  paths = _files(tmp_path)
  folder = store.prepare(str(tmp_path / "cache"), "k", size=S, n=len(paths), load=_loader(paths))
  st = store.ImageStore(folder)
  assert len(st) == len(paths) and st.shape == (len(paths), S, S, 3)
  for i, p in enumerate(paths):
    np.testing.assert_array_equal(st[i], images.load_image(p, S))
  np.testing.assert_array_equal(st[[4, 1]], np.stack([st[4], st[1]]))
  assert st[2:5].shape == (3, S, S, 3) and st[[]].shape == (0, S, S, 3)
  assert st.bad() == []


def test_preparing_leaves_no_folder_in_the_temp_folder(tmp_path, monkeypatch):
  temp = tmp_path / "temp"
  temp.mkdir()
  (temp / "tmpmine_tfds").mkdir()  # someone else's, not empty: kept
  (temp / "tmpmine_tfds" / "f").write_text("x")
  monkeypatch.setattr(tempfile, "tempdir", str(temp))
  paths = _files(tmp_path)
  store.prepare(str(tmp_path / "cache"), "k", size=S, n=len(paths), load=_loader(paths))
  assert sorted(os.listdir(temp)) == ["tmpmine_tfds"]


def test_parts_bound_every_split_and_cover_the_files_in_order():
  bounds = store.part_bounds(12_000, 224)
  assert bounds[0][0] == 0 and bounds[-1][1] == 12_000
  assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
  assert max((b - a) * 224 * 224 * 3 for a, b in bounds) <= store.PART_BYTES < 1000 << 20
  assert store.part_bounds(0, 64) == [(0, 0)] and store.part_bounds(5, 64, 1) == [
    (i, i + 1) for i in range(5)
  ]


def test_a_store_of_several_parts_reads_as_one(tmp_path, monkeypatch):
  monkeypatch.setattr(store, "PART_BYTES", 2 * S * S * 3)  # two images per split
  paths = _files(tmp_path, 5)
  with open(paths[3], "wb") as f:
    f.write(b"not an image")
  folder = store.prepare(str(tmp_path / "c"), "k", size=S, n=5, load=_loader(paths))
  st = store.ImageStore(folder)
  assert len(st) == 5 and len(st._source) == 3
  for i in (0, 1, 2, 4):
    np.testing.assert_array_equal(st[i], images.load_image(paths[i], S))
  np.testing.assert_array_equal(st[1:5], np.stack([st[i] for i in range(1, 5)]))
  np.testing.assert_array_equal(st[-1], st[4])
  assert [b[:2] for b in st.bad()] == [(3, "undecodable")] and not st[3].any()
  with pytest.raises(IndexError, match="out of range"):
    st[5]


def test_bad_files_are_blank_and_listed_with_their_reason(tmp_path):
  paths = _files(tmp_path, 4)
  with open(paths[2], "wb") as f:
    f.write(b"not an image")
  folder = store.prepare(str(tmp_path / "c"), "k", size=S, n=4, load=_loader(paths))
  st = store.ImageStore(folder)
  [(index, reason, detail)] = st.bad()
  assert (index, reason) == (2, "undecodable") and detail
  assert not st[2].any() and st[3].any()


def test_an_existing_store_is_reused_not_rewritten(tmp_path):
  paths = _files(tmp_path, 3)
  folder = store.prepare(str(tmp_path / "c"), "k", size=S, n=3, load=_loader(paths))
  before = {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in os.listdir(folder)}

  def fail(i):
    raise AssertionError("decoded again")

  assert store.prepare(str(tmp_path / "c"), "k", size=S, n=3, load=fail) == folder
  assert before == {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in os.listdir(folder)}


def test_pickles_as_its_folder(tmp_path):
  paths = _files(tmp_path, 3)
  st = store.ImageStore(store.prepare(str(tmp_path / "c"), "k", size=S, n=3, load=_loader(paths)))
  first = st[1]  # opened: the source itself is not what travels
  copy = pickle.loads(pickle.dumps(st))
  assert copy.folder == st.folder and len(pickle.dumps(st)) < 1000
  np.testing.assert_array_equal(copy[1], first)


def _prepare_in_child(args):
  cache, paths, log_path = args

  def load(i):
    with open(log_path, "a") as f:  # one line per decode, whichever process decodes
      f.write(f"{os.getpid()} {i}\n")
    return images.load_image(paths[i], S), None

  return store.prepare(cache, "shared", size=S, n=len(paths), load=load)


@pytest.mark.slow
def test_two_processes_opening_a_new_store_build_it_once(tmp_path):
  paths = _files(tmp_path, 5)
  log = str(tmp_path / "decodes.log")
  args = (str(tmp_path / "c"), paths, log)
  with multiprocessing.get_context("spawn").Pool(2) as pool:
    a, b = pool.map(_prepare_in_child, [args, args])
  assert a == b
  with open(log) as f:
    assert len(f.read().splitlines()) == len(paths)  # every file decoded once in all
  np.testing.assert_array_equal(store.ImageStore(a)[4], images.load_image(paths[4], S))
