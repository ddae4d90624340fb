"""The maths of nearest-neighbour matching, in NumPy.

For unit vectors a and b, ``||a - b||^2 = 2 - 2 a.b``: ranking index images by cosine similarity
(largest first) is the same as ranking them by squared L2 distance (smallest first). These functions
are the NumPy reference that the Keras layers and the TFLite models are checked against.

>>> import numpy as np
>>> a, b = l2_normalize(np.array([[3.0, 4.0], [1.0, 0.0]]))
>>> round(float(squared_l2(a, b)[0, 0]), 6), round(float(2 - 2 * a @ b), 6)
(0.8, 0.8)
"""

from __future__ import annotations

import numpy as np

from cbr_lite.errors import CbrError


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Scale each row of ``vectors`` to unit L2 length.

    A zero row has no direction, so it cannot be matched by cosine similarity: it raises
    :class:`CbrError` naming the row rather than silently becoming NaN.

    >>> print(l2_normalize(np.array([[3.0, 4.0]])))
    [[0.6 0.8]]
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    squeeze = vectors.ndim == 1
    vectors = np.atleast_2d(vectors)
    # Divide by the largest magnitude first so that squaring neither overflows nor underflows.
    scale = np.max(np.abs(vectors), axis=-1, keepdims=True)
    zero_rows = np.flatnonzero(scale[:, 0] == 0)
    if zero_rows.size:
        raise CbrError(
            f"embedding row {int(zero_rows[0])} is a zero vector and has no direction to compare; "
            "check that the image it came from is not blank"
        )
    if not np.all(np.isfinite(vectors)):
        raise CbrError("embeddings contain NaN or infinity; check the embedder's input")
    scaled = vectors / scale
    unit = scaled / np.linalg.norm(scaled, axis=-1, keepdims=True)
    unit = unit.astype(np.float32)
    return unit[0] if squeeze else unit


def cosine_similarity(queries: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Cosine similarity of every query row with every index row: shape ``(queries, index)``."""
    return np.atleast_2d(l2_normalize(queries)) @ np.atleast_2d(l2_normalize(index)).T


def squared_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distance between every row of ``a`` and every row of ``b``: shape ``(len(a), len(b))``.

    Written as the plain sum of squared differences (not via the dot-product identity) because it is
    the reference the identity is checked against.
    """
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(b, dtype=np.float64))
    return np.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)


def class_scores(
    similarities: np.ndarray, image_labels: np.ndarray, num_classes: int, aggregation: str = "max"
) -> np.ndarray:
    """Aggregate per-image similarities ``(queries, images)`` into per-class scores ``(queries, classes)``.

    ``aggregation`` is ``"max"`` (the score of the best-matching index image, as Google's reference),
    ``"mean"``, or ``"topk:K"`` (the mean of the K best matches of the class; fewer if it has fewer).
    This is the NumPy reference for :class:`cbr_lite.layers.ClassAggregation`.
    """
    similarities = np.atleast_2d(similarities)
    image_labels = np.asarray(image_labels)
    kind, k = parse_aggregation(aggregation)
    scores = np.empty((similarities.shape[0], num_classes), dtype=np.float32)
    for c in range(num_classes):
        members = similarities[:, image_labels == c]
        if members.shape[1] == 0:
            raise CbrError(f"class {c} has no index images")
        if kind == "max":
            scores[:, c] = members.max(axis=1)
        elif kind == "mean":
            scores[:, c] = members.mean(axis=1)
        else:
            best = -np.sort(-members, axis=1)[:, :k]
            scores[:, c] = best.mean(axis=1)
    return scores


def check_index(index_embeddings: np.ndarray, image_labels, num_classes: int | None = None):
    """Validate an index and return it as ``(float32 embeddings, int32 labels, num_classes)``.

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


def parse_aggregation(aggregation: str) -> tuple[str, int]:
    """Split an aggregation name into its kind and K: ``"topk:3"`` -> ``("topk", 3)``, ``"max"`` -> ``("max", 1)``."""
    if aggregation in ("max", "mean"):
        return aggregation, 1
    if isinstance(aggregation, str) and aggregation.startswith("topk:"):
        try:
            k = int(aggregation.split(":", 1)[1])
        except ValueError:
            k = 0
        if k >= 1:
            return "topk", k
    raise CbrError(f"unknown aggregation {aggregation!r}: use max, mean or topk:K with K >= 1")
