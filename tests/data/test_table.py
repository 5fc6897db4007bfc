"""The plain table layout (jaxmm/data/table.py), label sets (jaxmm/data/labels.py) and how a
dataset folder's layout is told and checked against the task."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from jaxmm import tasks
from jaxmm.configs import default
from jaxmm.data import comp5329, datasets, labels, table
from jaxmm.data.images import open_cache
from jaxmm.data.synthetic import (
  make_comp5329_synthetic,
  make_matching_synthetic,
  make_table_synthetic,
)
from tests.conftest import COMP5329_DEV, requires

CSV_TEXT = (
  "image,text,labels\n"
  'a/1.jpg,"a cat, on a mat",cat\n'
  '/abs/2.png,"two\nlines ""quoted""", red car | cat |\n'
  "\n"
  "3.jpg,plain,\n"
)


def _write(path, text: str) -> str:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding="utf-8")
  return str(path)


def test_csv_rows_quoted_fields_labels_and_paths(tmp_path):
  path = _write(tmp_path / "t" / "train.csv", CSV_TEXT)
  rows = table.read_table(path, need="labels")
  assert [r.image_id for r in rows] == ["a/1.jpg", "/abs/2.png", "3.jpg"]
  assert [r.caption for r in rows] == ["a cat, on a mat", 'two\nlines "quoted"', "plain"]
  assert [r.labels for r in rows] == [("cat",), ("red car", "cat"), ()]
  assert [r.line for r in rows] == [2, 3, 6]
  assert rows[0].path == str(tmp_path / "t" / "a" / "1.jpg") and rows[1].path == "/abs/2.png"
  assert table.read_table(path, base_dir="/imgs")[2].path == "/imgs/3.jpg"


def test_jsonl_rows_take_lists_or_joined_names_and_match_values(tmp_path):
  lines = [
    {"image": "x.png", "text": "t", "labels": ["red car", "dog"]},
    {"image": "y.jpg", "text": "u", "labels": "dog;cat", "match": True},
  ]
  path = _write(tmp_path / "d.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
  rows = table.read_table(path, table.Columns(), ";", need="labels")
  assert [r.labels for r in rows] == [("red car", "dog"), ("dog", "cat")]
  assert [r.label for r in rows] == [None, 1]
  assert table.file_columns(path) == ["image", "text", "labels"]


@pytest.mark.parametrize(
  "name,text,match",
  [
    (
      "t.csv",
      "image,text,tags\nx.jpg,t,a\n",
      r"t\.csv:1: no column 'labels' \(data\.columns\."
      r"labels\); its columns are 'image', 'text', 'tags'.*--config\.data\.columns\.labels=",
    ),
    (
      "t.jsonl",
      '{"image": "x.jpg", "text": "t", "labels": "a"}\n{"image": "y.jpg", "txt": "","labels": ""}',
      r"t\.jsonl:2: no key 'text' \(data\.columns\.text\); its keys are 'image', 'txt', 'labels'",
    ),
    (
      "t.jsonl",
      '{"image": "x.jpg", "text": "t", "labels": ""}\n{"image": "y.jpg", "text": \n',
      r"t\.jsonl:2: not a JSON object",
    ),
    ("t.jsonl", '["x.jpg", "t"]\n', r"t\.jsonl:1: a JSONL row must be a JSON object"),
    ("t.csv", "image,text,labels\nx.jpg,a, b,c\n", r"t\.csv:2: 4 fields, expected 3"),
    ("t.csv", "image,text,labels\n,t,a\n", r"t\.csv:2: the 'image' column must name an image"),
    ("t.csv", "image,text,image\nx,t,a\n", r"t\.csv:1: column\(s\) \['image'\] appear more than"),
    (
      "t.jsonl",
      '{"image": "x.jpg", "text": "t", "labels": [1.5]}\n',
      r"t\.jsonl:1: the 'labels' "
      "list must hold label names",
    ),
    ("t.jsonl", '{"image": "x.jpg", "text": "t", "labels": ["a|b"]}\n', r"hold the separator"),
    (
      "t.csv",
      "image;text;labels\nx.jpg;t;a\n",
      r"t\.csv:1: no column .*The header holds ';' .* not comma-separated",
    ),
    ("t.csv", "image,text,labels,match\nx.jpg,t,a,2\n", r"t\.csv:2: the 'match' column must be 0"),
  ],
)
def test_bad_tables_name_file_line_and_key(tmp_path, name, text, match):
  with pytest.raises(table.TableFormatError, match=match):
    table.read_table(_write(tmp_path / name, text), need="labels")


def test_a_trained_runs_file_missing_a_column_is_told_the_runs_columns(tmp_path):
  # evaluate.py / predict.py read with the workdir's columns: no --config flag to offer there.
  path = tmp_path / "t.csv"
  path.write_text("image,text,tags\nx.jpg,t,a\n")
  with pytest.raises(table.TableFormatError) as e:
    table.read_table(path, need="labels", trained=True)
  assert "no column 'labels'" in str(e.value) and "trained with these columns" in str(e.value)
  assert "--config" not in str(e.value)


def test_label_names_read_numbers_and_one_unicode_form_and_long_captions(tmp_path):
  rows = [
    {"image": "a.jpg", "text": "t", "labels": [1, 2]},
    {"image": "b.jpg", "text": "t", "labels": 3},
    {"image": "c.jpg", "text": "t", "labels": ["cafe\u0301", "caf\u00e9|x"]},
  ]
  path = tmp_path / "t.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  with pytest.raises(table.TableFormatError, match="hold the separator"):
    table.read_table(path, need="labels")
  rows[2]["labels"] = ["cafe\u0301", "caf\u00e9"]  # 'café' decomposed, and composed
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  got = [r.labels for r in table.read_table(path, need="labels")]
  assert got == [("1", "2"), ("3",), ("caf\u00e9", "caf\u00e9")]
  assert labels.from_config(["cafe\u0301"], "|").names == ("caf\u00e9",)
  long = "word " * 40_000  # 200,000 characters: over csv's default field cap
  csv_path = tmp_path / "long.csv"
  table.write_table(
    csv_path, [{"image": "a.jpg", "text": long, "labels": "x"}], ("image", "text", "labels")
  )
  assert table.read_table(csv_path, need="labels")[0].caption == long


def test_layout_of_a_file(tmp_path):
  assert table.layout_of_file(_write(tmp_path / "a.csv", "ImageID,Labels,Caption\n")) == "comp5329"
  assert table.layout_of_file(_write(tmp_path / "b.csv", "ImageID,Caption\r\n")) == "comp5329"
  assert table.layout_of_file(_write(tmp_path / "c.csv", "id,caption,image_id\n")) == "matching"
  assert table.layout_of_file(_write(tmp_path / "d.csv", "image,text\n")) == "table"
  assert table.layout_of_file(_write(tmp_path / "e.jsonl", "")) == "table"


def test_label_sets_sort_names_and_numbers():
  assert labels.sort_names(["dog", "cat", "red car", "cat"]) == ("cat", "dog", "red car")
  assert labels.sort_names(["10", "2", "1"]) == ("1", "2", "10")
  assert labels.sort_names(["10", "2", "b"]) == ("10", "2", "b")
  # equal values written two ways: one order whatever the set's iteration order
  assert (
    labels.sort_names(["1", "01", "2"])
    == labels.sort_names(["2", "01", "1"])
    == (
      "01",
      "1",
      "2",
    )
  )
  ls = labels.LabelSet(names=("cat", "red car"))
  np.testing.assert_array_equal(ls.multihot(["red car"]), [0, 1])
  assert ls.names_of([1, 1]) == ("cat", "red car") and ls.unknown(["cat", "zebra"]) == ["zebra"]
  assert labels.LabelSet.from_json(json.loads(json.dumps(ls.to_json()))) == ls
  # COMP5329's set takes names and ids alike.
  np.testing.assert_array_equal(
    labels.COMP5329.multihot(["3", "person"]), comp5329.labels_to_multihot([3, 1])
  )
  with pytest.raises(ValueError, match="appear twice"):
    labels.LabelSet(names=("a", "a"))
  with pytest.raises(ValueError, match=r"data\.labels holds name\(s\) \['a\|b', ' c'\]"):
    labels.from_config(["a|b", " c", "d"], "|")


def _cfg(root, **data):
  c = default.get_config()
  c.data.root = str(root)
  c.data.image_size = 16
  c.data.max_len = 12
  c.data.val_size = 4
  c.data.update(data)
  return c


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  base = tmp_path_factory.mktemp("layouts")
  out = {
    "comp": make_comp5329_synthetic(base / "comp", n_train=24, n_test=2, image_size=16),
    "table": make_table_synthetic(base / "table", n_train=24, n_test=2, image_size=16),
    "matching": make_matching_synthetic(base / "matching", n_train=12, n_val=4, image_size=16),
  }
  return {k: str(v) for k, v in out.items()}


def test_table_layout_prepares_what_the_comp5329_layout_does(folders, tmp_path):
  """The synthetic COMP5329 examples written as a table (label names, images/ folder) give the
  same label set and the same prepared arrays and images: the layout changes nothing."""
  comp = datasets.prepare_multilabel(_cfg(folders["comp"]).data, None)
  named = datasets.prepare_multilabel(
    _cfg(folders["table"], labels=labels.COMP5329.names).data, None
  )
  assert comp.labels == labels.COMP5329 and named.labels.names == labels.COMP5329.names
  for a, b in ((comp.train, named.train), (comp.val, named.val)):
    assert [f"images/{i}" for i in a.ids] == b.ids
    assert a.arrays.keys() == b.arrays.keys()
    for key in a.arrays:
      np.testing.assert_array_equal(a.arrays[key], b.arrays[key], err_msg=key)
    np.testing.assert_array_equal(
      open_cache(a.image_cache)[a.image_index], open_cache(b.image_cache)[b.image_index]
    )
  # Without data.labels, the set is the training file's names, sorted.
  sorted_set = datasets.label_set_of(_cfg(folders["table"]).data)
  assert sorted_set.names == _present_names(folders["comp"])
  # Ids as label names sort as numbers: COMP5329's order again.
  ids_table = tmp_path / "ids"
  ids_table.mkdir()
  rows = [
    {
      "image": os.path.join(folders["comp"], "data", r.image_id),
      "text": r.caption,
      "labels": "|".join(str(i) for i in r.labels),
    }
    for r in comp5329.read_comp5329(os.path.join(folders["comp"], "train.csv"))
  ]
  table.write_table(ids_table / "train.csv", rows, ("image", "text", "labels"))
  by_ids = datasets.prepare_multilabel(_cfg(ids_table).data, None, with_images=False)
  assert "header is 'image,text,labels'" in _load_error(_cfg(ids_table, layout="comp5329"))
  present = {
    i for r in comp5329.read_comp5329(os.path.join(folders["comp"], "train.csv")) for i in r.labels
  }
  assert by_ids.labels.names == tuple(str(i) for i in comp5329.LABEL_IDS if i in present)
  columns = [k for k, i in enumerate(comp5329.LABEL_IDS) if i in present]
  np.testing.assert_array_equal(
    by_ids.train.arrays["labels"], comp.train.arrays["labels"][:, columns]
  )


def _present_names(comp_root) -> tuple[str, ...]:
  records = comp5329.read_comp5329(os.path.join(comp_root, "train.csv"))
  return tuple(sorted({comp5329.LABEL_NAMES[i] for r in records for i in r.labels}))


def _load_error(config) -> str:
  with pytest.raises((ValueError, FileNotFoundError)) as e:
    tasks.make(config).load_data(None, with_images=False)
  return str(e.value)


def test_a_folder_of_the_other_task_names_the_layout_and_the_key(folders):
  message = _load_error(_matching(folders["comp"]))
  assert "holds the COMP5329 layout" in message and "--config.task=multilabel" in message
  message = _load_error(_matching(folders["table"]))
  assert "is a multi-label table (columns 'image', 'text', 'labels')" in message
  assert "--config.task=multilabel" in message and "--config.data.columns.match=NAME" in message
  message = _load_error(_cfg(folders["matching"]))
  assert "holds the S0 matching layout" in message and "--config.task=matching" in message
  # A pretext run reads its images through the data task that pretext.data names.
  rotation = _cfg(folders["comp"], image_size=16)
  rotation.task, rotation.pretext.data = "rotation", "matching"
  message = _load_error(rotation)
  assert "holds the COMP5329 layout" in message and "--config.pretext.data=comp5329" in message
  forced = _cfg(folders["comp"], layout="matching")
  assert "data.layout='matching' does not fit task 'multilabel'" in _load_error(forced)
  assert "has no train.csv: it holds" in _load_error(_cfg(folders["table"], layout="comp5329"))
  assert "data.labels fixes the label set of a table" in _load_error(
    _cfg(folders["comp"], labels=("person",))
  )


def _matching(root):
  c = _cfg(root)
  c.task, c.train.loss = "matching", "ce"
  return c


def test_missing_training_file_and_bad_config_keys(tmp_path):
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "notes.txt").write_text("x")
  message = _load_error(_cfg(tmp_path / "empty"))
  assert "has no train.jsonl or train.csv: it holds notes.txt" in message
  assert "data.root is not set" in _load_error(_cfg(""))
  for key, value, match in (
    ("layout", "tsv", r"data\.layout='tsv' is not one of"),
    ("label_sep", " ", "a separator that is not empty and not a space"),
  ):
    with pytest.raises(ValueError, match=match):
      tasks.make(_cfg(tmp_path, **{key: value})).check_config()
  both = tmp_path / "both"
  _write(both / "train.csv", "image,text,labels\n")
  _write(both / "train.jsonl", "")
  assert "holds both train.jsonl and train.csv" in _load_error(_cfg(both))


def _own(root, train_rows, val_rows=None):
  root.mkdir(parents=True, exist_ok=True)
  table.write_table(root / "train.jsonl", train_rows, ("image", "text", "labels"))
  if val_rows is not None:
    table.write_table(root / "val.jsonl", val_rows, ("image", "text", "labels"))
  return root


def test_unknown_labels_name_file_row_and_label(tmp_path):
  train = [{"image": f"{i}.jpg", "text": "t", "labels": "cat|dog"} for i in range(4)]
  val = [
    {"image": "a.jpg", "text": "t", "labels": "cat"},
    {"image": "b.jpg", "text": "t", "labels": "dog|zebra"},
  ]
  root = _own(tmp_path / "own", train, val)
  message = _load_error(_cfg(root))
  assert message.startswith(f"{root / 'val.jsonl'}:2: label 'zebra' is not in the label set")
  assert "2 labels from the label names of" in message and "'cat', 'dog'" in message
  fixed = _cfg(root, labels=("cat",))
  message = _load_error(fixed)
  assert f"{root / 'train.jsonl'}:1: label 'dog' is not in the label set" in message
  assert "(3 more row(s) have unknown labels too)" in message and "add it to data.labels" in message
  empty = _own(tmp_path / "nolabels", [{"image": "x.jpg", "text": "t", "labels": ""}])
  assert "no row has a label" in _load_error(_cfg(empty))


def test_labels_json_is_kept_for_a_resumed_run(tmp_path, folders):
  workdir = tmp_path / "run"
  workdir.mkdir()
  config = _cfg(folders["table"])
  task = tasks.make(config)
  task.load_data(str(workdir), with_images=False)
  saved = labels.load(str(workdir / "labels.json"))
  assert saved.names == _present_names(folders["comp"])
  assert task.num_outputs() == len(saved.names)
  # A resumed run keeps the saved set (and head size) even when data.labels now says otherwise.
  config.data.labels = ("person", "car")
  with pytest.raises(ValueError, match="use a new --workdir for another label set"):
    tasks.make(config).load_data(str(workdir), with_images=False)
  # COMP5329 data saves its own set, ids included; a workdir without labels.json is COMP5329's.
  comp_dir = tmp_path / "comp"
  comp_dir.mkdir()
  tasks.make(_cfg(folders["comp"])).load_data(str(comp_dir), with_images=False)
  assert labels.load(str(comp_dir / "labels.json")) == labels.COMP5329
  assert labels.for_workdir(str(tmp_path)) == labels.COMP5329


@pytest.mark.realdata
@requires(os.path.join(COMP5329_DEV, "train.csv"))
def test_real_comp5329_folder_is_read_as_before(tmp_path):
  config = _cfg(COMP5329_DEV, limit=24, val_size=4, split="last")
  assert table.find_layout(config.data, "multilabel").name == "comp5329"
  before = datasets.prepare_comp5329(config.data, None)
  task = tasks.make(config)
  now = task.load_data(None)
  assert now.labels == labels.COMP5329 and task.num_outputs() == 18
  for a, b in ((before.train, now.train), (before.val, now.val)):
    assert a.ids == b.ids and a.image_cache == b.image_cache
    for key in a.arrays:
      np.testing.assert_array_equal(a.arrays[key], b.arrays[key], err_msg=key)
  test_csv = os.path.join(COMP5329_DEV, "test.csv")
  assert task.default_images_dir(test_csv) == os.path.join(COMP5329_DEV, "data")
  assert not task.csv_is_labelled(test_csv)
