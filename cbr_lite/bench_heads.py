"""The head forms ``cbr-lite bench`` compares (:mod:`cbr_lite.bench`), as Keras layers and models.

``per_class``, ``gather`` and ``int8`` are the package's own heads (:func:`cbr_lite.retrieval.build_retrieval_head`);
the other three exist only to be measured against them:

- ``reshape`` (:class:`GridMax`): the matrix columns stored in class-grid order, then a reshape and a max;
- ``segment`` (:class:`SegmentMax`): one ``UNSORTED_SEGMENT_MAX`` over the class ids;
- ``masked`` (:class:`MaskedMax`): scores plus a ``(classes, images)`` mask of 0 / -3, then a max.

Their layers are registered like :mod:`cbr_lite.layers`' (package ``cbr_lite.bench``), so a head saves and
loads with ``safe_mode=True``.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from cbr_lite.errors import CbrError
from cbr_lite.export import to_tflite
from cbr_lite.layers import L2Normalize, class_grid
from cbr_lite.retrieval import build_retrieval_head, nearest_neighbour_layer

#: The forms :func:`build_head` builds (``cbr_lite.bench.TFLITE_VARIANTS`` lists the same, for the command line).
HEAD_FORMS = ("per_class", "gather", "reshape", "segment", "masked", "int8")


@keras.saving.register_keras_serializable(package="cbr_lite.bench")
class GridMax(keras.layers.Layer):
    """Scores in grid order ``(batch, classes * shots)`` -> reshape -> max over shots (the ``reshape`` form)."""

    def __init__(self, num_classes: int, shots: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.shots = int(num_classes), int(shots)

    def call(self, scores):
        return ops.max(ops.reshape(scores, (-1, self.num_classes, self.shots)), axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "shots": self.shots}


class _ClassMaxFromLabels(keras.layers.Layer):
    """Common part of the forms below: scores ``(batch, images)`` -> ``(batch, classes)``, given each image's class."""

    def __init__(self, image_labels, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.image_labels = [int(label) for label in image_labels]
        self.num_classes = int(num_classes)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "image_labels": self.image_labels, "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="cbr_lite.bench")
class SegmentMax(_ClassMaxFromLabels):
    """The max over each class's images by one segment op (the ``segment`` form)."""

    def call(self, scores):
        ids = np.array(self.image_labels, dtype="int32")
        # Segment ops reduce the first axis, so the image axis is moved there and back.
        per_class = ops.segment_max(ops.transpose(scores), ids, num_segments=self.num_classes)
        return ops.transpose(per_class)


@keras.saving.register_keras_serializable(package="cbr_lite.bench")
class MaskedMax(_ClassMaxFromLabels):
    """Scores + a ``(classes, images)`` mask of 0 / -3, then the max over images (the ``masked`` form)."""

    def call(self, scores):
        labels = np.array(self.image_labels)
        penalty = np.where(labels[None, :] == np.arange(self.num_classes)[:, None], 0.0, -3.0)
        return ops.max(ops.expand_dims(scores, 1) + penalty.astype("float32"), axis=-1)


def build_head(variant: str, index: np.ndarray, labels: np.ndarray, num_classes: int):
    """The Keras head of one form in :data:`HEAD_FORMS`: raw embedding -> class scores."""
    if variant not in HEAD_FORMS:
        raise CbrError(f"unknown head variant {variant!r}: use one of {', '.join(HEAD_FORMS)}")
    if variant in ("per_class", "gather", "int8"):
        return build_retrieval_head(index, labels, num_classes, per_class_ops=variant == "per_class",
                                    index_dtype="int8" if variant == "int8" else "float32")
    embedding = keras.Input(shape=(index.shape[1],), name="embedding")
    unit_query = L2Normalize(name="l2_normalize")(embedding)
    if variant == "reshape":
        members, _ = class_grid(labels, num_classes)
        # The columns are put in grid order once, at build time; padding repeats a class's first image.
        scores = nearest_neighbour_layer(index[members.ravel()])(unit_query)
        class_scores = GridMax(num_classes, members.shape[1], name="grid_max")(scores)
    else:
        scores = nearest_neighbour_layer(index)(unit_query)
        layer = SegmentMax if variant == "segment" else MaskedMax
        class_scores = layer(labels, num_classes, name=f"{variant}_max")(scores)
    return keras.Model(embedding, class_scores, name=f"{variant}_head")


def convert_head(variant: str, head) -> bytes:
    """The head as a .tflite file: float32, or int8 weights for the ``int8`` variant."""
    return to_tflite(head, quantize="int8" if variant == "int8" else "none")
