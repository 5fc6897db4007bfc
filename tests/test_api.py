"""jaxmm.load(workdir): in-memory images and captions get predict.py's probabilities."""

from __future__ import annotations

import csv
import io
import os

import numpy as np
import pytest
from PIL import Image

import jaxmm
from jaxmm.data import images as images_lib
from jaxmm.train import thresholds as thresholds_lib
from tests.test_own_data import NAMES, SIZES


@pytest.fixture(scope="module")
def trained(own_data_run):
  root, rows, workdir, pred = own_data_run  # predict.py's --probs output on test.csv
  with open(pred, newline="") as f:
    written = list(csv.DictReader(f))
  paths = [
    r["image"] if os.path.isabs(r["image"]) else str(root / r["image"]) for r in rows["test"]
  ]
  return workdir, paths, [r["text"] for r in rows["test"]], written


def test_predict_in_memory_matches_predict_py(trained):
  workdir, paths, texts, written = trained
  model = jaxmm.load(workdir)
  assert model.label_names == sorted(NAMES)
  want = np.array([[float(r[f"p:{n}"]) for n in model.label_names] for r in written])
  by_path = model.predict(paths, texts)
  assert by_path.shape == (SIZES["test"], len(NAMES))
  np.testing.assert_allclose(by_path, want, atol=1e-6)  # predict.py writes 6 decimals
  # The same files as PIL images (opened, not yet decoded) and as uint8 arrays of their pixels.
  np.testing.assert_allclose(
    model.predict([Image.open(p) for p in paths], texts), by_path, atol=1e-6
  )
  arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
  assert arrays[0].shape != (32, 32, 3)  # resized here, as training resized them
  size = model.config.data.image_size
  resized = [images_lib.to_array(Image.fromarray(a), size) for a in arrays]
  np.testing.assert_allclose(model.predict(arrays, texts), model.predict(resized, texts), atol=1e-6)


def test_predict_labels_decides_as_the_workdir(trained):
  workdir, paths, texts, written = trained
  model = jaxmm.load(workdir)
  assert model.thresholds == thresholds_lib.EXPECTED_F1  # own_data's rule
  got = model.predict_labels(paths, texts)
  assert got == [set(r["labels"].split("|")) for r in written]
  # Another rule on request: a threshold every probability passes gives every label.
  assert (
    jaxmm.load(workdir, thresholds="0.0").predict_labels(paths[:2], texts[:2]) == [set(NAMES)] * 2
  )


def test_bad_calls_say_what_to_pass(trained):
  workdir, paths, texts, _ = trained
  model = jaxmm.load(workdir)
  with pytest.raises(ValueError, match="2 images but 1 texts"):
    model.predict(paths[:2], texts[:1])
  with pytest.raises(ValueError, match="pass texts="):
    model.predict(paths[:1])
  with pytest.raises(ValueError, match=r"images\[0\]: expected a path, a PIL image or a uint8"):
    model.predict([np.zeros((8, 8, 3), np.float32)], texts[:1])
  with pytest.raises(TypeError, match=r"texts\[0\] is a int"):
    model.predict(paths[:1], [3])
  assert model.predict([], []).shape == (0, len(NAMES))
  assert model.predict_labels([], []) == []
  with pytest.raises(ValueError, match=r"images\[0\] has no pixels"):
    model.predict([np.zeros((0, 0, 3), np.uint8)], texts[:1])


def test_the_callers_images_are_left_as_they_were(trained, tmp_path):
  workdir, paths, texts, _ = trained
  model = jaxmm.load(workdir)
  big = str(tmp_path / "big.jpg")  # large enough for a reduced-scale JPEG decode at 32 px
  Image.open(paths[0]).convert("RGB").resize((200, 160)).save(big)
  by_path = model.predict([big], texts[:1])
  opened = Image.open(big)
  np.testing.assert_allclose(model.predict([opened], texts[:1]), by_path, atol=1e-6)
  assert opened.size == (200, 160)
  with open(big, "rb") as f:
    in_memory = Image.open(io.BytesIO(f.read()))
  assert model.predict([in_memory], texts[:1]).shape == by_path.shape
  assert in_memory.size == (200, 160) and np.asarray(in_memory).shape == (160, 200, 3)
  # texts as a numpy array (a DataFrame column's values)
  np.testing.assert_allclose(model.predict([big], np.array(texts[:1])), by_path, atol=1e-6)


def test_a_damaged_workdir_raises_one_error_and_prints_nothing_else(trained, tmp_path):
  import shutil
  import subprocess
  import sys

  workdir = str(tmp_path / "run")
  shutil.copytree(trained[0], workdir)
  for which in ("best", "latest"):  # the largest file of each step cut short (a full disk)
    for step in os.listdir(os.path.join(workdir, "checkpoints", which)):
      folder = os.path.join(workdir, "checkpoints", which, step)
      files = [os.path.join(d, n) for d, _, names in os.walk(folder) for n in names]
      with open(max(files, key=os.path.getsize), "r+b") as f:
        f.truncate(100)
  with pytest.raises(ValueError, match="which='foo'"):
    jaxmm.load(workdir, which="foo")
  load = f"jaxmm.load({workdir!r})"
  code = (  # a notebook goes on: the reads in flight end and are collected
    f"import gc, time, jaxmm\ntry:\n  {load}\nexcept RuntimeError as e:\n  print('raised', e)\n"
    "time.sleep(3)\ngc.collect()"
  )
  proc = subprocess.run(
    [sys.executable, "-c", code],
    capture_output=True,
    text=True,
    timeout=600,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )
  assert proc.stdout.startswith("raised no checkpoint of"), proc.stderr[-2000:]
  # orbax's read coroutines, collected later, printed thousands of lines of TensorStore errors
  assert not proc.stderr.strip(), proc.stderr[:2000]
