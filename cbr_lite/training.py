"""The offline default embedder (``glyph-cnn``): its architecture and how it is trained.

The embedder is a small VGG-style CNN: 64x64 RGB in [0, 1] -> a raw ``EMBEDDING_DIM`` vector. It is
trained as a *cosine classifier* (normalised softmax, as in face recognition's CosFace): the embedding
is L2-normalised, multiplied by a matrix of L2-normalised class weight vectors, the cosines are scaled by
``scale`` (a margin ``margin`` is subtracted from the true class first), and softmax cross-entropy is
minimised over the *base* classes only. Training on cosines is what makes the embedding useful for
retrieval: images of one class end up in the same direction, whatever class they are, so new (novel)
classes can be recognised by cosine nearest neighbour without retraining.

Only stock Keras layers are used, so the saved embedder loads with ``safe_mode=True``; the classifier
head exists only during training and is not saved.

>>> embedder = build_embedder()                          # doctest: +SKIP
>>> trainer = build_trainer(embedder, num_classes=100)   # doctest: +SKIP
"""

from __future__ import annotations

import time

import keras
import numpy as np

from cbr_lite.errors import CbrError

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

    Convolutions are followed by BatchNormalization and ReLU; global average pooling makes the features
    independent of where in the image the object is; a final linear ``Dense`` gives the embedding.
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


def build_trainer(embedder: keras.Model, num_classes: int, scale: float = 16.0) -> keras.Model:
    """Wrap ``embedder`` in the training-only cosine classifier: pixels -> ``scale * cos(embedding, class)``.

    The class weights are kept at unit length by a ``UnitNorm`` constraint (applied after every update),
    so the bias-free ``Dense`` layer outputs exactly the cosines between embedding and class directions.
    """
    inputs = keras.Input(shape=embedder.input_shape[1:], name="pixels")
    unit = keras.layers.UnitNormalization(name="unit_embedding")(embedder(inputs))
    cosines = keras.layers.Dense(
        num_classes, use_bias=False, kernel_constraint=keras.constraints.UnitNorm(axis=0),
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.05), name="class_directions",
    )(unit)
    logits = keras.layers.Rescaling(scale, name="scale")(cosines)
    return keras.Model(inputs, logits, name="cosine_classifier")


def margin_loss(num_classes: int, scale: float = 16.0, margin: float = 0.2):
    """CosFace loss on scaled cosines: subtract ``scale * margin`` from the true class's logit, then
    softmax cross-entropy. The margin asks each class to be closer than its rivals by a gap, which
    spreads classes apart and generalises better to unseen classes than plain softmax."""
    import tensorflow as tf

    def loss(labels, logits):
        labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        logits = logits - scale * margin * tf.one_hot(labels, num_classes, dtype=logits.dtype)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))

    return loss


def augment_batch(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cheap per-batch jitter of uint8 images -> float32 in [0, 1]: random shift up to 4 pixels (with edge
    padding), per-image brightness/contrast, and colour-channel permutation, so no rendered sample is
    seen twice identically."""
    n, height, width, _ = images.shape
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="edge")
    out = np.empty((n, height, width, 3), np.float32)
    for i in range(n):
        dy, dx = rng.integers(0, 9, size=2)
        out[i] = padded[i, dy:dy + height, dx:dx + width][..., rng.permutation(3)]
    out /= 255.0
    mean = out.mean(axis=(1, 2, 3), keepdims=True)
    contrast = rng.uniform(0.7, 1.3, size=(n, 1, 1, 1)).astype(np.float32)
    shift = rng.uniform(-0.1, 0.1, size=(n, 1, 1, 1)).astype(np.float32)
    return np.clip((out - mean) * contrast + mean + shift, 0.0, 1.0)


def train(
    images: np.ndarray, labels: np.ndarray, steps: int, seed: int = 0, batch_size: int = 128,
    learning_rate: float = 2e-3, scale: float = 16.0, margin: float = 0.2,
    embedding_dim: int = EMBEDDING_DIM, widths=WIDTHS, depths=DEPTHS, log=print, log_every: int = 100,
) -> tuple[keras.Model, dict]:
    """Train a new embedder on uint8 ``images (n, 64, 64, 3)`` with integer class ``labels (n,)``.

    AdamW with a linear warm-up and cosine decay, ``steps`` batches of ``batch_size`` drawn (without
    replacement, epoch by epoch) from a generator seeded with ``seed``. Same inputs and seed -> the same
    weights (call :func:`make_deterministic` first). ``widths``/``depths`` are passed to
    :func:`build_embedder` (smaller ones make quick tests). Returns ``(embedder, history)``; ``history`` has the
    loss and training accuracy every ``log_every`` steps and the training seconds.
    """
    images = np.asarray(images)
    labels = np.asarray(labels, dtype=np.int32)
    if images.ndim != 4 or images.shape[1:] != (*INPUT_SIZE, 3) or images.dtype != np.uint8:
        raise CbrError(f"training images must be uint8 (n, {INPUT_SIZE[0]}, {INPUT_SIZE[1]}, 3), got "
                       f"{images.dtype} {images.shape}")
    if len(labels) != len(images) or steps < 1:
        raise CbrError(f"need one label per image and steps >= 1 (got {len(labels)} labels, "
                       f"{len(images)} images, {steps} steps)")
    num_classes = int(labels.max()) + 1
    embedder = build_embedder(embedding_dim, widths, depths)
    trainer = build_trainer(embedder, num_classes, scale)
    warmup = max(1, min(steps // 10, 500))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, steps - warmup), warmup_target=learning_rate, warmup_steps=warmup, alpha=0.02)
    trainer.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=5e-4),
                    loss=margin_loss(num_classes, scale, margin), jit_compile=False)
    rng = np.random.default_rng(seed)
    order, position = rng.permutation(len(images)), 0
    history = {"step": [], "loss": [], "accuracy": []}
    losses, hits, seen = [], 0, 0
    start = time.perf_counter()
    for step in range(1, steps + 1):
        if position + batch_size > len(order):
            order, position = rng.permutation(len(images)), 0
        batch = order[position:position + batch_size]
        position += batch_size
        pixels = augment_batch(images[batch], rng)
        loss = trainer.train_on_batch(pixels, labels[batch])
        losses.append(float(np.asarray(loss).ravel()[0]))
        if step % log_every == 0 or step == steps:
            logits = trainer.predict_on_batch(pixels)
            hits += int((np.argmax(logits, axis=1) == labels[batch]).sum())
            seen += len(batch)
            history["step"].append(step)
            history["loss"].append(float(np.mean(losses)))
            history["accuracy"].append(hits / seen)
            log(f"step {step}/{steps}  loss {np.mean(losses):.3f}  batch accuracy {hits / seen:.3f}  "
                f"{time.perf_counter() - start:.0f} s")
            losses, hits, seen = [], 0, 0
    history["seconds"] = time.perf_counter() - start
    return embedder, history


def make_deterministic(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and make TensorFlow's ops deterministic (same seed -> same weights)."""
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
