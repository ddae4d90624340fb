"""How good is an embedder for CbR on classes it never saw? N-way K-shot episodes, and the data to run them on.

An *episode* imitates a user building a small CbR model: pick ``ways`` classes at random, give each
``shots`` index images, and classify ``queries_per_class`` other images of each class by cosine similarity
to the index, aggregated per class with the maximum (exactly what the exported CbR model does). The
accuracy averaged over many episodes, with a 95% confidence interval, is the figure of merit.

The evaluation *domains* are held out from the default embedder's training (see ``cbr_lite.glyphs``):

- ``novel-glyphs``: characters of scripts never trained on (Greek, Armenian, Hebrew, Arabic, ...);
- ``icons``: Miscellaneous Symbols and Dingbats (suns, chess pieces, scissors, ...), never trained on;
- ``handwriting``: scikit-learn's handwritten digits (8x8 scans, upsampled), a different drawing process;
- ``photo-regions``: regions of photos never trained on (astronaut, cat, coffee, ...), seen again with
  crop, zoom, rotation and colour changes - the "same object, new photo" task.

>>> images, labels, names = load_domain("handwriting")              # doctest: +SKIP
>>> embeddings = load_embedder("glyph-cnn").embed(images)            # doctest: +SKIP
>>> few_shot_accuracy(embeddings, labels, ways=5, shots=1)           # doctest: +SKIP
FewShotResult(mean=0.71, ci95=0.02)
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from cbr_lite.embedders import Embedder
from cbr_lite.errors import CbrError
from cbr_lite.similarity import class_scores, cosine_similarity

#: The evaluation domains and what each measures.
DOMAINS = {
    "novel-glyphs": "characters of 8 scripts never trained on (Greek, Armenian, Hebrew, Arabic, ...), jittered",
    "icons": "Miscellaneous Symbols and Dingbats never trained on, jittered",
    "handwriting": "scikit-learn's handwritten digits (8x8 scans upsampled to 64x64), 10 classes",
    "photo-regions": "regions of 8 photos never trained on, re-photographed with crop/zoom/rotation/colour",
}
#: Different from the training seed (0), so even the renderer's random draws differ from training.
EVALUATION_SEED = 1


class FewShotResult(NamedTuple):
    """Mean accuracy over the episodes and the half-width of its 95% confidence interval."""

    mean: float
    ci95: float


class Episode(NamedTuple):
    """One N-way K-shot episode: rows of the images it uses, and their episode class ids ``0 .. ways-1``.

    ``index_rows`` and ``query_rows`` index the embeddings (and labels) the episode was drawn from;
    ``index_labels`` and ``query_labels`` say which of the episode's classes each one belongs to (way ``w`` is
    the ``w``-th class drawn). Both are grouped by class: way 0's rows first.
    """

    index_rows: np.ndarray
    index_labels: np.ndarray
    query_rows: np.ndarray
    query_labels: np.ndarray


def episodes(labels, ways: int = 5, shots: int = 1, queries_per_class: int = 5, count: int = 200,
             seed: int = 0) -> list[Episode]:
    """The ``count`` random episodes :func:`few_shot_accuracy` scores with the same arguments and ``seed``.

    Each draws ``ways`` classes among those with at least ``shots + queries_per_class`` images (a random
    choice of positions in the sorted list of such classes), then, for each class in turn, a random
    permutation of its images: the first ``shots`` are its index images, the next ``queries_per_class``
    its queries (disjoint). Same labels and ``seed`` -> the same episodes.

    >>> first = episodes([0, 0, 1, 1, 2, 2], ways=2, shots=1, queries_per_class=1, count=3)[0]
    >>> first.index_labels.tolist(), first.query_labels.tolist()
    ([0, 1], [0, 1])
    """
    labels = np.asarray(labels)
    if ways < 2 or shots < 1 or queries_per_class < 1 or count < 1:
        raise CbrError(f"need ways >= 2, shots >= 1, queries_per_class >= 1 and episodes >= 1 (got {ways}, "
                       f"{shots}, {queries_per_class}, {count})")
    members = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    eligible = sorted(c for c, rows in members.items() if len(rows) >= shots + queries_per_class)
    if len(eligible) < ways:
        raise CbrError(f"only {len(eligible)} classes have {shots + queries_per_class} images "
                       f"({shots} shots + {queries_per_class} queries); a {ways}-way episode needs {ways}")
    rng = np.random.default_rng(seed)
    drawn = []
    for _ in range(count):
        chosen = rng.choice(len(eligible), size=ways, replace=False)
        rows = [rng.permutation(members[eligible[c]])[:shots + queries_per_class] for c in chosen]
        drawn.append(Episode(np.concatenate([r[:shots] for r in rows]), np.repeat(np.arange(ways), shots),
                             np.concatenate([r[shots:] for r in rows]),
                             np.repeat(np.arange(ways), queries_per_class)))
    return drawn


def few_shot_accuracy(
    embeddings: np.ndarray, labels: np.ndarray, ways: int = 5, shots: int = 1, episodes: int = 200,
    queries_per_class: int = 5, seed: int = 0, aggregation: str = "max", center: bool = False,
) -> FewShotResult:
    """Mean ``ways``-way ``shots``-shot CbR accuracy over ``episodes`` random episodes, and its 95% CI.

    The episodes are those :func:`episodes` draws with the same arguments (``count=episodes``): ``ways``
    classes among those with at least ``shots + queries_per_class`` images, then ``shots`` index and
    ``queries_per_class`` query images of each (disjoint). A query is assigned
    the class with the highest aggregated cosine score (:func:`cbr_lite.similarity.class_scores`,
    ``aggregation="max"`` as in the exported model). The CI is ``1.96 * std / sqrt(episodes)`` over the
    per-episode accuracies. Same inputs and ``seed`` -> the same result. ``center=True`` subtracts the
    episode's mean index embedding from index and queries before the cosine (SimpleShot's CL2N, what
    ``build_classifier(..., center=...)`` bakes into a model).

    >>> embeddings = np.eye(3)[[0, 0, 0, 1, 1, 1, 2, 2, 2]]   # three perfectly separated classes
    >>> few_shot_accuracy(embeddings, [0, 0, 0, 1, 1, 1, 2, 2, 2], ways=3, shots=1, queries_per_class=2)
    FewShotResult(mean=1.0, ci95=0.0)
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels)
    if embeddings.ndim != 2 or len(embeddings) != len(labels):
        raise CbrError(f"need embeddings (n, dim) and n labels, got {embeddings.shape} and {labels.shape}")
    drawn = _episodes(labels, ways, shots, queries_per_class, episodes, seed)
    accuracies = np.empty(len(drawn))
    for number, episode in enumerate(drawn):
        index, queries = embeddings[episode.index_rows], embeddings[episode.query_rows]
        if center:
            mean = index.mean(axis=0)
            index, queries = index - mean, queries - mean
        similarities = cosine_similarity(queries, index)
        scores = class_scores(similarities, episode.index_labels, ways, aggregation)
        accuracies[number] = np.mean(np.argmax(scores, axis=1) == episode.query_labels)
    return FewShotResult(float(accuracies.mean()), float(1.96 * accuracies.std() / np.sqrt(len(drawn))))


# few_shot_accuracy's argument ``episodes`` (a count, as callers have always passed it) hides the function.
_episodes = episodes


def raw_pixel_embedder(size: int = 32) -> Embedder:
    """The baseline: an "embedder" whose embedding is the image itself, resized to ``size x size`` and
    flattened (pixels scaled to [-1, 1] so cosine compares patterns, not overall brightness).

    Any trained embedder should beat it; where one does not, it has learnt nothing useful for that domain.
    """
    import keras

    pixels = keras.Input(shape=(size, size, 3), name="pixels")
    model = keras.Model(pixels, keras.layers.Flatten(name="flatten")(pixels), name="raw_pixels")
    return Embedder("raw-pixels", model, (size, size), (127.5,) * 3, (127.5,) * 3)


def load_domain(name: str, samples_per_class: int = 10, seed: int = EVALUATION_SEED):
    """Images of an evaluation domain: ``(images uint8 (n, 64, 64, 3), labels int (n,), class names)``.

    ``name`` is one of :data:`DOMAINS`. ``samples_per_class`` applies to the rendered domains (the
    handwriting domain has its ~180 scans per digit). Deterministic in ``seed``.
    """
    from cbr_lite import glyphs

    if name in ("novel-glyphs", "icons"):
        classes = glyphs.glyph_classes("novel" if name == "novel-glyphs" else "icons")
        # Backgrounds come from the held-out photos, so no pixel of this domain was seen in training.
        images, labels = glyphs.render_glyphs(classes, samples_per_class, seed, photos=glyphs.NOVEL_PHOTOS)
        return images, labels, [label for label, _ in classes]
    if name == "photo-regions":
        classes = glyphs.photo_classes("novel")
        images, labels = glyphs.render_photos(classes, samples_per_class, seed)
        return images, labels, [label for label, _ in classes]
    if name == "handwriting":
        return _handwritten_digits()
    raise CbrError(f"unknown evaluation domain {name!r}; choose one of: {', '.join(DOMAINS)}")


def _handwritten_digits(size: int = 64):
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 0-16 ink density -> dark ink on white paper, as a scanned digit looks.
    paper = np.rint(255.0 - digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = np.stack([
        np.asarray(Image.fromarray(scan).resize((size, size), Image.BILINEAR)) for scan in paper
    ])
    images = np.repeat(images[..., None], 3, axis=3)
    return images, digits.target.astype(np.int32), [str(d) for d in range(10)]


def evaluate(
    embed: Callable[[np.ndarray], np.ndarray] | Embedder, domains=tuple(DOMAINS), ways: int = 5,
    shots=(1, 5), episodes: int = 200, seed: int = 0, data: dict | None = None,
) -> dict:
    """Few-shot accuracy of one embedder on several domains: ``{domain: {"5-way 1-shot": {"mean", "ci95"}}}``.

    ``embed`` is an :class:`Embedder` or any function from uint8 images to embeddings. ``data`` may map
    domain names to preloaded ``(images, labels, names)`` so that several embedders share one rendering.
    """
    embed_images = embed.embed if isinstance(embed, Embedder) else embed
    results = {}
    for domain in domains:
        images, labels, _ = (data or {}).get(domain) or load_domain(domain)
        embeddings = embed_images(images)
        results[domain] = {}
        for k in shots:
            result = few_shot_accuracy(embeddings, labels, ways, k, episodes, seed=seed)
            results[domain][f"{ways}-way {k}-shot"] = {"mean": round(result.mean, 4),
                                                       "ci95": round(result.ci95, 4)}
    return results
