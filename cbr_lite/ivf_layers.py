"""The Keras layers of the inverted-file (IVF) retrieval head, in ops that convert to TFLite builtins.

An IVF head does not compare the query with every index image. The index images are grouped into
``nlist`` *lists* by k-means (:mod:`cbr_lite.ivf`); a query is compared with the list centroids first (a
bias-free ``Dense`` layer, one ``FULLY_CONNECTED`` op), and then only with the images of the ``nprobe``
lists whose centroids score best:

1. :class:`InvertedListSearch`: ``TOP_K`` of the centroid scores gives the probed lists; each is read as a
   fixed-length run of ``list_length`` index rows (``GATHER``; a shorter list is padded, and the padding
   scored :data:`PADDING_SCORE`, below any cosine); the rows are int8 with one scale per row, cast to
   float and multiplied with the query in one batched dot product (``BATCH_MATMUL``), then scaled.
   Output: the score and the class of every candidate, ``(batch, nprobe * list_length)`` each.
2. :class:`TopClasses`: the ``k`` best classes among the candidates (max aggregation), as two small
   float32 outputs (class numbers and scores).
3. :class:`FoundClassScores`: the full per-class score vector, ``(batch, classes)``, the best score of
   each class among the candidates; classes not found get the lowest float32 (one
   ``UNSORTED_SEGMENT_MAX``). It costs one write of the vector per query, so it is for models of up to a
   few hundred thousand classes; it is what MediaPipe's ``ImageClassifier`` reads.

>>> import numpy as np
>>> scores = np.array([[0.2, 0.9, 0.5, PADDING_SCORE]], dtype="float32")
>>> classes = np.array([[1, 0, 1, 3]], dtype="int32")
>>> top_classes, top_scores = TopClasses(k=2, shots=2)([scores, classes])
>>> top_classes.numpy().tolist(), top_scores.numpy().astype(float).round(2).tolist()
([[0.0, 1.0]], [[0.9, 0.5]])
>>> FoundClassScores(num_classes=3)([scores, classes]).numpy()[0].astype(float).round(2).tolist()
[0.9, 0.5, -3.4028234663852886e+38]
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

#: The score of a padding candidate (a slot past the end of a short list): below any cosine similarity.
PADDING_SCORE = -2.0
#: Class numbers leave the model as float32 (every output of a MediaPipe classifier must be float32);
#: float32 holds every integer up to 2**24 exactly.
MAX_CLASSES = 2**24


@keras.saving.register_keras_serializable(package="cbr_lite")
class InvertedListSearch(keras.layers.Layer):
    """``[unit query (batch, dim), centroid scores (batch, nlist)]`` -> ``[candidate scores, candidate classes]``.

    The index is stored in list order: list ``l`` is rows ``starts[l] .. starts[l] + sizes[l] - 1`` of
    ``vectors`` (int8 ``(images, dim)``), whose cosine with a unit query is ``vectors[i] . query * scales[i]``.
    ``classes[i]`` is the class of row ``i``. Padding candidates get class ``num_classes`` (one past the
    last) and score :data:`PADDING_SCORE`. Set the index with :meth:`set_lists`.
    """

    def __init__(self, images: int, dim: int, nlist: int, nprobe: int, list_length: int, num_classes: int,
                 **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.images, self.dim, self.nlist = int(images), int(dim), int(nlist)
        self.nprobe, self.list_length, self.num_classes = int(nprobe), int(list_length), int(num_classes)
        weight = lambda name, shape, dtype: self.add_weight(  # noqa: E731 - five weights, one pattern
            name=name, shape=shape, dtype=dtype, initializer="zeros", trainable=False)
        self.vectors = weight("vectors", (self.images, self.dim), "int8")
        self.scales = weight("scales", (self.images,), "float32")
        self.classes = weight("classes", (self.images,), "int32")
        self.starts = weight("starts", (self.nlist,), "int32")
        self.sizes = weight("sizes", (self.nlist,), "int32")

    def set_lists(self, vectors, scales, classes, starts, sizes) -> None:
        """Store the index in list order (as :class:`cbr_lite.ivf.InvertedLists` holds it)."""
        self.vectors.assign(np.asarray(vectors, dtype=np.int8))
        self.scales.assign(np.asarray(scales, dtype=np.float32))
        self.classes.assign(np.asarray(classes, dtype=np.int32))
        self.starts.assign(np.asarray(starts, dtype=np.int32))
        self.sizes.assign(np.asarray(sizes, dtype=np.int32))

    def call(self, inputs):
        unit_query, centroid_scores = inputs
        _, probes = ops.top_k(centroid_scores, k=self.nprobe)                       # (batch, nprobe)
        starts = ops.expand_dims(ops.take(self.starts, probes, axis=0), -1)       # (batch, nprobe, 1)
        sizes = ops.expand_dims(ops.take(self.sizes, probes, axis=0), -1)
        offsets = ops.reshape(ops.arange(self.list_length, dtype="int32"), (1, 1, -1))
        valid = ops.reshape(offsets < sizes, (-1, self.nprobe * self.list_length))
        # Padding slots read row 0 (any real row would do); their scores are replaced below.
        rows = ops.reshape(ops.where(offsets < sizes, starts + offsets, 0), (-1, self.nprobe * self.list_length))
        candidates = ops.cast(ops.take(self.vectors, rows, axis=0), unit_query.dtype)  # (batch, M, dim)
        dots = ops.squeeze(ops.matmul(candidates, ops.expand_dims(unit_query, -1)), -1)
        scores = dots * ops.cast(ops.take(self.scales, rows, axis=0), dots.dtype)
        scores = ops.where(valid, scores, ops.cast(PADDING_SCORE, scores.dtype))
        classes = ops.where(valid, ops.take(self.classes, rows, axis=0), self.num_classes)
        return scores, classes

    def compute_output_shape(self, input_shape):
        shape = (input_shape[0][0], self.nprobe * self.list_length)
        return shape, shape

    def get_config(self):
        config = super().get_config()
        config.update(images=self.images, dim=self.dim, nlist=self.nlist, nprobe=self.nprobe,
                      list_length=self.list_length, num_classes=self.num_classes)
        return config


@keras.saving.register_keras_serializable(package="cbr_lite")
class TopClasses(keras.layers.Layer):
    """``[candidate scores, candidate classes]`` -> ``[top classes (batch, k) float32, top scores (batch, k)]``.

    A class's score is its best candidate's (max aggregation). With at most ``shots`` index images per
    class, the ``k * shots`` best candidates hold at least ``k`` different classes, so the layer takes
    those, drops every candidate whose class already came earlier, and keeps the ``k`` best that remain.
    Where fewer than ``k`` classes were found, the remaining slots are class -1 with score
    :data:`PADDING_SCORE`.
    """

    def __init__(self, k: int, shots: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.k, self.shots = int(k), int(shots)

    def call(self, inputs):
        scores, classes = inputs
        if scores.shape[-1] < self.k:
            # Fewer candidate slots than classes asked for (a tiny index): pad, so the output has k slots.
            padding = [[0, 0], [0, self.k - scores.shape[-1]]]
            scores = ops.pad(scores, padding, constant_values=PADDING_SCORE)
            classes = ops.pad(classes, padding, constant_values=-1)
        candidates = min(self.k * self.shots, scores.shape[-1])
        best, where = ops.top_k(scores, k=candidates)
        best_classes = ops.take_along_axis(classes, where, axis=-1)
        if self.shots > 1:
            # earlier[i, j]: candidate j ranks before candidate i; a class seen earlier is a duplicate.
            earlier = np.tril(np.ones((candidates, candidates), dtype=bool), k=-1)
            same = ops.expand_dims(best_classes, -1) == ops.expand_dims(best_classes, -2)
            repeated = ops.any(ops.logical_and(same, earlier), axis=-1)
            best = ops.where(repeated, ops.cast(2 * PADDING_SCORE, best.dtype), best)
            best, where = ops.top_k(best, k=min(self.k, candidates))
            best_classes = ops.take_along_axis(best_classes, where, axis=-1)
        found = best > PADDING_SCORE
        top_classes = ops.where(found, ops.cast(best_classes, best.dtype), -1.0)
        return top_classes, ops.where(found, best, ops.cast(PADDING_SCORE, best.dtype))

    def compute_output_shape(self, input_shape):
        shape = (input_shape[0][0], self.k)
        return shape, shape

    def get_config(self):
        return {**super().get_config(), "k": self.k, "shots": self.shots}


@keras.saving.register_keras_serializable(package="cbr_lite")
class FoundClassScores(keras.layers.Layer):
    """``[candidate scores, candidate classes]`` -> one score per class ``(batch, num_classes)``.

    The best candidate score of each class; a class with no candidate gets the lowest float32. Padding
    candidates carry class ``num_classes``, which is cut off at the end.
    """

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)

    def call(self, inputs):
        scores, classes = inputs
        batch, width = ops.shape(scores)[0], self.num_classes + 1
        # One segment per (query, class): the segment op reduces a flat vector.
        segments = classes + ops.expand_dims(ops.arange(batch, dtype="int32") * width, -1)
        per_class = ops.segment_max(ops.reshape(scores, (-1,)), ops.reshape(segments, (-1,)),
                                    num_segments=batch * width)
        return ops.reshape(per_class, (-1, width))[:, : self.num_classes]

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}
