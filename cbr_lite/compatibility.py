"""Compatible embedders: a small query model whose embeddings are searched against a large gallery model's.

In *heterogeneous* visual search (Duggal et al., *Compatibility-aware Heterogeneous Visual Search*, CVPR
2021) the gallery is embedded once, offline, by a large model, and each query on the device by a small
one. That works only if the two models are *compatible*: a query's embedding must be comparable, by
cosine, with the gallery embeddings of the other model. Two independently trained embedders are not (each
training picks its own directions), whatever their dimensions.

BCT (Shen et al., *Towards Backward-Compatible Representation Learning*, CVPR 2020; reimplemented in
``YantaoShen/openBCT``) makes a new model compatible with a fixed one by its *influence loss*: the new
model is trained with its own classifier *and* through the fixed model's classifier, frozen. For classes
that classifier never had, openBCT builds a pseudo classifier from the fixed model's mean embedding per
class; for a cosine embedder like ``glyph-cnn`` these are the unit class means
(:func:`gallery_classifier`), and the frozen layer is exactly a CbR index layer
(:func:`cbr_lite.retrieval.nearest_neighbour_layer`).

>>> classifier = gallery_classifier(large.embed(train_images), train_labels)          # doctest: +SKIP
>>> small, history = train_query_model(train_images, train_labels, classifier)         # doctest: +SKIP
>>> cross_model_few_shot_accuracy(small_embeddings, large_embeddings, novel_labels)    # doctest: +SKIP
FewShotResult(mean=0.45, ci95=0.02)
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np

from cbr_lite.errors import CbrError
from cbr_lite.evaluation import FewShotResult
from cbr_lite.evaluation import episodes as draw_episodes
from cbr_lite.similarity import class_scores, cosine_similarity, l2_normalize

#: The small query model: ``cbr_lite.training.build_embedder`` with these stage widths and depths (a stride-2
#: stem, then 3x3 convolutions only at 16x16 and 8x8), about a tenth of glyph-cnn's multiply-adds per image.
QUERY_WIDTHS = (16, 32, 64)
QUERY_DEPTHS = (0, 1, 1)


def gallery_classifier(embeddings: np.ndarray, labels, num_classes: int | None = None) -> np.ndarray:
    """The frozen classifier BCT trains through, for classes the gallery model has no classifier for: the
    unit mean of the gallery model's embeddings of each class, ``(num_classes, dim)`` float32.

    openBCT's pseudo classifier is the plain class mean; the unit mean is its cosine form, the one a model
    trained as a cosine classifier (as glyph-cnn is) would have learnt. Every class needs an image.

    >>> gallery_classifier(np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]]), [0, 1, 1])
    array([[1., 0.],
           [0., 1.]], dtype=float32)
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels)
    if embeddings.ndim != 2 or len(embeddings) != len(labels):
        raise CbrError(f"need embeddings (n, dim) and n labels, got {embeddings.shape} and {labels.shape}")
    num_classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    counts = np.bincount(labels, minlength=num_classes)
    if len(counts) > num_classes or np.any(counts == 0):
        raise CbrError(f"every class 0..{num_classes - 1} needs at least one image, and no label may be larger")
    sums = np.zeros((num_classes, embeddings.shape[1]), np.float64)
    np.add.at(sums, labels, embeddings)
    return l2_normalize((sums / counts[:, None]).astype(np.float32))


def influence_loss(query_embeddings: np.ndarray, labels, classifier: np.ndarray, scale: float = 16.0,
                   margin: float = 0.2) -> float:
    """BCT's influence loss in NumPy (the reference the Keras trainer is checked against): the mean
    cross-entropy of the query model's unit embeddings through the frozen ``classifier`` (unit rows), with
    the loss the gallery model was trained with (CosFace: ``scale * (cos - margin)`` for the true class,
    ``scale * cos`` for the others; ``margin=0`` is the plain normalised softmax).
    """
    cosines = l2_normalize(np.asarray(query_embeddings, np.float64)) @ np.asarray(classifier, np.float64).T
    labels = np.asarray(labels)
    rows = np.arange(len(labels))
    logits = scale * cosines
    logits[rows, labels] -= scale * margin
    logits -= logits.max(axis=1, keepdims=True)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-log_softmax[rows, labels].mean())


def build_compatible_trainer(query_model: keras.Model, num_classes: int, classifier: np.ndarray | None = None,
                             scale: float = 16.0) -> keras.Model:
    """The training-only model around ``query_model``: pixels -> ``[own logits]``, or with a frozen
    ``classifier`` (unit rows, ``(classes, dim)``) ``[own logits, gallery logits]``.

    Both heads see the L2-normalised embedding and give ``scale * cos``. The own head's class vectors are
    learnt (kept at unit length); the gallery head is :func:`cbr_lite.retrieval.nearest_neighbour_layer` of
    ``classifier``, a CbR index layer, not trainable.
    """
    from cbr_lite.retrieval import nearest_neighbour_layer

    pixels = keras.Input(shape=query_model.input_shape[1:], name="pixels")
    unit = keras.layers.UnitNormalization(name="unit_embedding")(query_model(pixels))
    own = keras.layers.Dense(
        num_classes, use_bias=False, kernel_constraint=keras.constraints.UnitNorm(axis=0),
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.05), name="own_classifier")(unit)
    outputs = [keras.layers.Rescaling(scale, name="own_scale")(own)]
    if classifier is not None:
        classifier = np.asarray(classifier, dtype=np.float32)
        if classifier.shape != (num_classes, query_model.output_shape[-1]):
            raise CbrError(f"the gallery classifier has shape {classifier.shape}, but the query model needs "
                           f"({num_classes}, {query_model.output_shape[-1]}): one row per class, one column "
                           "per embedding dimension (compatible models share one space)")
        gallery = nearest_neighbour_layer(classifier, name="gallery_classifier")(unit)
        outputs.append(keras.layers.Rescaling(scale, name="gallery_scale")(gallery))
    return keras.Model(pixels, outputs, name="compatible_trainer")


def train_query_model(
    images: np.ndarray, labels, classifier: np.ndarray | None = None, influence_weight: float = 1.0,
    steps: int = 300, seed: int = 0, batch_size: int = 128, learning_rate: float = 6e-3, scale: float = 16.0,
    margin: float = 0.2, embedding_dim: int = 128, widths=QUERY_WIDTHS, depths=QUERY_DEPTHS,
    name: str = "query_model",
) -> tuple[keras.Model, dict]:
    """Train a small embedder on uint8 ``images (n, 64, 64, 3)`` with class ``labels (n,)``: alone
    (``classifier=None``: CosFace through its own classifier, as ``glyph-cnn`` was trained), or with BCT's
    influence loss (own loss ``+ influence_weight x`` the same loss through the frozen ``classifier``).

    The network is :func:`cbr_lite.training.build_embedder` with ``widths``/``depths``; batches are drawn
    epoch by epoch from a generator seeded with ``seed`` and jittered by
    :func:`cbr_lite.training.augment_batch` (the next batch while the model trains on this one); AdamW with
    a linear warm-up and cosine decay. Same inputs and seed -> the same weights (after
    :func:`cbr_lite.training.make_deterministic`). Returns ``(embedder, history)``; ``history`` has the mean
    own and influence losses over the last tenth of the steps (influence ``None`` without a classifier) and
    the training seconds.
    """
    from cbr_lite.training import augment_batch, build_embedder, margin_loss

    images = np.asarray(images)
    labels = np.asarray(labels, dtype=np.int32)
    if images.ndim != 4 or images.shape[1:] != (64, 64, 3) or images.dtype != np.uint8:
        raise CbrError(f"training images must be uint8 (n, 64, 64, 3), got {images.dtype} {images.shape}")
    if len(labels) != len(images) or steps < 1 or batch_size < 1:
        raise CbrError(f"need one label per image, steps >= 1 and batch_size >= 1 (got {len(labels)} labels, "
                       f"{len(images)} images, {steps} steps, batch {batch_size})")
    num_classes = int(labels.max()) + 1
    keras.utils.set_random_seed(seed)
    embedder = build_embedder(embedding_dim, widths, depths, name=name)
    trainer = build_compatible_trainer(embedder, num_classes, classifier, scale)
    warmup = max(1, steps // 10)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, steps - warmup), warmup_target=learning_rate, warmup_steps=warmup, alpha=0.02)
    heads = len(trainer.outputs)
    trainer.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=5e-4),
                    loss=[margin_loss(num_classes, scale, margin)] * heads,
                    loss_weights=[1.0, float(influence_weight)][:heads], jit_compile=False)
    rng = np.random.default_rng(seed)
    batch_size = min(batch_size, len(images))
    state = {"order": rng.permutation(len(images)), "position": 0}

    def next_batch():
        if state["position"] + batch_size > len(images):
            state["order"], state["position"] = rng.permutation(len(images)), 0
        rows = state["order"][state["position"]:state["position"] + batch_size]
        state["position"] += batch_size
        return augment_batch(images[rows], rng), labels[rows]

    losses = []
    start = time.perf_counter()
    # One worker jitters the next batch (NumPy) while Keras trains on this one: the batches and their order
    # are those of a plain loop, since only that worker draws from ``rng``, one batch after another.
    with ThreadPoolExecutor(max_workers=1) as worker:
        pending = worker.submit(next_batch)
        for step in range(steps):
            pixels, batch_labels = pending.result()
            if step + 1 < steps:
                pending = worker.submit(next_batch)
            result = trainer.train_on_batch(pixels, [batch_labels] * heads)
            # [total, own, influence] with two heads; the total alone with one.
            losses.append(np.ravel(result)[-heads:].astype(float))
    last = np.mean(losses[-max(1, steps // 10):], axis=0)
    history = {"own_loss": float(last[0]), "influence_loss": float(last[1]) if heads == 2 else None,
               "seconds": time.perf_counter() - start}
    return embedder, history


def cross_model_few_shot_accuracy(
    query_embeddings: np.ndarray, gallery_embeddings: np.ndarray, labels, ways: int = 5, shots: int = 1,
    episodes: int = 200, queries_per_class: int = 5, seed: int = 0,
) -> FewShotResult:
    """N-way K-shot CbR accuracy with the index embedded by one model and the queries by another.

    ``query_embeddings`` and ``gallery_embeddings`` are the same images (row ``i`` is image ``i``, label
    ``labels[i]``) embedded by the query and the gallery model. The episodes are exactly those of
    :func:`cbr_lite.evaluation.few_shot_accuracy` with the same arguments: index images take their gallery
    embedding, queries their query embedding, scored by cosine and the per-class maximum. With the same
    embeddings on both sides the result equals ``few_shot_accuracy``'s.

    >>> same = np.eye(3)[[0, 0, 1, 1, 2, 2]]
    >>> cross_model_few_shot_accuracy(same, same, [0, 0, 1, 1, 2, 2], ways=3, queries_per_class=1)
    FewShotResult(mean=1.0, ci95=0.0)
    """
    queries = np.asarray(query_embeddings, dtype=np.float32)
    gallery = np.asarray(gallery_embeddings, dtype=np.float32)
    labels = np.asarray(labels)
    if queries.ndim != 2 or gallery.ndim != 2 or len(queries) != len(labels) or len(gallery) != len(labels):
        raise CbrError(f"need query and gallery embeddings (n, dim) of the same n images and n labels, got "
                       f"{queries.shape}, {gallery.shape} and {labels.shape}")
    if queries.shape[1] != gallery.shape[1]:
        raise CbrError(f"the query embeddings have {queries.shape[1]} dimensions and the gallery's "
                       f"{gallery.shape[1]}: compatible models share one space, so they need the same number")
    # The same episodes, in the same order, as cbr_lite.evaluation.few_shot_accuracy.
    drawn = draw_episodes(labels, ways, shots, queries_per_class, episodes, seed)
    accuracies = np.empty(len(drawn))
    for number, episode in enumerate(drawn):
        similarities = cosine_similarity(queries[episode.query_rows], gallery[episode.index_rows])
        scores = class_scores(similarities, episode.index_labels, ways)
        accuracies[number] = np.mean(np.argmax(scores, axis=1) == episode.query_labels)
    return FewShotResult(float(accuracies.mean()), float(1.96 * accuracies.std() / np.sqrt(episodes)))


def multiply_adds(model: keras.Model) -> int:
    """Multiply-adds to embed one image: the sum over the model's ``Conv2D``, ``DepthwiseConv2D`` and
    ``Dense`` layers (nested models included) of output values x inputs each one reads. Normalisation,
    activations and pooling add a few percent and are left out, as papers count "MACs" or "FLOPs / 2".
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += multiply_adds(layer)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            kernel_height, kernel_width = layer.kernel_size
            total += int(np.prod(layer.output.shape[1:])) * kernel_height * kernel_width
        elif isinstance(layer, keras.layers.Conv2D):
            kernel_height, kernel_width = layer.kernel_size
            inputs = layer.input.shape[-1] // layer.groups
            total += int(np.prod(layer.output.shape[1:])) * kernel_height * kernel_width * inputs
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.output.shape[1:])) * layer.input.shape[-1]
    return total
