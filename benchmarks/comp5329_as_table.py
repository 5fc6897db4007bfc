"""Writes COMP5329 records in the plain table layout, to check that the layout changes nothing.

  python benchmarks/comp5329_as_table.py ../shared/data/comp5329-dev /tmp/c5329_table \
      --train 0:10000 --test 10000:12000

DST gets train.jsonl (and test.jsonl for --test): `image` is the JPEG's absolute path, `text` the
caption as read, `labels` the COCO ids joined by '|' (names that are whole numbers sort as numbers,
so the label set and the head's column order are COMP5329's own). The same records in the same
order then give configs/own_data.py the same arrays as the COMP5329 layout does.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jaxmm.data import comp5329, table  # noqa: E402


def rows_of(records, images_dir: str) -> list[dict]:
  return [
    {
      "image": os.path.abspath(os.path.join(images_dir, r.image_id)),
      "text": r.caption,
      "labels": "|".join(str(i) for i in r.labels),
    }
    for r in records
  ]


def _span(text: str) -> slice:
  start, end = text.split(":")
  return slice(int(start or 0), int(end) if end else None)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("src", help="a COMP5329 folder (train.csv + data/)")
  p.add_argument("dst")
  p.add_argument("--train", default="0:", help="records of train.csv for train.jsonl, A:B")
  p.add_argument("--test", default="", help="records for a labelled test.jsonl, A:B")
  args = p.parse_args(argv)
  records = comp5329.read_comp5329(os.path.join(args.src, "train.csv"))
  images = os.path.join(args.src, "data")
  os.makedirs(args.dst, exist_ok=True)
  fields = ("image", "text", "labels")
  table.write_table(
    os.path.join(args.dst, "train.jsonl"), rows_of(records[_span(args.train)], images), fields
  )
  if args.test:
    table.write_table(
      os.path.join(args.dst, "test.jsonl"), rows_of(records[_span(args.test)], images), fields
    )
  print(f"wrote {args.dst}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
