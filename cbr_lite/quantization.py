"""int8 retrieval: the unit index embeddings stored as 8-bit integers with a scale, 4x smaller than float32.

A unit index embedding ``w`` (one row of the nearest-neighbour matrix) is stored as ``q = round(w / s)``
in ``[-127, 127]`` and read back as ``q * s``. The choice of the scale ``s`` decides how much is lost:

- ``"fixed"``: ``s = 1/128`` for every row, Google's reference. A unit vector's components lie in
  ``[-1, 1]``, so this never clips, but in 1024 dimensions the largest component is only about 0.1, so
  a row uses about 15 of the 255 levels.
- ``"matrix"``: ``s = max |W| / 127``, one scale for the whole matrix.
- ``"row"`` (the default): ``s_i = max |w_i| / 127``, one scale per index image, so every row uses the
  full range. This is also exactly the format of TFLite's int8-weight ``FULLY_CONNECTED`` kernel (one
  scale per output channel), so the ``.tflite`` file holds the very same integers.

>>> unit = np.array([[0.6, 0.8], [1.0, 0.0]], dtype=np.float32)
>>> q, scales = quantize_index(unit, "row")
>>> q.tolist(), scales.astype(float).round(5).tolist()
([[95, 127], [127, 0]], [0.0063, 0.00787])
>>> dequantize_index(q, scales).astype(float).round(3).tolist()
[[0.598, 0.8], [1.0, 0.0]]

:class:`Int8NearestNeighbours` is the Keras layer (the int8 counterpart of
:func:`cbr_lite.retrieval.nearest_neighbour_layer`); ``cbr_lite.retrieval.build_retrieval_head(...,
index_dtype="int8")`` and ``build_classifier(..., index_dtype="int8")`` assemble models with it. Convert them
with ``cbr_lite.export.to_tflite(model, quantize="int8")``: the converter's weight quantisation then stores the
matrix as int8 with per-row scales, which for ``scale="row"`` are exactly the layer's integers and scales.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from cbr_lite.errors import CbrError
from cbr_lite.similarity import check_index, class_scores, cosine_similarity, l2_normalize

#: The scale choices, best first (see the module docstring).
SCALES = ("row", "matrix", "fixed")


def _check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise CbrError(f"unknown int8 scale {scale!r}: use one of {', '.join(SCALES)}")


def quantize_index(unit_index: np.ndarray, scale: str = "row") -> tuple[np.ndarray, np.ndarray]:
    """Unit index embeddings ``(images, dim)`` -> ``(int8 integers (images, dim), float32 scales (images,))``.

    Every row gets a scale (for ``"fixed"`` and ``"matrix"`` they are all equal), so that
    ``dequantize_index(q, scales)`` reads any choice back the same way.
    """
    _check_scale(scale)
    unit_index = np.asarray(unit_index, dtype=np.float32)
    if unit_index.ndim != 2 or unit_index.size == 0:
        raise CbrError(f"index embeddings must be a non-empty (images, dim) array, got shape {unit_index.shape}")
    largest = np.abs(unit_index).max(axis=1)
    if scale == "fixed":
        scales = np.full(len(unit_index), 1.0 / 128.0)
    elif scale == "matrix":
        scales = np.full(len(unit_index), largest.max() / 127.0)
    else:
        scales = largest / 127.0
    # A zero row would get scale 0; it has no direction anyway (l2_normalize rejects it), but keep
    # the division finite so the function never returns NaN.
    scales = np.where(scales > 0, scales, 1.0).astype(np.float32)
    # A component of exactly 1.0 with the fixed scale would be 128: clip to the symmetric range, as
    # TFLite's int8 weights are symmetric ([-127, 127]).
    q = np.clip(np.rint(unit_index / scales[:, None]), -127, 127).astype(np.int8)
    return q, scales


def dequantize_index(q: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """The float32 embeddings that int8 rows ``q`` with per-row ``scales`` stand for: ``q * scales``."""
    return np.asarray(q, dtype=np.float32) * np.asarray(scales, dtype=np.float32)[:, None]


@keras.saving.register_keras_serializable(package="cbr_lite")
class Int8NearestNeighbours(keras.layers.Layer):
    """Cosine score of a unit query with every index image, the index stored as int8 plus per-image scales.

    Saved weights: ``kernel`` int8 ``(dim, images)`` (a column per index image, like ``Dense``) and
    ``scales`` float32 ``(images,)``. The output is ``query @ (kernel * scales)``: the scores the dequantized
    index gives, which is what the converted ``.tflite`` computes (up to its own rounding of the query).

    The layer also holds the dequantized matrix as a third, float32 weight that is *not* saved (a
    ``.keras`` file holds only the int8 integers and the scales; loading recomputes it). The TFLite
    converter turns ``query @ dequantized`` into one ``FULLY_CONNECTED`` op and, with
    ``quantize="int8"``, stores that matrix as int8 with per-row scales: for ``scale="row"`` the very same
    integers. (An int8 constant followed by a ``CAST`` would keep the file small too, but LiteRT would then
    expand the whole matrix to float32 on every query, ~50x slower; and a dequantized constant written
    into the traced graph makes conversion ~3x slower than a weight.) Change the index with
    :meth:`set_index`, which keeps the three weights consistent.

    >>> layer = Int8NearestNeighbours.from_index(np.array([[1.0, 0.0], [1.0, 1.0]]))
    >>> layer(np.array([[1.0, 0.0]], dtype="float32")).numpy().astype(float).round(3).tolist()
    [[1.0, 0.707]]
    """

    def __init__(self, units: int, dim: int, scale: str = "row", **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        _check_scale(scale)
        self.units, self.dim, self.scale = int(units), int(dim), scale
        self.kernel = self.add_weight(
            name="kernel", shape=(self.dim, self.units), dtype="int8", initializer="zeros", trainable=False,
        )
        self.scales = self.add_weight(
            name="scales", shape=(self.units,), dtype="float32", initializer="ones", trainable=False,
        )
        self.dequantized = self.add_weight(
            name="dequantized", shape=(self.dim, self.units), dtype="float32", initializer="zeros",
            trainable=False,
        )

    @classmethod
    def from_index(cls, index_embeddings: np.ndarray, scale: str = "row", **kwargs) -> "Int8NearestNeighbours":
        """The layer for raw index embeddings ``(images, dim)``: L2-normalised, then quantised with ``scale``."""
        q, scales = quantize_index(l2_normalize(np.asarray(index_embeddings, dtype=np.float32)), scale)
        layer = cls(q.shape[0], q.shape[1], scale, **kwargs)
        layer.set_index(q, scales)
        return layer

    def set_index(self, q: np.ndarray, scales: np.ndarray) -> None:
        """Store int8 rows ``q`` ``(images, dim)`` and their ``scales`` ``(images,)`` (as :func:`quantize_index` returns)."""
        q, scales = np.asarray(q, dtype=np.int8), np.asarray(scales, dtype=np.float32)
        if q.shape != (self.units, self.dim) or scales.shape != (self.units,):
            raise CbrError(f"expected int8 rows of shape {(self.units, self.dim)} and {self.units} scales, "
                           f"got {q.shape} and {scales.shape}")
        self.kernel.assign(q.T)
        self.scales.assign(scales)
        self.dequantized.assign(dequantize_index(q, scales).T)

    def call(self, inputs):
        return ops.matmul(inputs, ops.cast(self.dequantized, inputs.dtype))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def save_own_variables(self, store):
        # Only the int8 integers and the scales go into the file: a quarter of the float matrix's bytes.
        store["kernel"] = ops.convert_to_numpy(self.kernel)
        store["scales"] = ops.convert_to_numpy(self.scales)

    def load_own_variables(self, store):
        self.set_index(np.asarray(store["kernel"]).T, np.asarray(store["scales"]))

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, dim=self.dim, scale=self.scale)
        return config


def int8_nearest_neighbour_layer(index_embeddings: np.ndarray, scale: str = "row",
                                 name: str = "nearest_neighbours") -> Int8NearestNeighbours:
    """The int8 counterpart of :func:`cbr_lite.retrieval.nearest_neighbour_layer` (same name, same scores up to rounding)."""
    return Int8NearestNeighbours.from_index(index_embeddings, scale, name=name)


def int8_scores(queries: np.ndarray, index_embeddings: np.ndarray, scale: str = "row") -> np.ndarray:
    """Cosine scores ``(queries, images)`` against the int8 index, in NumPy (the reference for the layer)."""
    q, scales = quantize_index(l2_normalize(np.asarray(index_embeddings, dtype=np.float32)), scale)
    return np.atleast_2d(l2_normalize(queries)) @ dequantize_index(q, scales).T


def top1_agreement(queries: np.ndarray, index_embeddings: np.ndarray, image_labels, num_classes: int | None = None,
                   scale: str = "row", aggregation: str = "max") -> float:
    """Fraction of queries whose top-1 class with the int8 index is the top-1 class with the float index.

    >>> rng = np.random.default_rng(0)
    >>> index, queries = rng.normal(size=(40, 64)), rng.normal(size=(100, 64))
    >>> top1_agreement(queries, index, np.arange(40) % 8, scale="row") >= 0.95
    True
    """
    index_embeddings, image_labels, num_classes = check_index(index_embeddings, image_labels, num_classes)
    exact = class_scores(cosine_similarity(queries, index_embeddings), image_labels, num_classes, aggregation)
    rounded = class_scores(int8_scores(queries, index_embeddings, scale), image_labels, num_classes, aggregation)
    return float(np.mean(exact.argmax(axis=1) == rounded.argmax(axis=1)))
