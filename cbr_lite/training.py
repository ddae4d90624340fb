"""The offline default embedder (``glyph-cnn``): its architecture, the losses it is trained with, and the loop.

The embedder is a small VGG-style CNN: 64x64 RGB in [0, 1] -> a raw ``EMBEDDING_DIM`` vector. It is
trained as a *cosine classifier* (normalised softmax, as in face recognition's CosFace): the embedding is
L2-normalised and multiplied by a matrix of L2-normalised class vectors, the cosines are scaled by
``scale`` (after a margin is subtracted from the true class's), and softmax cross-entropy is minimised over
the *base* classes only. That head is itself a CbR head with one *learnt* vector per class instead of
index images, which is why the embedding transfers: images of a class end up pointing one way, whatever
the class, so new (novel) classes are recognised by cosine nearest neighbour without retraining.

Two additions from Taha's thesis *Closing the Gap Between Classification and Retrieval Models* can join
the classification loss (``train(..., triplet_weight=..., svmax_weight=...)``):

- a **retrieval head** on the same embedding: the batch-hard triplet loss (:func:`batch_hard_triplet_loss`)
  over batches of P classes x K images (:func:`class_balanced_batches`);
- **SVMax** (:func:`mean_singular_value`): the mean singular value of a batch of unit embeddings, between
  ``sqrt(b)/d`` when they collapse onto one direction and ``sqrt(b/d)`` when they spread evenly
  (:func:`svmax_bounds`); subtracting ``svmax_weight`` times it from the loss pushes against collapse.

Only stock Keras layers are in the embedder, so it saves and loads with ``safe_mode=True``; the class
vectors exist only during training and are not saved.

>>> embedder = build_embedder()                                     # doctest: +SKIP
>>> embedder, history = train(images, labels, steps=6000)          # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import tempfile
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from cbr_lite.errors import CbrError
from cbr_lite.metadata import ZIP_DATE

INPUT_SIZE = (64, 64)
EMBEDDING_DIM = 128
#: Stage widths: each stage is DEPTHS 3x3 convolutions then a 2x2 max pool. A stride-2 5x5 convolution comes
#: first, because convolutions at the full 64x64 resolution would dominate the training time.
WIDTHS = (32, 64, 128, 256)
#: 3x3 convolutions per stage: two only at 8x8, where they are cheapest (training must fit 2 CPU cores).
DEPTHS = (1, 1, 2, 1)


def build_embedder(
    embedding_dim: int = EMBEDDING_DIM, widths=WIDTHS, depths=DEPTHS, name: str = "glyph_cnn",
) -> keras.Model:
    """The embedding network: float32 ``(n, 64, 64, 3)`` pixels in [0, 1] -> raw ``(n, embedding_dim)``.

    Convolutions are followed by BatchNormalization and ReLU; global average pooling (the layer named
    ``"pool"``) makes the features independent of where in the image the object is; a final linear
    ``Dense`` named ``"embedding"`` gives the embedding.
    """
    inputs = keras.Input(shape=(*INPUT_SIZE, 3), name="pixels")
    x = keras.layers.Conv2D(widths[0], 5, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, (width, depth) in enumerate(zip(widths, depths)):
        for k in range(depth):
            x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"s{stage}_conv{k}")(x)
            x = keras.layers.BatchNormalization(name=f"s{stage}_bn{k}")(x)
            x = keras.layers.ReLU(name=f"s{stage}_relu{k}")(x)
        if stage < len(widths) - 1:
            x = keras.layers.MaxPooling2D(2, name=f"s{stage}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    embedding = keras.layers.Dense(embedding_dim, name="embedding")(x)
    return keras.Model(inputs, embedding, name=name)


#: Config keys that Keras 3.13+ writes, with the defaults it writes them at, and that Keras 3.12 (the newest
#: release for Python 3.10) refuses as unknown arguments. Left out of a saved embedder when at their default.
_NEWER_KERAS_DEFAULTS = {
    "GlorotUniform": {"input_axes": None, "output_axes": None},
    "BatchNormalization": {"renorm": False, "renorm_clipping": None, "renorm_momentum": 0.99},
    "Dense": {"quantization_config": None},
    "InputLayer": {"optional": False},
}
#: Every date inside a saved embedder is metadata.ZIP_DATE: the file depends only on the weights, not on
#: when it was written. Keras' metadata.json writes it as "1980-01-01@00:00:00".
_SAVE_DATE = "{:04d}-{:02d}-{:02d}@{:02d}:{:02d}:{:02d}".format(*ZIP_DATE)


def embedder_file_bytes(embedder: keras.Model) -> bytes:
    """The embedder as the bytes of a ``.keras`` file that every supported Keras loads with ``safe_mode=True``.

    Keras saves to a path; its ``config.json`` is then stripped of the keys newer Keras versions add at
    their defaults (:data:`_NEWER_KERAS_DEFAULTS`; Keras 3.12 would refuse them), and the save date and the
    zip entries' dates are fixed, so the same weights always give the same bytes.
    """
    def strip(node):
        if isinstance(node, dict):
            config = node.get("config")
            for key, default in _NEWER_KERAS_DEFAULTS.get(node.get("class_name"), {}).items():
                if isinstance(config, dict) and key in config and config[key] == default:
                    del config[key]
            for value in node.values():
                strip(value)
        elif isinstance(node, list):
            for value in node:
                strip(value)

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "embedder.keras"
        embedder.save(path)
        stream = io.BytesIO()
        with zipfile.ZipFile(path) as saved, zipfile.ZipFile(stream, "w") as portable:
            for entry in saved.infolist():
                data = saved.read(entry)
                if entry.filename == "config.json":
                    config = json.loads(data)
                    strip(config)
                    data = json.dumps(config).encode()
                elif entry.filename == "metadata.json":
                    data = json.dumps(json.loads(data) | {"date_saved": _SAVE_DATE}).encode()
                fixed = zipfile.ZipInfo(entry.filename, date_time=ZIP_DATE)
                fixed.compress_type, fixed.external_attr = entry.compress_type, entry.external_attr
                portable.writestr(fixed, data)
    return stream.getvalue()


# ----------------------------------------------------------------------------------------------- the losses


def cosface_logits(cosines, labels, scale: float = 16.0, margin: float = 0.2):
    """CosFace logits: ``scale * (cos - margin)`` for each row's true class, ``scale * cos`` for the others.

    ``cosines (b, classes)`` are cosines between unit embeddings and unit class vectors; ``labels (b,)``
    integers. The margin asks each image to be closer to its own class than to any rival by a gap, which
    spreads the classes apart and transfers better to classes never trained on than plain softmax.
    """
    import tensorflow as tf

    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    return scale * (cosines - margin * tf.one_hot(labels, tf.shape(cosines)[1], dtype=cosines.dtype))


def margin_loss(num_classes: int, scale: float = 16.0, margin: float = 0.2):
    """A Keras loss ``(labels, scaled cosines) -> mean CosFace cross-entropy`` for a model whose output is
    ``scale * cos`` (the margin is subtracted here, from the true class's logit, before the softmax)."""
    import tensorflow as tf

    def loss(labels, logits):
        labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        logits = logits - scale * margin * tf.one_hot(labels, num_classes, dtype=logits.dtype)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))

    return loss


def batch_hard_triplet_loss(unit_embeddings, labels, margin: float = 0.2):
    """The batch-hard triplet loss (Hermans et al. 2017) on unit embeddings ``(b, d)`` with labels ``(b,)``.

    For each image: its *farthest* same-class image (hardest positive) must be closer, by ``margin`` in
    Euclidean distance, than its *nearest* other-class image (hardest negative); the loss is the mean
    hinge ``max(0, d_pos - d_neg + margin)``. Batches need several images per class
    (:func:`class_balanced_batches`); an image alone in its class has no positive and counts zero.
    """
    import tensorflow as tf

    labels = tf.reshape(labels, [-1])
    squared = tf.maximum(2.0 - 2.0 * tf.matmul(unit_embeddings, unit_embeddings, transpose_b=True), 0.0)
    distances = tf.sqrt(squared + 1e-12)
    same = tf.equal(labels[:, None], labels[None, :])
    others = tf.logical_not(tf.eye(tf.shape(labels)[0], dtype=tf.bool))
    positive = tf.logical_and(same, others)
    hardest_positive = tf.reduce_max(tf.where(positive, distances, 0.0), axis=1)
    hardest_negative = tf.reduce_min(tf.where(same, 4.0, distances), axis=1)
    has_positive = tf.cast(tf.reduce_any(positive, axis=1), distances.dtype)
    return tf.reduce_mean(has_positive * tf.nn.relu(hardest_positive - hardest_negative + margin))


def mean_singular_value(unit_embeddings):
    """SVMax's statistic: the mean singular value of a batch of L2-normalised embeddings ``(b, d)``.

    Works on NumPy arrays and TensorFlow tensors (then it is differentiable). See :func:`svmax_bounds`.

    >>> round(float(mean_singular_value(np.eye(4))), 6)                          # orthonormal: sqrt(b/d)
    1.0
    >>> round(float(mean_singular_value(np.tile([[1.0, 0, 0, 0]], (4, 1)))), 6)  # collapsed: sqrt(b)/d
    0.5
    """
    if isinstance(unit_embeddings, np.ndarray):
        return np.linalg.svd(unit_embeddings, compute_uv=False).mean()
    import tensorflow as tf

    singular_values, _, _ = tf.linalg.svd(unit_embeddings, full_matrices=False, compute_uv=True)
    return tf.reduce_mean(singular_values)


def svmax_bounds(batch_size: int, dim: int) -> tuple[float, float]:
    """``(lowest, highest)`` mean singular value of ``batch_size`` unit vectors in ``dim`` dimensions
    (``batch_size >= dim``): ``sqrt(b)/d`` when all rows are one vector, ``sqrt(b/d)`` when they spread evenly.

    >>> svmax_bounds(16, 4)
    (1.0, 2.0)
    """
    if batch_size < dim:
        raise CbrError(f"the SVMax bounds need at least as many rows as dimensions, got {batch_size} < {dim}")
    return float(np.sqrt(batch_size) / dim), float(np.sqrt(batch_size / dim))


# ----------------------------------------------------------------------------------------------- the data


def class_balanced_batches(labels: np.ndarray, classes_per_batch: int, images_per_class: int,
                           rng: np.random.Generator):
    """Endless batches of row numbers: ``classes_per_batch`` classes x ``images_per_class`` images each.

    Classes are visited in a fresh random order each pass, so every class comes up equally often; a class's
    images are drawn without replacement when it has enough. Deterministic in ``rng``.
    """
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], np.arange(int(labels.max()) + 2))
    members = [order[starts[c]:starts[c + 1]] for c in range(len(starts) - 1)]
    classes = np.array([c for c, rows in enumerate(members) if len(rows)])
    if len(classes) < classes_per_batch:
        raise CbrError(f"a batch of {classes_per_batch} classes needs that many classes, got {len(classes)}")
    queue, position = rng.permutation(classes), 0
    while True:
        if position + classes_per_batch > len(queue):
            queue, position = rng.permutation(classes), 0
        chosen = queue[position:position + classes_per_batch]
        position += classes_per_batch
        rows = [rng.choice(members[c], size=images_per_class, replace=len(members[c]) < images_per_class)
                for c in chosen]
        yield np.concatenate(rows)


def augment_batch(images: np.ndarray, rng: np.random.Generator, low_resolution: float = 0.0) -> np.ndarray:
    """Cheap per-batch jitter of uint8 images -> float32 in [0, 1], so no rendered sample is seen twice alike.

    Random shift up to 4 pixels (edge padding), colour-channel permutation, per-image brightness and
    contrast; with probability ``low_resolution`` an image is shrunk to 8-32 pixels and enlarged back, as
    small scans (scikit-learn's 8x8 digits) and thumbnails look.
    """
    n, height, width, _ = images.shape
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="edge")
    out = np.empty((n, height, width, 3), np.float32)
    for i in range(n):
        dy, dx = rng.integers(0, 9, size=2)
        image = padded[i, dy:dy + height, dx:dx + width][..., rng.permutation(3)]
        if low_resolution and rng.random() < low_resolution:
            side = int(rng.integers(8, 33))
            small = Image.fromarray(np.ascontiguousarray(image)).resize((side, side), Image.BOX)
            image = np.asarray(small.resize((width, height), Image.BILINEAR))
        out[i] = image
    out /= 255.0
    mean = out.mean(axis=(1, 2, 3), keepdims=True)
    contrast = rng.uniform(0.7, 1.3, size=(n, 1, 1, 1)).astype(np.float32)
    shift = rng.uniform(-0.1, 0.1, size=(n, 1, 1, 1)).astype(np.float32)
    return np.clip((out - mean) * contrast + mean + shift, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------- the loop


def train(
    images: np.ndarray, labels: np.ndarray, steps: int, seed: int = 0, batch_size: int = 128,
    images_per_class: int = 4, grouped_fraction: float = 1.0, learning_rate: float = 2e-3,
    weight_decay: float = 5e-4, scale: float = 16.0,
    margin: float = 0.2, triplet_weight: float = 0.0, triplet_margin: float = 0.2, svmax_weight: float = 0.0,
    low_resolution: float = 0.0, embedding_dim: int = EMBEDDING_DIM, widths=WIDTHS, depths=DEPTHS,
    log=print, log_every: int = 100,
) -> tuple[keras.Model, dict]:
    """Train a new embedder on uint8 ``images (n, 64, 64, 3)`` with integer class ``labels (n,)``.

    Each of the ``steps`` batches holds ``grouped_fraction`` of ``batch_size`` as classes x
    ``images_per_class`` images (:func:`class_balanced_batches`; the triplet head needs such groups) and
    the rest as single images of as many classes, jittered by :func:`augment_batch`. Single images suit
    the classification head: with thousands of classes, groups of 4 bring 4x fewer classes per batch and
    (measured on glyph-cnn's 2,312 classes) the embedding collapses instead of learning. The loss is the CosFace
    cross-entropy against one learnt unit vector per class (``scale``, ``margin``), plus
    ``triplet_weight`` x the batch-hard triplet loss, minus ``svmax_weight`` x the batch's mean singular
    value. AdamW with a linear warm-up and cosine decay. Same inputs and seed -> the same weights (call
    :func:`make_deterministic` first). Returns ``(embedder, history)``: ``history`` has the mean loss,
    training accuracy and mean singular value every ``log_every`` steps, the training seconds, and the learnt
    unit class vectors ``(classes, embedding_dim)`` (``"class_vectors"``: the training head's CbR index).
    """
    import tensorflow as tf

    images = np.asarray(images)
    labels = np.asarray(labels, dtype=np.int32)
    if images.ndim != 4 or images.shape[1:] != (*INPUT_SIZE, 3) or images.dtype != np.uint8:
        raise CbrError(f"training images must be uint8 (n, {INPUT_SIZE[0]}, {INPUT_SIZE[1]}, 3), got "
                       f"{images.dtype} {images.shape}")
    if len(labels) != len(images) or steps < 1:
        raise CbrError(f"need one label per image and steps >= 1 (got {len(labels)} labels, "
                       f"{len(images)} images, {steps} steps)")
    grouped = int(round(batch_size * grouped_fraction))
    if images_per_class < 1 or grouped % images_per_class or not 0.0 <= grouped_fraction <= 1.0:
        raise CbrError(f"the grouped part of the batch ({grouped_fraction} x {batch_size}) must be a multiple of "
                       f"images_per_class ({images_per_class})")
    num_classes = int(labels.max()) + 1
    embedder = build_embedder(embedding_dim, widths, depths)
    class_vectors = keras.Variable(
        keras.initializers.RandomNormal(stddev=0.05)((num_classes, embedding_dim)), name="class_vectors")
    variables = embedder.trainable_variables + [class_vectors]
    warmup = max(1, min(steps // 10, 500))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, steps - warmup), warmup_target=learning_rate, warmup_steps=warmup, alpha=0.02)
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=weight_decay)
    optimizer.build(variables)

    @tf.function
    def step(pixels, batch_labels):
        with tf.GradientTape() as tape:
            unit = tf.math.l2_normalize(embedder(pixels, training=True), axis=1)
            cosines = tf.matmul(unit, tf.math.l2_normalize(class_vectors, axis=1), transpose_b=True)
            logits = cosface_logits(cosines, batch_labels, scale, margin)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(batch_labels, logits))
            # Logged in every run; it joins the loss (and costs a gradient) only with svmax_weight.
            spread = mean_singular_value(unit if svmax_weight else tf.stop_gradient(unit))
            total = loss - svmax_weight * spread if svmax_weight else loss
            if triplet_weight:
                total += triplet_weight * batch_hard_triplet_loss(unit, batch_labels, triplet_margin)
        optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
        hits = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(cosines, axis=1, output_type=tf.int32), batch_labels),
                                      tf.float32))
        return loss, hits, spread

    rng = np.random.default_rng(seed)
    groups = class_balanced_batches(labels, grouped // images_per_class, images_per_class, rng) if grouped else None
    singles = class_balanced_batches(labels, batch_size - grouped, 1, rng) if grouped < batch_size else None
    history = {"step": [], "loss": [], "accuracy": [], "mean_singular_value": []}
    window = []
    start = time.perf_counter()
    for number in range(1, steps + 1):
        rows = np.concatenate([next(part) for part in (groups, singles) if part is not None])
        pixels = augment_batch(images[rows], rng, low_resolution)
        window.append([float(value) for value in step(tf.constant(pixels), tf.constant(labels[rows]))])
        if number % log_every == 0 or number == steps:
            loss, accuracy, spread = np.mean(window, axis=0)
            history["step"].append(number)
            history["loss"].append(float(loss))
            history["accuracy"].append(float(accuracy))
            history["mean_singular_value"].append(float(spread))
            log(f"step {number}/{steps}  loss {loss:.3f}  batch accuracy {accuracy:.3f}  "
                f"{time.perf_counter() - start:.0f} s")
            window = []
    history["seconds"] = time.perf_counter() - start
    history["class_vectors"] = keras.ops.convert_to_numpy(tf.math.l2_normalize(class_vectors, axis=1))
    return embedder, history


def make_deterministic(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and make TensorFlow's ops deterministic (same seed -> same weights)."""
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
