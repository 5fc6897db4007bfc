"""A user's own data in the plain table layout: configs/own_data.py trains on it, evaluate.py and
predict.py read its tables, and every output speaks of its label names."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from jaxmm import inference, tasks
from jaxmm.configs import own_data
from jaxmm.data import datasets, labels, table
from jaxmm.data import images as images_lib
from jaxmm.data.images import open_cache
from jaxmm.data.pipeline import PreparedSplit
from jaxmm.train import thresholds as thresholds_lib
from tests.conftest import ROOT

NAMES = ("red car", "blue sky", "cat", "dog", "traffic light")
COLOURS = {
  "red car": (220, 30, 30),
  "blue sky": (40, 80, 230),
  "cat": (240, 200, 40),
  "dog": (40, 200, 60),
  "traffic light": (200, 40, 220),
}
SIZES = {"train": 40, "val": 12, "test": 6}


def _image(path: str, names, rng: random.Random) -> None:
  """A grey picture with a block of each label's colour; JPEG or PNG by the file's extension."""
  im = Image.new("RGB", (24, 24), (120, 120, 120))
  draw = ImageDraw.Draw(im)
  for name in names:
    x, y = rng.randrange(0, 14), rng.randrange(0, 14)
    draw.rectangle([x, y, x + 9, y + 9], fill=COLOURS[name])
  os.makedirs(os.path.dirname(path), exist_ok=True)
  im.save(path)


def make_own_data(root) -> dict[str, list[dict]]:
  """train/val/test rows of the 5 labels, images at several depths (JPEG and PNG, one named by an
  absolute path), written as train.jsonl, val.jsonl, test.jsonl and test.csv."""
  rng = random.Random(0)
  rows = {}
  for split, n in SIZES.items():
    rows[split] = []
    for i in range(n):
      names = rng.sample(NAMES, rng.choice((1, 1, 2)))
      ext = "png" if i % 2 else "jpg"
      image = f"pics/{split}/{i % 3}/deep/img {i}.{ext}" if i % 4 else f"{split}_{i}.{ext}"
      _image(os.path.join(root, image), names, rng)
      if split == "test" and i == 1:
        image = os.path.join(root, image)  # an absolute path
      text = f"a photo of {' and '.join(names)}, outside"  # commas: quoted in the CSV
      rows[split].append({"image": image, "text": text, "labels": " | ".join(names)})
    table.write_table(
      os.path.join(root, f"{split}.jsonl"), rows[split], ("image", "text", "labels")
    )
  table.write_table(os.path.join(root, "test.csv"), rows["test"], ("image", "text", "labels"))
  return rows


def _config(root):
  c = own_data.get_config()
  c.data.root = str(root)
  c.data.image_size = 32
  c.data.num_threads = 1
  c.model.image.update(num_filters=8, conv_impl="im2col")
  c.model.text.update(embed_dim=16, hidden_size=16)
  c.model.head.hidden = (16,)
  c.train.update(batch_size=8, eval_batch_size=16, epochs=1, log_every=2, progress_bar=False)
  return c


def _run(args):
  proc = subprocess.run(
    [sys.executable, *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def test_own_data_trains_evaluates_and_predicts_label_names(own_data_run, tmp_path):
  root, rows, workdir, pred = own_data_run  # trained once for this file and tests/test_api.py
  want = tuple(sorted(NAMES))
  assert labels.load(os.path.join(workdir, "labels.json")).names == want
  report = open(os.path.join(workdir, "report.md")).read()
  assert "| 3 | red car |" in report and "| 4 | traffic light |" in report

  # evaluate.py on the labelled test table: per-class rows by name.
  out = tmp_path / "eval.json"
  test_jsonl = str(root / "test.jsonl")
  proc = _run(["evaluate.py", "--workdir", workdir, "--csv", test_jsonl, "--out", str(out)])
  metrics = json.loads(out.read_text())
  assert metrics["n_examples"] == SIZES["test"] and "traffic light" in proc.stdout
  assert [r["name"] for r in metrics["per_class"]] == list(want)

  # predict.py on the CSV copy, with probabilities: the input's image and text, label names.
  with open(pred, newline="") as f:
    got = list(csv.DictReader(f))
  assert list(got[0]) == ["image", "text", "labels"] + [f"p:{n}" for n in want]
  assert [(r["image"], r["text"]) for r in got] == [(r["image"], r["text"]) for r in rows["test"]]
  probs = np.array([[float(r[f"p:{n}"]) for n in want] for r in got])
  assert probs.shape == (SIZES["test"], len(NAMES)) and ((probs >= 0) & (probs <= 1)).all()
  chosen = [set(r["labels"].split("|")) for r in got]
  assert all(c and c <= set(NAMES) for c in chosen)
  # own_data decides by expected F1: the written labels are that rule's on the written probs.
  rule = thresholds_lib.expected_f1_predictions(probs)
  assert chosen == [{want[i] for i in np.flatnonzero(row)} for row in rule]

  # In JSONL, as the library writes it for a .jsonl --out.
  restored = inference.restore(workdir)
  assert restored.label_names == want and restored.task.num_outputs() == len(NAMES)
  split, skipped = inference.read_split(
    restored,
    test_jsonl,
    os.path.dirname(test_jsonl),
    labelled=False,
    skip_bad=False,
    skip_hint="",
  )
  jsonl = str(tmp_path / "pred.jsonl")
  inference.write_predictions(restored, jsonl, test_jsonl, split, skipped, with_probs=True)
  lines = [json.loads(x) for x in open(jsonl)]
  assert [x["labels"] for x in lines] == [r["labels"] for r in got]
  assert list(lines[0]) == list(got[0])
  # Both written with 6 decimals, by two processes: a last-digit rounding may differ.
  np.testing.assert_allclose([[x[f"p:{n}"] for n in want] for x in lines], probs, atol=1.5e-6)

  # A test label outside the workdir's set names the file, row and label.
  bad = [dict(rows["test"][0]), dict(rows["test"][1], labels="cat|zebra")]
  table.write_table(tmp_path / "bad.jsonl", bad, ("image", "text", "labels"))
  with pytest.raises(labels.UnknownLabelError, match=r"bad\.jsonl:2: label 'zebra' is not in"):
    inference.split_from_csv(restored, str(tmp_path / "bad.jsonl"), str(root), labelled=True)


def test_csv_and_jsonl_tables_prepare_the_same_arrays(tmp_path):
  root = tmp_path / "mine"
  rows = make_own_data(str(root))
  as_csv = tmp_path / "as_csv"
  as_csv.mkdir()
  for split in ("train", "val"):
    moved = [dict(r, image=f"../mine/{r['image']}") for r in rows[split]]
    table.write_table(as_csv / f"{split}.csv", moved, ("image", "text", "labels"))
  a = datasets.prepare_multilabel(_config(root).data, None)
  b = datasets.prepare_multilabel(_config(as_csv).data, None)
  assert a.labels == b.labels and a.labels.names == tuple(sorted(NAMES))
  for x, y in ((a.train, b.train), (a.val, b.val)):
    for key in x.arrays:
      np.testing.assert_array_equal(x.arrays[key], y.arrays[key], err_msg=key)
    np.testing.assert_array_equal(
      open_cache(x.image_cache)[x.image_index], open_cache(y.image_cache)[y.image_index]
    )


def test_matching_table_predictions_write_match_and_its_probability(tmp_path):
  root = tmp_path / "pairs"
  rows = make_own_data(str(root))
  pairs = [
    {"image": r["image"], "text": r["text"], "match": i % 2}
    for i, r in enumerate(rows["train"] + rows["val"])
  ]
  table.write_table(root / "train.csv", pairs, ("image", "text", "match"))
  os.remove(root / "train.jsonl")
  os.remove(root / "val.jsonl")
  config = _config(root)
  config.task = "matching"
  config.train.update(loss="ce", tune_thresholds="global", select_metric="val_accuracy")
  config.data.val_size = 6
  task = tasks.make(config)
  task.check_config()
  data = task.load_data(None)
  assert len(data.train) + len(data.val) == len(pairs)
  assert set(data.val.arrays["label"]) <= {0, 1} and data.train.image_cache
  source = str(root / "unlabelled.csv")
  unlabelled = [{"image": p["image"], "text": p["text"]} for p in pairs[:4]]
  table.write_table(source, unlabelled, ("image", "text"))
  split = task.split_from_csv(data.encoder, source, str(root), labelled=False)
  assert not task.csv_is_labelled(source) and task.csv_is_labelled(str(root / "train.csv"))
  labelled = task.split_from_csv(data.encoder, str(root / "train.csv"), str(root), labelled=True)
  assert labelled.arrays["label"].tolist() == [p["match"] for p in pairs]
  assert task.default_images_dir(source) == str(root) and task.output_names() == ("match",)
  out = str(tmp_path / "pairs.csv")
  task.write_predictions(
    out, split, np.array([0.9, 0.2, 0.6, 0.4]), 0.5, source=source, with_probs=True, skipped=None
  )
  with open(out, newline="") as f:
    got = list(csv.DictReader(f))
  assert [(r["match"], r["p:match"]) for r in got] == [
    ("1", "0.9"),
    ("0", "0.2"),
    ("1", "0.6"),
    ("0", "0.4"),
  ]
  assert [r["image"] for r in got] == [p["image"] for p in pairs[:4]]
  # A row left out for a bad image keeps its place, with no decision.
  task.write_predictions(
    out,
    PreparedSplit(split.ids[1:], None, None, {}),
    np.array([0.2, 0.6, 0.4]),
    0.5,
    source=source,
    skipped={0: pairs[0]["image"]},
  )
  with open(out, newline="") as f:
    assert [r["match"] for r in csv.DictReader(f)] == ["", "0", "1", "0"]


def test_the_corrected_data_of_a_run_that_failed_early_gets_its_own_vocab_and_labels(tmp_path):
  """A run that stops before its first checkpoint (too few rows for a batch) has written
  vocab.json and labels.json; the corrected data in the same workdir must not inherit them."""
  from configs import tiny
  from jaxmm.recipes import standard

  root, workdir = tmp_path / "mine", str(tmp_path / "run")
  rows = make_own_data(str(root))
  os.remove(root / "val.jsonl")
  few = rows["train"][:6]
  table.write_table(root / "train.jsonl", few, ("image", "text", "labels"))
  c = tiny.get_config()
  c.data.update(root=str(root), image_size=16, val_size=0)
  c.model.mode = "text"  # compiles fast
  c.train.update(batch_size=8, max_steps=1, report=False)
  with pytest.raises(ValueError, match="no full batch"):
    standard.train_and_evaluate(c, workdir)
  assert os.path.exists(os.path.join(workdir, "vocab.json"))  # derived before the batch check
  assert labels.for_workdir(workdir).names == tuple(
    sorted({n.strip() for r in few for n in r["labels"].split("|")})
  )
  more = [dict(r, text=f"a kitten near {r['text']}", labels="kitten") for r in rows["train"][6:]]
  table.write_table(root / "train.jsonl", few + more, ("image", "text", "labels"))
  assert standard.train_and_evaluate(c, workdir)["step"] == 1
  assert "kitten" in labels.for_workdir(workdir).names
  with open(os.path.join(workdir, "vocab.json")) as f:
    assert "kitten" in json.dumps(json.load(f))


def test_a_header_only_table_predicts_a_header_only_file(tmp_path):
  root = tmp_path / "mine"
  make_own_data(str(root))
  config = _config(root)
  task = tasks.make(config)
  task.check_config()
  data = task.load_data(None)
  probs = ",".join(f"p:{n}" for n in sorted(NAMES))
  for name, content, want in (
    ("head.csv", "image,text\n", [f"image,text,labels,{probs}"]),
    ("empty.jsonl", "", []),
  ):
    source = root / name
    source.write_text(content)
    split = task.split_from_csv(data.encoder, str(source), str(root), labelled=False)
    assert len(split) == 0 and split.image_cache.shape == (0, 32, 32, 3)
    out = tmp_path / f"out_{name}"
    none = np.zeros((0, len(NAMES)), np.float32)
    task.write_predictions(str(out), split, none, 0.5, source=str(source), with_probs=True)
    assert out.read_text().splitlines() == want


def test_labels_joined_by_another_separator_are_logged_and_warned(tmp_path, caplog):
  root = tmp_path / "mine"
  rows = make_own_data(str(root))
  os.remove(root / "val.jsonl")
  joined = [dict(r, labels=r["labels"].replace(" | ", ",")) for r in rows["train"]]
  table.write_table(root / "train.csv", joined, ("image", "text", "labels"))
  os.remove(root / "train.jsonl")
  config = _config(root)
  config.data.val_size = 8
  with caplog.at_level("INFO", logger="jaxmm"):
    data = datasets.prepare_multilabel(config.data, None, with_images=False)
  combined = [n for n in data.labels.names if "," in n]
  assert combined  # read as asked (data.label_sep='|'), and said
  said = [r.getMessage() for r in caplog.records]
  assert any(f"{len(data.labels)} labels" in m and "32 train and 8 val rows" in m for m in said)
  warned = [m for m in said if "--config.data.label_sep=','" in m]
  assert len(warned) == 1 and repr(combined[0]) in warned[0]
  config.data.label_sep = ","
  caplog.clear()
  with caplog.at_level("INFO", logger="jaxmm"):
    data = datasets.prepare_multilabel(config.data, None, with_images=False)
  assert data.labels.names == tuple(sorted(NAMES))
  assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_skip_bad_that_empties_a_split_stops_at_once(tmp_path):
  root = tmp_path / "mine"
  rows = make_own_data(str(root))
  for r in rows["val"]:  # every val image gone
    os.remove(r["image"] if os.path.isabs(r["image"]) else root / r["image"])
  config = _config(root)
  config.data.skip_bad = True
  with pytest.raises(images_lib.ImageDataError, match=r"^val \(.*val\.jsonl\): no example is le"):
    datasets.prepare_multilabel(config.data, None)
