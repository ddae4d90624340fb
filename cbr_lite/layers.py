"""The retrieval layers of a CbR model, as small Keras 3 layer classes.

A CbR head is three steps, each a layer here or a stock Keras layer:

1. :class:`L2Normalize` turns the query embedding into a unit vector (optionally after
   :class:`SubtractMean` has centred it on the index's mean embedding).
2. A bias-free ``Dense`` layer whose kernel columns are the unit index embeddings gives one cosine
   score per index image (see :func:`cbr_lite.retrieval.nearest_neighbour_layer`).
3. :class:`ClassAggregation` gathers each class's image scores into a ``(classes, shots)`` grid and
   reduces it to one score per class: one gather and one reduce, whatever the number of classes.

:class:`PerClassSelectMax` is Google's reference form of step 3 (one selection and one max per class,
then a concatenation). It gives identical scores and exists to be compared against.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from cbr_lite.errors import CbrError
from cbr_lite.similarity import parse_aggregation

# Cosine similarities lie in [-1, 1]; padding slots of the class grid get a score below that range.
_PADDING_SCORE = -3.0


@keras.saving.register_keras_serializable(package="cbr_lite")
class L2Normalize(keras.layers.Layer):
    """Scale each vector to unit L2 length, safely in float16 and for the zero vector.

    ``keras.layers.UnitNormalization`` divides by ``max(norm, 1e-12)``; converted to float16 that
    clamp becomes 0 or 65504 and small embeddings get wrong scores. Here the vector is first divided
    by its largest magnitude (so every component is in [-1, 1] and the norm is at least 1), then by its
    norm. The only constants are 0 and 1, exact in any float type. A zero vector stays zero.
    """

    def call(self, inputs):
        largest = ops.max(ops.abs(inputs), axis=-1, keepdims=True)
        scaled = inputs / ops.where(largest > 0, largest, 1.0)
        norm = ops.sqrt(ops.sum(scaled * scaled, axis=-1, keepdims=True))
        return scaled / ops.where(norm > 0, norm, 1.0)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="cbr_lite")
class SubtractMean(keras.layers.Layer):
    """Subtract a fixed mean embedding: the "C" of SimpleShot's CL2N (centre, then L2-normalise).

    Embeddings of one network share a large common component (cosine scores of different classes sit
    high); removing the mean of the index embeddings leaves what tells the images apart. The mean is a
    non-trainable weight, so it is saved in a ``.keras`` file and becomes one constant of one ``SUB`` op in
    a ``.tflite`` file.

    >>> layer = SubtractMean.from_mean(np.array([1.0, 2.0]))
    >>> layer(np.array([[3.0, 3.0]], dtype="float32")).numpy().tolist()
    [[2.0, 1.0]]
    """

    def __init__(self, dim: int, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.dim = int(dim)
        self.mean = self.add_weight(name="mean", shape=(self.dim,), dtype="float32", initializer="zeros",
                                    trainable=False)

    @classmethod
    def from_mean(cls, mean: np.ndarray, **kwargs) -> "SubtractMean":
        """The layer for a mean embedding ``(dim,)``."""
        mean = np.asarray(mean, dtype=np.float32).reshape(-1)
        layer = cls(mean.shape[0], **kwargs)
        layer.mean.assign(mean)
        return layer

    def call(self, inputs):
        return inputs - ops.cast(self.mean, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim)
        return config


def class_grid(image_labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Arrange index-image positions into a ``(classes, shots)`` grid, padded to the largest class.

    Returns ``(members, mask)``: ``members[c, s]`` is the position of class ``c``'s ``s``-th image in
    the index, and ``mask[c, s]`` is 1 for a real image and 0 for padding. Padding repeats the class's
    first image, so a max over the row is unchanged by it.

    >>> members, mask = class_grid(np.array([0, 1, 0]), 2)
    >>> members.tolist(), mask.tolist()
    ([[0, 2], [1, 1]], [[1.0, 1.0], [1.0, 0.0]])
    """
    image_labels = np.asarray(image_labels, dtype=np.int64)
    counts = np.bincount(image_labels, minlength=num_classes)
    if len(counts) > num_classes:
        raise CbrError(f"an image label is {int(image_labels.max())}, but there are only {num_classes} classes")
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise CbrError(f"class {int(empty[0])} has no index images; every class needs at least one")
    shots = int(counts.max())
    # One stable sort instead of a scan of all labels per class: O(n log n), not O(n * classes), so
    # 50,000 classes take milliseconds rather than minutes. Stable keeps each class's images in order.
    order = np.argsort(image_labels, kind="stable")
    starts = np.cumsum(counts) - counts
    rank = np.arange(len(order)) - np.repeat(starts, counts)
    members = np.repeat(order[starts][:, None], shots, axis=1).astype(np.int32)
    mask = np.zeros((num_classes, shots), dtype=np.float32)
    members[image_labels[order], rank] = order
    mask[image_labels[order], rank] = 1.0
    return members, mask


@keras.saving.register_keras_serializable(package="cbr_lite")
class ClassAggregation(keras.layers.Layer):
    """Per-image scores ``(batch, images)`` -> per-class scores ``(batch, classes)``.

    One gather into a ``(batch, classes, shots)`` grid, then one reduction over shots:
    ``"max"`` (the best-matching image, as Google's reference), ``"mean"``, or ``"topk:K"`` (mean of
    the K best). The grid is stored as two non-trainable weights, so the layer saves and loads as
    part of a ``.keras`` file and becomes constants in a ``.tflite`` file.

    >>> layer = ClassAggregation.from_labels(np.array([0, 1, 0]), num_classes=2)
    >>> layer(np.array([[0.1, 0.5, 0.9]], dtype="float32")).numpy().tolist()
    [[0.8999999761581421, 0.5]]
    """

    def __init__(self, num_classes: int, shots: int, aggregation: str = "max", **kwargs):
        super().__init__(**kwargs)
        parse_aggregation(aggregation)
        self.num_classes = int(num_classes)
        self.shots = int(shots)
        self.aggregation = aggregation
        self.members = self.add_weight(
            name="members", shape=(self.num_classes, self.shots), dtype="int32",
            initializer="zeros", trainable=False,
        )
        self.mask = self.add_weight(
            name="mask", shape=(self.num_classes, self.shots), dtype="float32",
            initializer="ones", trainable=False,
        )

    @classmethod
    def from_labels(cls, image_labels, num_classes: int, aggregation: str = "max", **kwargs):
        """Build the layer for an index whose ``i``-th image belongs to class ``image_labels[i]``."""
        members, mask = class_grid(image_labels, num_classes)
        layer = cls(num_classes, members.shape[1], aggregation, **kwargs)
        layer.members.assign(members)
        layer.mask.assign(mask)
        return layer

    def call(self, scores):
        grid = ops.take(scores, self.members, axis=1)
        kind, k = parse_aggregation(self.aggregation)
        if kind == "max":
            return ops.max(grid, axis=-1)
        mask = ops.cast(self.mask, grid.dtype)
        if kind == "mean":
            return ops.sum(grid * mask, axis=-1) / ops.sum(mask, axis=-1)
        k = min(k, self.shots)
        padded_low = grid * mask + (mask - 1.0) * -_PADDING_SCORE
        best, _ = ops.top_k(padded_low, k=k)
        real = ops.cast(best > _PADDING_SCORE + 1.0, best.dtype)
        return ops.sum(best * real, axis=-1) / ops.sum(real, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, shots=self.shots, aggregation=self.aggregation)
        return config


@keras.saving.register_keras_serializable(package="cbr_lite")
class PerClassSelectMax(keras.layers.Layer):
    """Google's reference aggregation: for each class, select its images' scores and take the max.

    This writes two ops per class into the graph (a gather and a reduce-max) and a concatenation of
    all of them, so the graph grows with the number of classes. :class:`ClassAggregation` computes the
    same scores with two ops in all.
    """

    def __init__(self, class_members: list[list[int]], **kwargs):
        super().__init__(**kwargs)
        self.class_members = [[int(i) for i in members] for members in class_members]
        if not all(self.class_members):
            raise CbrError("every class needs at least one index image")

    @classmethod
    def from_labels(cls, image_labels, num_classes: int, **kwargs):
        """Build the layer for an index whose ``i``-th image belongs to class ``image_labels[i]``."""
        image_labels = np.asarray(image_labels)
        return cls([np.flatnonzero(image_labels == c).tolist() for c in range(num_classes)], **kwargs)

    def call(self, scores):
        per_class = [
            ops.max(ops.take(scores, np.array(members, dtype="int32"), axis=1), axis=1, keepdims=True)
            for members in self.class_members
        ]
        return ops.concatenate(per_class, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], len(self.class_members))

    def get_config(self):
        config = super().get_config()
        config.update(class_members=self.class_members)
        return config
