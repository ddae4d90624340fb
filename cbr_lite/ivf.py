"""An inverted-file (IVF) index inside the .tflite model: millions of classes, a few milliseconds a query.

The exact head (:mod:`cbr_lite.retrieval`) reads every index embedding for every query, so its time grows
with the index. An IVF index groups the index embeddings into ``nlist`` lists by k-means and compares a
query only with the images of the ``nprobe`` lists whose centres are nearest to it: it reads about
``nprobe / nlist`` of the index, and misses a neighbour only when that neighbour's list is not probed.

- :func:`spherical_kmeans`: seeded, deterministic k-means of unit vectors (centres are unit vectors too,
  so "nearest" is "largest cosine", as everywhere in cbr-lite).
- :class:`InvertedLists` / :func:`build_inverted_lists`: the index in list order, stored as int8 with one
  scale per image (:mod:`cbr_lite.quantization`), plus where each list starts and how long it is.
- :func:`ivf_scores`: the NumPy reference of the search (what the model computes).
- :func:`build_ivf_head`: the Keras head (layers in :mod:`cbr_lite.ivf_layers`), all TFLite builtin ops.
- how many lists and probes by default, and the CLI's ``--index`` choice: :mod:`cbr_lite.index_choice`.

>>> rng = np.random.default_rng(0)
>>> index = rng.normal(size=(200, 16)); labels = np.arange(200) % 50
>>> lists = build_inverted_lists(index, labels, 50, nlist=8)
>>> lists.nlist, int(lists.sizes.sum()), lists.vectors.dtype
(8, 200, dtype('int8'))
>>> scores, classes = ivf_scores(lists, index[:3], nprobe=8)     # every list probed: an exact search
>>> classes[:, 0].tolist() == labels[:3].tolist()
True
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from cbr_lite.errors import CbrError
from cbr_lite.index_choice import default_nlist, default_nprobe
from cbr_lite.ivf_layers import MAX_CLASSES, PADDING_SCORE, FoundClassScores, InvertedListSearch, TopClasses
from cbr_lite.layers import L2Normalize, SubtractMean
from cbr_lite.quantization import quantize_index
from cbr_lite.retrieval import nearest_neighbour_layer
from cbr_lite.similarity import check_index, l2_normalize

#: Up to this many classes the IVF head also outputs the full per-class score vector (what MediaPipe's
#: ImageClassifier reads); writing it costs one pass over ``classes`` floats per query.
FULL_SCORES_LIMIT = 100_000
#: How many classes (and scores) the small output holds.
TOP_K = 5
#: k-means trains on at most this many index images per list (a sample), as FAISS does (it uses 256).
SAMPLE_PER_LIST = 64
KMEANS_ITERATIONS = 20
_BLOCK = 65_536  # rows scored against the centres at a time, so memory stays ~nlist * 256 kB


# --------------------------------------------------------------------------------------------------
# k-means and the lists
# --------------------------------------------------------------------------------------------------


def nearest_centres(unit: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The index of the centre with the largest cosine for every row of ``unit`` (computed in blocks)."""
    return np.concatenate([np.argmax(unit[start:start + _BLOCK] @ centres.T, axis=1)
                           for start in range(0, len(unit), _BLOCK)]).astype(np.int32)


def spherical_kmeans(unit: np.ndarray, nlist: int, seed: int = 0, iterations: int = KMEANS_ITERATIONS,
                     sample_per_list: int = SAMPLE_PER_LIST) -> np.ndarray:
    """``nlist`` unit centres ``(nlist, dim)`` float32 for the unit vectors ``unit``, by spherical k-means.

    Trains on a seeded sample of at most ``sample_per_list * nlist`` rows, starting from ``nlist`` rows of it:
    each iteration assigns every sample row to its nearest centre (largest cosine) and moves each centre
    to the normalised mean of its rows. A centre left without rows restarts at the sample row that is
    farthest from its own centre. The same inputs and seed give the same centres.

    >>> unit = l2_normalize(np.random.default_rng(0).normal(size=(100, 8)))
    >>> centres = spherical_kmeans(unit, 4)
    >>> centres.shape, np.allclose(np.linalg.norm(centres, axis=1), 1), np.array_equal(centres, spherical_kmeans(unit, 4))
    ((4, 8), True, True)
    """
    unit = np.asarray(unit, dtype=np.float32)
    if not 1 <= nlist <= len(unit):
        raise CbrError(f"an IVF index of {len(unit)} images can have 1 to {len(unit)} lists, not {nlist}")
    rng = np.random.default_rng(seed)
    size = min(len(unit), sample_per_list * nlist)
    sample = unit[np.sort(rng.choice(len(unit), size=size, replace=False))] if size < len(unit) else unit
    centres = sample[np.sort(rng.choice(len(sample), size=nlist, replace=False))]
    for _ in range(iterations):
        assignment = nearest_centres(sample, centres)
        order = np.argsort(assignment, kind="stable")
        counts = np.bincount(assignment, minlength=nlist)
        sums = np.zeros_like(centres)
        filled = counts > 0
        sums[filled] = np.add.reduceat(sample[order], (np.cumsum(counts) - counts)[filled], axis=0)
        if not filled.all():
            # Restart empty centres at the rows that fit their own centre worst.
            fit = np.einsum("ij,ij->i", sample, centres[assignment])
            sums[~filled] = sample[np.argsort(fit, kind="stable")[: int((~filled).sum())]]
        new = sums / np.linalg.norm(sums, axis=1, keepdims=True)
        if np.array_equal(new, centres):
            break
        centres = new.astype(np.float32)
    return centres


@dataclass
class InvertedLists:
    """An index in IVF form. Row ``i`` (in list order) is index image ``order[i]``; list ``l`` is rows
    ``starts[l] .. starts[l] + sizes[l] - 1``; ``vectors[i] * scales[i]`` is that image's unit embedding
    (int8 with one scale per image, :func:`cbr_lite.quantization.quantize_index`); ``classes[i]`` its class."""

    centres: np.ndarray
    order: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray
    vectors: np.ndarray
    scales: np.ndarray
    classes: np.ndarray
    num_classes: int

    @property
    def nlist(self) -> int:
        return len(self.centres)

    @property
    def list_length(self) -> int:
        """The longest list: every probed list is read as this many rows (shorter ones padded)."""
        return int(self.sizes.max())

    @property
    def shots(self) -> int:
        """The most index images of one class."""
        return int(np.bincount(self.classes, minlength=self.num_classes).max())

    def nbytes(self) -> int:
        """Bytes of the arrays the model holds: int8 rows, scales, classes, centres (float32), list starts and sizes."""
        return int(sum(a.nbytes for a in (self.vectors, self.scales, self.classes, self.centres, self.starts,
                                          self.sizes)))

    def rows_read(self, nprobe: int) -> int:
        """Index rows a query reads: ``nprobe`` lists of :attr:`list_length` rows each (padding included)."""
        return int(nprobe) * self.list_length

    def summary(self, nprobe: int) -> dict:
        """What ``cbr-lite inspect`` shows (and ``cbr.json`` records) about the lists and the probes."""
        return {"nlist": self.nlist, "nprobe": int(nprobe), "list_length": self.list_length,
                "smallest_list": int(self.sizes.min()), "rows_read": self.rows_read(nprobe),
                "index_bytes": self.nbytes()}


def build_inverted_lists(index_embeddings, image_labels, num_classes: int | None = None, nlist: int | None = None,
                         seed: int = 0) -> InvertedLists:
    """Cluster the index with :func:`spherical_kmeans` and store it in list order as int8 (:class:`InvertedLists`).

    ``nlist`` defaults to :func:`default_nlist` of the number of index images.
    """
    index_embeddings, image_labels, num_classes = check_index(index_embeddings, image_labels, num_classes)
    if num_classes > MAX_CLASSES:
        raise CbrError(f"an IVF head holds at most {MAX_CLASSES:,} classes, not {num_classes:,}")
    # In blocks, so a million 256-d embeddings need no float64 copy of the whole index.
    blocks = range(0, len(index_embeddings), _BLOCK)
    unit = np.concatenate([l2_normalize(index_embeddings[start:start + _BLOCK]) for start in blocks])
    nlist = default_nlist(len(unit)) if nlist is None else int(nlist)
    centres = spherical_kmeans(unit, nlist, seed)
    assignment = nearest_centres(unit, centres)
    order = np.argsort(assignment, kind="stable")
    sizes = np.bincount(assignment, minlength=nlist).astype(np.int32)
    quantized = [quantize_index(unit[order[start:start + _BLOCK]], "row") for start in blocks]
    vectors, scales = (np.concatenate(parts) for parts in zip(*quantized))
    return InvertedLists(centres=centres, order=order, starts=(np.cumsum(sizes) - sizes).astype(np.int32),
                         sizes=sizes, vectors=vectors, scales=scales, classes=image_labels[order],
                         num_classes=num_classes)


def ivf_scores(lists: InvertedLists, queries: np.ndarray, nprobe: int, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference of the IVF head: ``(scores, classes)`` of the ``k`` best classes found, ``(queries, k)`` each.

    A class's score is the best cosine of its images in the ``nprobe`` probed lists (max aggregation,
    computed with the int8 rows); a slot left without a class is class -1 with score :data:`PADDING_SCORE`.
    """
    queries = np.atleast_2d(l2_normalize(queries))
    top_classes = np.full((len(queries), k), -1, dtype=np.int64)
    top_scores = np.full((len(queries), k), PADDING_SCORE, dtype=np.float32)
    for row, query in enumerate(queries):
        probed = np.argsort(-(lists.centres @ query), kind="stable")[:nprobe]
        rows = np.concatenate([np.arange(lists.starts[p], lists.starts[p] + lists.sizes[p]) for p in probed])
        scores = (lists.vectors[rows].astype(np.float32) @ query) * lists.scales[rows]
        best = {}
        for score, label in sorted(zip(scores.tolist(), lists.classes[rows].tolist()), reverse=True):
            best.setdefault(label, score)
        ranked = sorted(best.items(), key=lambda item: -item[1])[:k]
        top_classes[row, :len(ranked)] = [label for label, _ in ranked]
        top_scores[row, :len(ranked)] = [score for _, score in ranked]
    return top_scores, top_classes


# --------------------------------------------------------------------------------------------------
# The Keras head
# --------------------------------------------------------------------------------------------------


def build_ivf_head(lists: InvertedLists, nprobe: int | None = None, top_k: int = TOP_K,
                   full_scores: bool | None = None, mean=None, name: str = "ivf_head") -> keras.Model:
    """The IVF head for ``lists`` as a Keras model: raw embedding ``(batch, dim)`` -> a dict of outputs

    - ``class_scores`` ``(batch, classes)``, only with ``full_scores`` (default: up to
      :data:`FULL_SCORES_LIMIT` classes): every class's best score among the candidates, the lowest
      float32 for classes not found;
    - ``top_classes`` ``(batch, top_k)``: float32 class numbers, best first (-1 where fewer were found);
    - ``top_scores`` ``(batch, top_k)``: their scores.

    :func:`cbr_lite.export.to_tflite` writes them in this order (the order of their names). Aggregation is
    max: a class's score is its best image's among those found. ``nprobe`` defaults to
    :func:`cbr_lite.index_choice.default_nprobe`. ``mean`` (a ``(dim,)`` embedding, see
    :func:`cbr_lite.retrieval.centring_mean`) is subtracted from the query first, for lists built from
    index embeddings centred on it.

    >>> head = build_ivf_head(build_inverted_lists(np.eye(4), [0, 1, 2, 3], nlist=2), nprobe=2, top_k=2)
    >>> outputs = head.predict_on_batch(np.array([[0.0, 3.0, 0.1, 0.0]]))
    >>> outputs["top_classes"].tolist(), outputs["class_scores"].argmax(axis=1).tolist()
    ([[1.0, 2.0]], [1])
    """
    nprobe = default_nprobe(lists.nlist) if nprobe is None else int(nprobe)
    if not 1 <= nprobe <= lists.nlist:
        raise CbrError(f"an IVF index with {lists.nlist} lists can probe 1 to {lists.nlist} of them, not {nprobe}")
    full_scores = lists.num_classes <= FULL_SCORES_LIMIT if full_scores is None else bool(full_scores)
    images, dim = lists.vectors.shape
    embedding = keras.Input(shape=(dim,), name="embedding")
    query = embedding if mean is None else SubtractMean.from_mean(mean, name="subtract_mean")(embedding)
    unit_query = L2Normalize(name="l2_normalize")(query)
    centre_scores = nearest_neighbour_layer(lists.centres, name="coarse_centroids")(unit_query)
    search = InvertedListSearch(images, dim, lists.nlist, nprobe, lists.list_length, lists.num_classes,
                                name="inverted_lists")
    search.set_lists(lists.vectors, lists.scales, lists.classes, lists.starts, lists.sizes)
    found = search([unit_query, centre_scores])
    top_classes, top_scores = TopClasses(min(int(top_k), lists.num_classes), lists.shots, name="top_classes")(found)
    outputs = {"top_classes": top_classes, "top_scores": top_scores}
    if full_scores:
        outputs["class_scores"] = FoundClassScores(lists.num_classes, name="class_scores")(found)
    return keras.Model(embedding, outputs, name=name)
