"""Assembling CbR models: index embeddings in, Keras models out. No training anywhere.

>>> import numpy as np
>>> index = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
>>> head = build_retrieval_head(index, image_labels=[0, 1, 0], num_classes=2)
>>> print(head.predict_on_batch(np.array([[3.0, 0.1]])).round(3))
[[0.999 0.033]]
"""

from __future__ import annotations

import keras
import numpy as np

from cbr_lite.errors import CbrError
from cbr_lite.layers import ClassAggregation, L2Normalize, PerClassSelectMax
from cbr_lite.similarity import l2_normalize


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


def check_index(index_embeddings: np.ndarray, image_labels, num_classes: int | None = None):
    """Validate an index and return it as ``(float32 embeddings, int labels, num_classes)``.

    Raises :class:`CbrError` for a shape mismatch, an empty index, a class without images, or a single
    class (a classifier with one class answers the same whatever it is shown).
    """
    index_embeddings = np.asarray(index_embeddings, dtype=np.float32)
    image_labels = np.asarray(image_labels)
    if index_embeddings.ndim != 2 or len(index_embeddings) == 0:
        raise CbrError(f"index embeddings must be a non-empty (images, dim) array, got shape {index_embeddings.shape}")
    if image_labels.ndim != 1:
        raise CbrError(
            f"image labels must be a flat list of class numbers, got an array of shape {image_labels.shape}"
        )
    if image_labels.shape != (len(index_embeddings),):
        raise CbrError(f"{len(index_embeddings)} index embeddings but {image_labels.size} image labels")
    if not np.issubdtype(image_labels.dtype, np.integer) or image_labels.min() < 0:
        raise CbrError("image labels must be class numbers 0, 1, 2, ...")
    if num_classes is None:
        num_classes = int(image_labels.max()) + 1
    if num_classes < 2:
        raise CbrError(
            "a classifier needs at least two classes: with one it gives the same answer for every image"
        )
    return index_embeddings, image_labels.astype(np.int32), num_classes


def build_retrieval_head(
    index_embeddings: np.ndarray,
    image_labels,
    num_classes: int | None = None,
    aggregation: str = "max",
    per_class_ops: bool = False,
    name: str = "retrieval_head",
) -> keras.Model:
    """The retrieval layers as a Keras model: a raw embedding ``(batch, dim)`` -> class scores ``(batch, classes)``.

    ``per_class_ops=True`` builds Google's reference aggregation (one select + max per class, max only)
    instead of the single gather + reduce of :class:`ClassAggregation`; the scores are identical.
    """
    index_embeddings, image_labels, num_classes = check_index(index_embeddings, image_labels, num_classes)
    embedding = keras.Input(shape=(index_embeddings.shape[1],), name="embedding")
    unit_query = L2Normalize(name="l2_normalize")(embedding)
    image_scores = nearest_neighbour_layer(index_embeddings)(unit_query)
    if per_class_ops:
        if aggregation != "max":
            raise CbrError("the per-class reference form supports only max aggregation")
        class_scores = PerClassSelectMax.from_labels(image_labels, num_classes, name="per_class_max")(image_scores)
    else:
        class_scores = ClassAggregation.from_labels(
            image_labels, num_classes, aggregation, name="class_aggregation"
        )(image_scores)
    return keras.Model(embedding, class_scores, name=name)


def build_classifier(embedder, index_embeddings: np.ndarray, image_labels, num_classes: int | None = None,
                     aggregation: str = "max", per_class_ops: bool = False) -> keras.Model:
    """The whole CbR model: a preprocessed image batch -> class scores, ready to export.

    ``embedder`` is a :class:`cbr_lite.embedders.Embedder`; its model is reused, not copied.
    """
    head = build_retrieval_head(index_embeddings, image_labels, num_classes, aggregation, per_class_ops)
    height, width = embedder.input_size
    image = keras.Input(shape=(height, width, 3), name="image")
    return keras.Model(image, head(embedder.model(image)), name="cbr_classifier")
