"""Running a classifier file: LiteRT, with the labels and preprocessing its metadata holds.

>>> classifier = Classifier("pets.tflite")                    # doctest: +SKIP
>>> classifier.predict([image], top_k=2)                       # doctest: +SKIP
[[('cat', 0.93), ('mug', 0.41)]]

Nothing but the file is needed (no embedder, no TensorFlow), so it works for any TFLite image classifier
with TFLite metadata (labels and normalisation), not only ones made by cbr-lite. A model whose first output
is ``top_classes`` (an IVF head too large to output every class's score, :mod:`cbr_lite.ivf`) gets its score
vector made from its ``top_classes`` and ``top_scores``: every class it did not report has the lowest float32,
as in the IVF head's own full vector.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cbr_lite.classifier_file import read_model_file
from cbr_lite.errors import CbrError
from cbr_lite.export import LiteRTModel
from cbr_lite.images import resize
from cbr_lite.metadata import TOP_CLASSES, TOP_SCORES, read_metadata


def check_top_k(top_k: int, name: str = "top_k") -> int:
    """``top_k`` if it is a number of classes to show (0: all), else a :class:`CbrError` calling it ``name``."""
    if top_k < 0:
        raise CbrError(f"{name} must be 0 (all classes) or more, not {top_k}")
    return top_k


def ranking(scores, class_names: Sequence[str], top_k: int = 0) -> list[tuple[str, float]]:
    """One row of class scores as ``[(class name, score), ...]``, best first (ties keep class order);
    ``top_k=0`` gives every class.

    >>> ranking(np.array([0.2, 0.9, 0.5]), ["a", "b", "c"], top_k=2)
    [('b', 0.9), ('c', 0.5)]
    """
    check_top_k(top_k)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    return [(class_names[i], float(scores[i])) for i in order[:top_k or None]]


class Classifier:
    """A classifier file run with LiteRT; it needs nothing but the file (labels, preprocessing inside)."""

    def __init__(self, model, source: str | None = None):
        """``model``: the file's bytes or its path; ``source`` names it in error messages."""
        if isinstance(model, (str, Path)):
            source = source or str(model)
            model = read_model_file(model)
        source = source or "the model"
        self.data = bytes(model)
        metadata = read_metadata(self.data, source=source)
        self.labels = list(metadata["labels"])
        self.mean = np.float32(metadata["mean"])
        self.std = np.float32(metadata["std"])
        self.input_size = tuple(metadata["input_size"])
        self.model = LiteRTModel(self.data, source=source)
        self.uint8_input = np.dtype(self.model.input["dtype"]) == np.uint8
        #: True for a model with only the small top-K output (the labels name the values of top_classes).
        self.top_k_only = metadata.get("outputs", [])[:1] == [TOP_CLASSES]

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """One ``uint8`` RGB image -> the model's input, as the metadata says (resize, then normalise)."""
        pixels = resize(np.asarray(image, dtype=np.uint8), self.input_size)
        if self.uint8_input:
            return pixels
        return (pixels.astype(np.float32) - self.mean) / self.std

    def scores(self, images) -> np.ndarray:
        """The model's class scores, ``(len(images), classes)`` float32, for ``uint8`` RGB images."""
        rows = [self._scores(self.preprocess(image)) for image in images]
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, len(self.labels)), np.float32)

    def _scores(self, pixels) -> np.ndarray:
        if not self.top_k_only:
            return self.model.run_one(pixels)
        outputs = self.model.run_outputs(pixels)
        classes = outputs[TOP_CLASSES]
        row = np.full(len(self.labels), np.finfo(np.float32).min, dtype=np.float32)
        found = (classes >= 0) & (classes < len(self.labels))   # -1: no class in that slot
        row[classes[found].astype(np.int64)] = outputs[TOP_SCORES][found]
        return row

    def predict(self, images, top_k: int = 0) -> list:
        """For each image, ``[(label, score), ...]`` best first; ``top_k=0`` gives every class."""
        return [self.ranked(row, top_k) for row in self.scores(images)]

    def ranked(self, scores: np.ndarray, top_k: int = 0) -> list:
        """One row of this model's scores as ``[(label, score), ...]``, best first (:func:`ranking`)."""
        return ranking(scores, self.labels, top_k)


def classify(model, images, top_k: int = 0) -> list:
    """Classify ``uint8`` RGB images with a classifier file (bytes or path); see :meth:`Classifier.predict`."""
    return Classifier(model).predict(images, top_k)


def count_ops(data: bytes, source: str = "the model") -> list:
    """``[(op name, count), ...]`` of a .tflite model, in order of first use."""
    counts: dict = {}
    for op in LiteRTModel(data, source=source).ops():
        counts[op] = counts.get(op, 0) + 1
    return list(counts.items())


__all__ = ["Classifier", "check_top_k", "classify", "count_ops", "ranking"]
