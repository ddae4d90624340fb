"""Assembling CbR models: index embeddings in, Keras models out. No training anywhere.

One builder for every exact head: ``index_dtype="float32"`` keeps the unit index embeddings as the kernel of
a plain ``Dense`` layer, ``index_dtype="int8"`` stores them as int8 with one scale per image
(:mod:`cbr_lite.quantization`); the aggregation after it is the same.

>>> import numpy as np
>>> index = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
>>> head = build_retrieval_head(index, image_labels=[0, 1, 0], num_classes=2)
>>> print(head.predict_on_batch(np.array([[3.0, 0.1]])).round(3))
[[0.999 0.033]]
>>> int8_head = build_retrieval_head(index, [0, 1, 0], 2, index_dtype="int8")
>>> int8_head.predict_on_batch(np.array([[3.0, 0.1]])).astype(float).round(2).tolist()
[[1.0, 0.03]]
"""

from __future__ import annotations

import keras
import numpy as np

from cbr_lite.errors import CbrError
from cbr_lite.layers import ClassAggregation, L2Normalize, PerClassSelectMax, SubtractMean
from cbr_lite.quantization import int8_nearest_neighbour_layer
from cbr_lite.similarity import check_index, l2_normalize

#: How the index matrix can be stored: float32 (a ``Dense`` kernel) or int8 with one scale per index image.
INDEX_DTYPES = ("float32", "int8")


def nearest_neighbour_layer(index_embeddings: np.ndarray, name: str = "nearest_neighbours") -> keras.layers.Dense:
    """A bias-free ``Dense`` layer whose kernel columns are the L2-normalised index embeddings.

    Applied to a unit query vector it returns the cosine similarity with every index image, which
    ranks them exactly as squared-L2 nearest-neighbour search does (``||a-b||^2 = 2 - 2 a.b``).
    """
    unit_index = l2_normalize(np.asarray(index_embeddings, dtype=np.float32))
    layer = keras.layers.Dense(unit_index.shape[0], use_bias=False, trainable=False, name=name)
    layer.build((None, unit_index.shape[1]))
    layer.set_weights([unit_index.T])
    return layer


def centring_mean(index_embeddings: np.ndarray, center) -> np.ndarray | None:
    """The mean embedding a head subtracts: None for ``center=False``, the index's mean image embedding for
    ``True``, or ``center`` itself (a ``(dim,)`` array, e.g. the mean of a larger, unrelated image set).

    Raises :class:`CbrError` if a given mean has the wrong length or centring leaves an index image at zero.
    """
    if center is None or center is False:
        return None
    index_embeddings = np.asarray(index_embeddings, dtype=np.float32)
    if center is True:
        mean = index_embeddings.mean(axis=0, dtype=np.float64).astype(np.float32)
    else:
        mean = np.asarray(center, dtype=np.float32).reshape(-1)
        if mean.shape != (index_embeddings.shape[1],):
            raise CbrError(f"the centring mean has {mean.size} values but the embeddings have "
                           f"{index_embeddings.shape[1]} dimensions")
    if np.any(np.all(index_embeddings == mean, axis=1)):
        raise CbrError("an index image equals the mean embedding, so centring leaves it no direction; "
                       "build without centring or add more images")
    return mean


def check_index_dtype(index_dtype: str) -> None:
    """Raise :class:`CbrError` unless ``index_dtype`` is one of :data:`INDEX_DTYPES`."""
    if index_dtype not in INDEX_DTYPES:
        raise CbrError(f"unknown index dtype {index_dtype!r}: use one of {', '.join(INDEX_DTYPES)}")


def build_retrieval_head(
    index_embeddings: np.ndarray,
    image_labels,
    num_classes: int | None = None,
    aggregation: str = "max",
    per_class_ops: bool = False,
    index_dtype: str = "float32",
    int8_scale: str = "row",
    center=False,
    name: str = "retrieval_head",
) -> keras.Model:
    """The retrieval layers as a Keras model: a raw embedding ``(batch, dim)`` -> class scores ``(batch, classes)``.

    ``per_class_ops=True`` builds Google's reference aggregation (one select + max per class, max only)
    instead of the single gather + reduce of :class:`ClassAggregation`; the scores are identical.
    ``index_dtype="int8"`` stores the index as int8 with the scales ``int8_scale`` chooses
    (:mod:`cbr_lite.quantization`); convert such a head with ``to_tflite(model, quantize="int8")`` so the
    file holds those integers. Either way the layers have the same names, so two heads can be compared
    layer by layer.

    ``center`` (see :func:`centring_mean`: ``True`` for the index's mean, or a mean embedding) centres index
    and query on that mean before normalising (SimpleShot's CL2N): one :class:`SubtractMean` layer
    (a ``SUB`` op in the .tflite file) before the normalisation, and the index stored centred.
    """
    check_index_dtype(index_dtype)
    index_embeddings, image_labels, num_classes = check_index(index_embeddings, image_labels, num_classes)
    embedding = keras.Input(shape=(index_embeddings.shape[1],), name="embedding")
    query = embedding
    mean = centring_mean(index_embeddings, center)
    if mean is not None:
        query = SubtractMean.from_mean(mean, name="subtract_mean")(embedding)
        index_embeddings = index_embeddings - mean
    unit_query = L2Normalize(name="l2_normalize")(query)
    if index_dtype == "int8":
        nearest = int8_nearest_neighbour_layer(index_embeddings, int8_scale)
    else:
        nearest = nearest_neighbour_layer(index_embeddings)
    image_scores = nearest(unit_query)
    if per_class_ops:
        if aggregation != "max":
            raise CbrError("the per-class reference form supports only max aggregation")
        class_scores = PerClassSelectMax.from_labels(image_labels, num_classes, name="per_class_max")(image_scores)
    else:
        class_scores = ClassAggregation.from_labels(
            image_labels, num_classes, aggregation, name="class_aggregation"
        )(image_scores)
    return keras.Model(embedding, class_scores, name=name)


def attach_embedder(embedder, head: keras.Model) -> keras.Model:
    """The whole CbR model: a preprocessed image batch -> ``embedder`` -> ``head``'s outputs, ready to export.

    ``embedder`` is a :class:`cbr_lite.embedders.Embedder`; its model is reused, not copied. ``head`` is any
    model from an embedding to scores (this module's exact head, or :mod:`cbr_lite.ivf`'s).
    """
    height, width = embedder.input_size
    image = keras.Input(shape=(height, width, 3), name="image")
    return keras.Model(image, head(embedder.model(image)), name="cbr_classifier")


def build_classifier(embedder, index_embeddings: np.ndarray, image_labels, num_classes: int | None = None,
                     aggregation: str = "max", per_class_ops: bool = False, index_dtype: str = "float32",
                     int8_scale: str = "row", center=False) -> keras.Model:
    """The whole CbR model with the exact head of :func:`build_retrieval_head`: preprocessed images -> class scores.

    ``center=True`` centres on the index's mean embedding (or give the mean), as :func:`build_retrieval_head`.
    """
    head = build_retrieval_head(index_embeddings, image_labels, num_classes, aggregation, per_class_ops,
                                index_dtype, int8_scale, center)
    return attach_embedder(embedder, head)
