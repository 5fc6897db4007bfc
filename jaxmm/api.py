"""jaxmm from Python: a trained workdir as a predictor over images and captions held in memory.

  import jaxmm
  model = jaxmm.load("runs/mine")
  probs = model.predict(["a.jpg", pil_image, uint8_array], ["a dog", "two cats", "a red bus"])
  model.label_names            # the columns of probs
  model.predict_labels(...)    # [{'dog'}, {'cat'}, {'bus', 'car'}]: decided as the workdir decides

The images go through the decoding and resizing that training used, the captions through the
workdir's vocabulary, and both through the same jitted predict step and padded batches as
predict.py, on whatever device JAX has: the same rows give the same probabilities.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from jaxmm.data import images as images_lib
from jaxmm.data.pipeline import PreparedSplit
from jaxmm.train import checkpoint as ckpt_lib
from jaxmm.train import thresholds as thresholds_lib


def load(workdir: str, *, which: str = ckpt_lib.BEST, thresholds: str | None = None) -> Predictor:
  """The predictor of a trained workdir (its `best` checkpoint unless `which='latest'`).

  `thresholds` overrides the workdir's decision rule as predict.py's --thresholds does: a number,
  or 'expected_f1' (multi-label).
  """
  from jaxmm import inference

  return Predictor(inference.restore(workdir, which=which, thresholds=thresholds))


class Predictor:
  """Probabilities and decisions of one restored workdir; see the module docstring."""

  def __init__(self, restored):
    self._restored = restored
    self.config = restored.config
    self.task = restored.task
    if not self.task.predicts:
      raise ValueError(
        f"a {self.task.name!r} workdir is a pretext run: it predicts nothing; transfer its tower "
        "with --config.init.image_from / --config.init.text_from"
      )
    self.thresholds = restored.thresholds

  @property
  def label_names(self) -> list[str]:
    """The names of the probability columns (multi-label), or ['match'] (matching)."""
    return list(self._restored.label_names)

  def predict(
    self, images: Sequence | None = None, texts: Sequence[str] | None = None
  ) -> np.ndarray:
    """Probabilities: (N, L) for multi-label (columns: label_names), (N,) for matching.

    images: paths, PIL images or uint8 arrays (H, W, 3) or (H, W), any size; texts: strings. A
    text-only model takes texts alone, an image-only model images alone.
    """
    split = self._split(images, texts)
    if not len(split):
      return np.zeros((0, len(self.label_names)) if self.task.name == "multilabel" else (0,))
    return self._restored.predict(split)

  def predict_labels(self, images: Sequence | None = None, texts: Sequence[str] | None = None):
    """Multi-label: one set of label names per row (at least one label, by the workdir's tuned
    threshold(s) or expected-F1 rule). Matching: one bool per row."""
    probs = self.predict(images, texts)
    if not len(probs):
      return []
    if self.task.name != "multilabel":
      return [bool(p >= float(self.thresholds)) for p in np.asarray(probs).reshape(-1)]
    if self.thresholds == thresholds_lib.EXPECTED_F1:
      preds = thresholds_lib.expected_f1_predictions(probs)
    else:
      preds = thresholds_lib.apply_thresholds(probs, self.thresholds, at_least_one=True)
    names = self.label_names
    return [{names[j] for j in np.flatnonzero(row)} for row in preds]

  def _split(self, images, texts) -> PreparedSplit:
    mode = self.config.model.mode
    n = len(images) if images is not None else len(texts) if texts is not None else 0
    if images is not None and texts is not None and len(images) != len(texts):
      raise ValueError(f"{len(images)} images but {len(texts)} texts: pass one of each per row")
    if mode != "text" and images is None:
      raise ValueError(f"this workdir's model reads images (model.mode={mode!r}): pass images=")
    if mode != "image" and texts is None:
      raise ValueError(f"this workdir's model reads captions (model.mode={mode!r}): pass texts=")
    if texts is not None:
      bad = [k for k, t in enumerate(texts) if not isinstance(t, str)]
      if bad:
        raise TypeError(f"texts[{bad[0]}] is a {type(texts[bad[0]]).__name__}, not a string")
    # `is not None`: texts may be a numpy array (a DataFrame column's .values)
    tokens, length = self._restored.encoder.encode_batch(
      [str(t) for t in texts] if texts is not None else [""] * n
    )
    cache = index = None
    if mode != "text":
      size = self.config.data.image_size
      cache = np.stack([self._image(im, size, k) for k, im in enumerate(images)]) if n else None
      index = np.arange(n)
    return PreparedSplit(
      ids=[str(k) for k in range(n)],
      image_cache=cache,
      image_index=index,
      arrays={"tokens": tokens, "length": length},
    )

  def _image(self, image, size: int, k: int) -> np.ndarray:
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
      return images_lib.load_image(
        os.fspath(image), size, max_image_pixels=self.config.data.max_image_pixels
      )
    if isinstance(image, Image.Image):
      if not image.width * image.height:
        raise ValueError(f"images[{k}] has no pixels (size {image.size})")
      # to_array's draft() would decode a not yet decoded JPEG at a reduced scale in place: the
      # caller's image is left as it was. One opened from a file is decoded anew from that file,
      # as predict.py decodes it; any other is copied.
      if image.format == "JPEG" and image.tile and getattr(image, "filename", ""):
        with Image.open(image.filename) as fresh:
          return images_lib.to_array(fresh, size)
      return images_lib.to_array(image.copy(), size)
    array = np.asarray(image)
    if (
      array.dtype != np.uint8
      or array.ndim not in (2, 3)
      or (array.ndim == 3 and array.shape[-1] not in (3, 4))
    ):
      raise ValueError(
        f"images[{k}]: expected a path, a PIL image or a uint8 array (H, W, 3) or (H, W); got "
        f"{array.dtype} {array.shape}"
      )
    if not array.shape[0] * array.shape[1]:
      raise ValueError(f"images[{k}] has no pixels (shape {array.shape})")
    if array.shape == (size, size, 3):
      return array
    return images_lib.to_array(Image.fromarray(array), size)
