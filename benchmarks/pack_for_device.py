"""Packs a dataset folder small enough to travel to a lent GPU machine (64 MiB per call there).

  python benchmarks/pack_for_device.py ../shared/data/comp5329-dev .gpu/comp5329 --size 128 --rows 12000
  python benchmarks/pack_for_device.py ../shared/data/matching-dev .gpu/matching --size 64

Every image is decoded and resized exactly as jaxmm.data.images.load_image does for --size (so the
pipeline's own resize is the identity there), then stored as WebP (quality --quality) under its
original name: load_image reads by content, not by extension. The CSVs are copied byte for byte.
What is lost is the WebP quantisation (mean abs error ~2.7/255 at 128 px, q85), reported at the end.
The packed folder must never be committed (../shared/data stays out of the project).
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from jaxmm.data import comp5329  # noqa: E402
from jaxmm.data.images import load_image  # noqa: E402


def _pack_one(src: str, dst: str, size: int, quality: int) -> tuple[int, float]:
  arr = load_image(src, size)
  buf = io.BytesIO()
  Image.fromarray(arr).save(buf, "WEBP", quality=quality, method=6)
  with open(dst, "wb") as f:
    f.write(buf.getvalue())
  back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.float32)
  return buf.tell(), float(np.abs(back - arr).mean())


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("src")
  p.add_argument("dst")
  p.add_argument("--size", type=int, required=True)
  p.add_argument("--quality", type=int, default=85)
  p.add_argument("--rows", type=int, default=0,
                 help="COMP5329 layout: pack only the images of train.csv's first ROWS records")
  args = p.parse_args()

  os.makedirs(args.dst, exist_ok=True)
  jobs = []
  for csv_path in sorted(glob.glob(os.path.join(args.src, "*.csv"))):
    shutil.copy(csv_path, args.dst)
  if os.path.isdir(os.path.join(args.src, "data")):  # COMP5329: data/<ImageID>
    os.makedirs(os.path.join(args.dst, "data"), exist_ok=True)
    ids = [r.image_id for r in comp5329.read_comp5329(os.path.join(args.src, "train.csv"))]
    if args.rows:
      ids = ids[:args.rows]
    jobs = [(os.path.join(args.src, "data", i), os.path.join(args.dst, "data", i)) for i in ids]
  for sub in sorted(glob.glob(os.path.join(args.src, "*_images"))):  # S0 layout
    out = os.path.join(args.dst, os.path.basename(sub))
    os.makedirs(out, exist_ok=True)
    jobs += [(path, os.path.join(out, os.path.basename(path)))
             for path in sorted(glob.glob(os.path.join(sub, "*")))]
  if not jobs:
    sys.exit(f"no images found under {args.src} (expected data/ or *_images/)")
  with ThreadPoolExecutor(os.cpu_count()) as pool:
    out = list(pool.map(lambda j: _pack_one(*j, args.size, args.quality), jobs))
  total = sum(b for b, _ in out)
  print(f"{len(jobs)} images -> {args.dst}: {total / 2**20:.1f} MiB, "
        f"mean abs error {np.mean([e for _, e in out]):.2f}/255 against load_image at {args.size} px")


if __name__ == "__main__":
  main()
