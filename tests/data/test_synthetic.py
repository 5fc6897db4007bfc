"""The synthetic data sets: layout, determinism, label/caption rules, a rough difficulty check."""

from __future__ import annotations

import csv
import pathlib

import numpy as np
import pytest
from PIL import Image

from jaxmm.data import synthetic, table
from jaxmm.data.comp5329 import LABEL_IDS, LABEL_NAMES, labels_to_multihot, read_comp5329

N_TRAIN, N_TEST, SIZE = 60, 10, 32


def _make(root: pathlib.Path, seed: int = 0) -> pathlib.Path:
  return synthetic.make_comp5329_synthetic(
    root, n_train=N_TRAIN, n_test=N_TEST, image_size=SIZE, seed=seed
  )


def _files(root: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def comp_root(tmp_path_factory) -> pathlib.Path:
  return _make(tmp_path_factory.mktemp("synth"))


def test_comp5329_layout(comp_root):
  train = read_comp5329(comp_root / "train.csv")
  test = read_comp5329(comp_root / "test.csv")
  assert [r.image_id for r in train] == [f"{i}.jpg" for i in range(N_TRAIN)]
  assert [r.image_id for r in test] == [f"{i}.jpg" for i in range(N_TRAIN, N_TRAIN + N_TEST)]
  assert all(r.labels for r in train) and not any(r.labels for r in test)
  assert all(r.caption.strip() for r in train + test)
  assert len(list((comp_root / "data").iterdir())) == N_TRAIN + N_TEST
  for r in train[:5] + test[:5]:
    with Image.open(comp_root / "data" / r.image_id) as im:
      assert im.format == "JPEG" and im.mode == "RGB" and im.size == (SIZE, SIZE)
  readme = (comp_root / "README.txt").read_text()
  assert "seed=0" in readme and "fire hydrant" in readme


def test_same_seed_byte_identical_and_other_seed_differs(comp_root, tmp_path):
  again = _make(tmp_path / "again")
  assert _files(again) == _files(comp_root)
  other = _files(_make(tmp_path / "other", seed=1))
  base = _files(comp_root)
  assert other["train.csv"] != base["train.csv"]
  assert sum(other[k] != base[k] for k in base if k.endswith(".jpg")) > 0.9 * (N_TRAIN + N_TEST)


def test_examples_do_not_depend_on_count():
  few = [(e, im.tobytes()) for e, im in synthetic.synth_examples(5, image_size=SIZE, seed=3)]
  more = [(e, im.tobytes()) for e, im in synthetic.synth_examples(8, image_size=SIZE, seed=3)]
  assert more[:5] == few


def test_labels_valid(comp_root):
  for r in read_comp5329(comp_root / "train.csv"):
    assert 1 <= len(r.labels) <= 4
    assert len(set(r.labels)) == len(r.labels) and set(r.labels) <= set(LABEL_IDS)


def test_class_table_is_consistent():
  assert sorted(c.label for c in synthetic.CLASSES) == list(LABEL_IDS)
  looks = {(c.colour, c.shape) for c in synthetic.CLASSES}
  assert len(looks) == len(LABEL_IDS)  # every class looks different
  nouns = [n for c in synthetic.CLASSES for n in c.nouns]
  assert len(nouns) == len(set(nouns))
  caption = "A Traffic Light and a busy bus, near a FIRE HYDRANT."
  assert synthetic.mentioned_labels(caption) == {10, 6, 11}
  assert synthetic.mentioned_labels("a carpet in a bustling street") == set()


def test_captions_name_some_but_not_all_objects():
  examples = [e for e, _ in synthetic.synth_examples(500, image_size=8, seed=0)]
  partial = []
  for e in examples:
    named = synthetic.mentioned_labels(e.caption)
    # The noun table reads back exactly what was named: fillers never look like a class.
    assert named == set(e.mentioned) | set(e.decoys)
    assert named & set(e.labels), e
    assert not set(e.decoys) & set(e.labels)
    if len(e.labels) > 1:
      partial.append(not set(e.labels) <= named)
  assert len(partial) > 100 and np.mean(partial) > 0.4
  assert 0.1 < np.mean([bool(e.decoys) for e in examples]) < 0.3


def test_difficulty_knobs(tmp_path):
  easy = synthetic.Difficulty(p_clear=1.0, p_mention=1.0, p_decoy=0.0)
  for e, _ in synthetic.synth_examples(100, image_size=8, seed=0, difficulty=easy):
    assert set(e.modes) == {"clear"} and e.mentioned == e.labels and not e.decoys
  with pytest.raises(ValueError, match="p_decoy"):
    synthetic.Difficulty(p_decoy=1.5)
  assert (
    synthetic.main(
      [
        "--root",
        str(tmp_path),
        "--n_train",
        "3",
        "--n_test",
        "1",
        "--image_size",
        "16",
        "--p_mention",
        "0.9",
      ]
    )
    == 0
  )
  assert "p_mention=0.9" in (tmp_path / "README.txt").read_text()


def test_matching_layout(tmp_path):
  root = synthetic.make_matching_synthetic(
    tmp_path / "a", n_train=40, n_val=20, image_size=SIZE, seed=0
  )
  own = {
    str(i): e.caption for i, (e, _) in enumerate(synthetic.synth_examples(60, image_size=8, seed=0))
  }
  seen_ids: set[str] = set()
  for split, n in (("train", 40), ("val", 20)):
    with open(root / f"{split}.csv", newline="", encoding="utf-8") as f:
      rows = list(csv.reader(f))
    assert rows[0] == ["id", "caption", "image_id", "label"]
    rows = rows[1:]
    assert len(rows) == n and [r[0] for r in rows] == [str(i) for i in range(n)]
    labels = [int(r[3]) for r in rows]
    assert set(labels) <= {0, 1} and 0.2 < np.mean(labels) < 0.8
    for _, caption, image_id, label in rows:
      assert (root / f"{split}_images" / f"{image_id}.jpg").is_file()
      assert (caption == own[image_id]) == (label == "1")
      seen_ids.add(image_id)
  assert len(seen_ids) == 60
  again = synthetic.make_matching_synthetic(
    tmp_path / "b", n_train=40, n_val=20, image_size=SIZE, seed=0
  )
  assert _files(again) == _files(root)


def test_cli(tmp_path):
  assert (
    synthetic.main(
      [
        "--root",
        str(tmp_path),
        "--n_train",
        "4",
        "--n_test",
        "2",
        "--image_size",
        "16",
        "--seed",
        "5",
      ]
    )
    == 0
  )
  assert len(read_comp5329(tmp_path / "train.csv")) == 4
  assert len(list((tmp_path / "data").iterdir())) == 6


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_cli_table_layout_has_the_comp5329_examples_with_label_names(tmp_path, fmt):
  assert (
    synthetic.main(
      [
        "--root",
        str(tmp_path / "t"),
        "--task",
        "table",
        "--format",
        fmt,
        "--n_train",
        "4",
        "--n_test",
        "2",
        "--image_size",
        "16",
      ]
    )
    == 0
  )
  synthetic.make_comp5329_synthetic(tmp_path / "c", n_train=4, n_test=2, image_size=16)
  train = table.read_table(tmp_path / "t" / f"train.{fmt}", need="labels")
  comp = read_comp5329(tmp_path / "c" / "train.csv")
  assert [r.caption for r in train] == [r.caption for r in comp]
  assert [r.labels for r in train] == [tuple(LABEL_NAMES[i] for i in r.labels) for r in comp]
  assert all(pathlib.Path(r.path).is_file() for r in train)
  assert [r.labels for r in table.read_table(tmp_path / "t" / f"test.{fmt}")] == [(), ()]


def _samples_f1(y: np.ndarray, pred: np.ndarray) -> float:
  tp = (y * pred).sum(1)
  return float(np.mean(2 * tp / np.maximum(y.sum(1) + pred.sum(1), 1)))


_CLASS_HUES = np.array(list(synthetic.HUES.values())) * 256 / 360  # PIL's hue runs 0..255


def _colour_counts(image: Image.Image) -> np.ndarray:
  """log(1 + count) of vivid pixels nearest each of the six class hues: colour only, no shape."""
  hsv = np.asarray(image.convert("HSV")).reshape(-1, 3).astype(int)
  hue = hsv[(hsv[:, 1] > 100) & (hsv[:, 2] > 90), 0]
  d = np.abs(hue[:, None] - _CLASS_HUES[None])
  nearest = np.minimum(d, 256 - d).argmin(1)
  return np.log1p(np.bincount(nearest, minlength=len(_CLASS_HUES))).astype(np.float32)


def test_neither_modality_alone_is_perfect():
  sklearn = pytest.importorskip("sklearn.linear_model")
  pairs = list(synthetic.synth_examples(2000, image_size=SIZE, seed=7))
  y = np.stack([labels_to_multihot(e.labels) for e, _ in pairs])
  # Text: predicting exactly the named classes misses unnamed objects and trusts decoys.
  named = np.stack(
    [labels_to_multihot(sorted(synthetic.mentioned_labels(e.caption))) for e, _ in pairs]
  )
  recall = (named * y).sum() / y.sum()
  precision = (named * y).sum() / named.sum()
  assert 0.5 < recall < 0.8 and 0.8 < precision < 0.98
  # Image: colour alone beats the label prior but cannot tell the three shapes of a colour apart.
  x = np.stack([_colour_counts(im) for _, im in pairs])
  n_tr = 1500
  prob = np.zeros((len(x) - n_tr, y.shape[1]))
  for j in range(y.shape[1]):
    if y[:n_tr, j].min() == y[:n_tr, j].max():
      prob[:, j] = y[0, j]
      continue
    clf = sklearn.LogisticRegression(solver="liblinear").fit(x[:n_tr], y[:n_tr, j])
    prob[:, j] = clf.predict_proba(x[n_tr:])[:, 1]
  pred = prob > 0.5
  pred[np.arange(len(pred)), prob.argmax(1)] = True
  f1_image = _samples_f1(y[n_tr:], pred)
  prior = np.zeros_like(y[n_tr:])
  prior[:, 0] = 1  # always "person", the best constant guess
  f1_prior = _samples_f1(y[n_tr:], prior)
  assert f1_prior + 0.05 < f1_image < 0.92, (f1_prior, f1_image)


@pytest.mark.parametrize(
  "args,said",
  [
    (["--image_size", "0"], "--image_size=0: the objects need at least 8 pixels"),
    (["--p_clear", "2"], "--p_clear=2.0: a probability"),
    (["--n_train", "-5"], "--n_train=-5: a count of examples, at least 1"),
    (["--n_test", "-1"], "--n_test=-1: a count of examples, at least 0"),
  ],
)
def test_the_command_refuses_bad_arguments_in_one_line(tmp_path, capsys, args, said):
  with pytest.raises(SystemExit) as e:
    synthetic.main(["--root", str(tmp_path / "syn"), *args])
  assert e.value.code == 2 and said in capsys.readouterr().err
  assert not (tmp_path / "syn").exists()
  (tmp_path / "afile").write_text("x")
  with pytest.raises(SystemExit):
    synthetic.main(["--root", str(tmp_path / "afile")])
  assert "is a file: pass a folder" in capsys.readouterr().err
