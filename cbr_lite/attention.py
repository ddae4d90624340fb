"""Why did it match? Attention maps for an embedder with L2-CAF, which needs no class logits.

L2-CAF, the unit L2-norm *constrained attention filter* of Taha et al., *A Generic Visualization Approach
for Convolutional Neural Networks* (ECCV 2020; reference code ``ahmdtaha/constrained_attention_filter`` and
``ahmdtaha/l2_caf_pytorch``), explains one image at a time. Split the frozen network at its last
convolutional feature map ``A`` (h x w x c) and call the rest of the network ``P``. One h x w filter ``f``,
the same for every channel and applied as ``A * f / ||f||_2``, is optimised:

- **class-oblivious** (any embedder): keep ``P`` of the filtered map close to the unfiltered output,
  ``loss = mean((P(A) - P(A * f/||f||))**2)`` on the *raw* output;
- **class-specific** (``P`` ends in class scores, e.g. a CbR retrieval head): ``loss = -P(A * f/||f||)[class]``.

The map is ``|f| / || |f| ||``, resized to the image (:func:`resize_map`). ``A`` is computed once by the
*trunk* and only ``P``, the *head*, runs in the loop, which is what makes it fast. Optimisation as in the
PyTorch reference: ``f`` starts at ones, SGD (or Adam) at ``learning_rate`` decayed linearly to ``1e-5``
over ``iterations`` steps, and an image stops early when its loss changed by less than ``tolerance`` over
the last ``check_every`` steps. Images of a batch are optimised together but independently: each has its
own filter, loss and stopping point, exactly as if each were run alone.

>>> trunk, head = split_at_pool(load_embedder("glyph-cnn"))                  # doctest: +SKIP
>>> feature_maps = trunk.predict_on_batch(embedder.preprocess(images))       # doctest: +SKIP
>>> attention = l2_caf(head, feature_maps)                                     # doctest: +SKIP
>>> attention.maps.shape                                                       # doctest: +SKIP
(len(images), h, w)
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from PIL import Image

from cbr_lite.errors import CbrError

#: The optimisers of the reference code: SGD (``l2_caf_pytorch``) and Adam (the TensorFlow original).
OPTIMIZERS = ("sgd", "adam")
#: Keras' Adam defaults, which :func:`l2_caf` reproduces step for step.
ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-7


def split_at_pool(model, layer: str | None = None) -> tuple[keras.Model, keras.Model]:
    """Split a network at the feature map its global average pooling reads: ``(trunk, head)``.

    ``model`` is an :class:`~cbr_lite.embedders.Embedder` or a Keras functional model; ``layer`` names the
    pooling layer (default: the last ``GlobalAveragePooling2D``). ``trunk`` maps the model's (preprocessed)
    input to that layer's input ``A`` (batch, h, w, c); ``head`` maps ``A`` to the model's output, so
    ``head(trunk(x)) == model(x)``. Both reuse the model's own layers (no copy of a weight) and take
    inputs of any height and width: a convolutional trunk run on a larger image gives a larger ``A``.
    """
    model = getattr(model, "model", model)
    if layer is None:
        pools = [found for found in model.layers if isinstance(found, keras.layers.GlobalAveragePooling2D)]
        if not pools:
            raise CbrError(f"model {model.name!r} has no GlobalAveragePooling2D layer; name the layer to split at")
        pool = pools[-1]
    else:
        try:
            pool = model.get_layer(layer)
        except ValueError:
            raise CbrError(f"model {model.name!r} has no layer named {layer!r}") from None
    feature_map = pool.input
    if len(feature_map.shape) != 4:
        raise CbrError(f"layer {pool.name!r} reads a tensor of shape {feature_map.shape}, not a feature map "
                       "(batch, height, width, channels)")

    def same(shared):  # clone_model's hook: keep each layer, and with it its weights, instead of copying it
        return shared

    trunk = keras.models.clone_model(keras.Model(model.input, feature_map, name=f"{model.name}_trunk"),
                                     input_tensors=keras.Input((None, None, model.input.shape[-1])),
                                     clone_function=same)
    head = keras.models.clone_model(keras.Model(feature_map, model.output, name=f"{model.name}_head"),
                                    input_tensors=keras.Input((None, None, feature_map.shape[-1])),
                                    clone_function=same)
    return trunk, head


@dataclass(frozen=True)
class Attention:
    """What :func:`l2_caf` found for a batch of images."""

    filters: np.ndarray  #: (n, h, w) float32: the optimised filters f, signed and not normalised
    steps: np.ndarray    #: (n,) int: the updates each filter got before its stopping rule (or the budget) ended it
    losses: np.ndarray   #: (n,) float32: each image's loss with its final filter

    @property
    def maps(self) -> np.ndarray:
        """(n, h, w): the attention maps ``|f| / || |f| ||_2``, as the reference normalises them."""
        magnitude = np.abs(self.filters)
        return magnitude / np.linalg.norm(magnitude.reshape(len(magnitude), -1), axis=1)[:, None, None]


def learning_rate_at(step: int, learning_rate: float, iterations: int, end_learning_rate: float = 1e-5) -> float:
    """The reference's linear ("polynomial, power 1") decay from ``learning_rate`` to ``end_learning_rate``.

    >>> learning_rate_at(0, 0.5, 500), round(learning_rate_at(250, 0.5, 500), 6), learning_rate_at(500, 0.5, 500)
    (0.5, 0.250005, 1e-05)
    """
    return (learning_rate - end_learning_rate) * (1 - min(step, iterations) / iterations) + end_learning_rate


def l2_caf(head: keras.Model, feature_maps, classes=None, *, optimizer: str = "sgd", learning_rate: float = 0.5,
           iterations: int = 500, end_learning_rate: float = 1e-5, check_every: int = 50,
           tolerance: float = 1e-6) -> Attention:
    """Optimise one L2-CAF filter per image (see the module docstring) and return them as an :class:`Attention`.

    ``head`` is ``P``, from the feature maps to the network's output (:func:`split_at_pool`, or a head
    followed by a CbR retrieval head for class scores); ``feature_maps`` is ``A``, float32
    ``(n, h, w, c)``, computed once. ``classes=None`` gives the class-oblivious loss on the raw output;
    ``classes`` (one class number per image) gives the class-specific loss ``-P(A * f/||f||)[class]``.
    ``classes`` may also be weights ``(n, outputs)``, for the loss ``sum(weights * P(A * f/||f||))``: the
    reference's class-specific loss is ``+1`` for every other class and ``-1`` for the class explained.
    Every image's filter starts at ones; at step ``s`` the learning rate is :func:`learning_rate_at`; at
    steps 0, ``check_every``, ... an image whose loss changed by less than ``tolerance`` since the last
    check stops (its filter keeps that step's update). ``optimizer="adam"`` uses Keras' Adam formula.
    """
    import tensorflow as tf

    feature_maps = np.asarray(feature_maps, dtype=np.float32)
    if feature_maps.ndim != 4 or 0 in feature_maps.shape:
        raise CbrError(f"feature_maps must be a non-empty batch (n, height, width, channels), not {feature_maps.shape}")
    if optimizer not in OPTIMIZERS:
        raise CbrError(f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
    if iterations < 1 or check_every < 1:
        raise CbrError(f"iterations and check_every must be at least 1, got {iterations} and {check_every}")
    n, height, width = feature_maps.shape[:3]
    maps = tf.constant(feature_maps)
    if classes is None:
        target = tf.constant(head(maps, training=False))
        weights = None
    else:
        classes = np.asarray(classes)
        outputs = int(head.output.shape[-1])
        if classes.shape == (n, outputs) and np.issubdtype(classes.dtype, np.number):
            weights = classes.astype(np.float32)
        elif classes.shape == (n,) and np.issubdtype(classes.dtype, np.integer) and \
                classes.min() >= 0 and classes.max() < outputs:
            weights = -np.eye(outputs, dtype=np.float32)[classes]
        else:
            raise CbrError(f"classes must hold one class number in [0, {outputs}) per image ({n}), or weights "
                           f"({n}, {outputs}); not {classes.dtype} {classes.shape}")
        weights = tf.constant(weights)

    filters = tf.Variable(tf.ones((n, height, width)))
    first = tf.Variable(tf.zeros((n, height, width)))   # Adam's moment estimates
    second = tf.Variable(tf.zeros((n, height, width)))
    active = tf.Variable(tf.ones((n,)))                 # 1 while an image is still being optimised

    def image_losses(current):
        unit = current / tf.sqrt(tf.reduce_sum(tf.square(current), axis=(1, 2), keepdims=True))
        output = head(maps * unit[..., None], training=False)
        if weights is None:
            return tf.reduce_mean(tf.square(output - target), axis=-1)
        return tf.reduce_sum(output * weights, axis=-1)

    @tf.function
    def step(rate, count):
        with tf.GradientTape() as tape:
            losses = image_losses(filters)
            total = tf.reduce_sum(losses)  # images do not interact: each filter gets its own loss's gradient
        gradient = tape.gradient(total, filters)
        if gradient is None:  # a head whose output does not depend on its input: nothing to optimise
            gradient = tf.zeros_like(filters)
        if optimizer == "sgd":
            update = rate * gradient
        else:
            first.assign_add((gradient - first) * (1 - ADAM_BETA_1))
            second.assign_add((tf.square(gradient) - second) * (1 - ADAM_BETA_2))
            scale = rate * tf.sqrt(1 - ADAM_BETA_2 ** count) / (1 - ADAM_BETA_1 ** count)
            update = scale * first / (tf.sqrt(second) + ADAM_EPSILON)
        filters.assign_sub(update * active[:, None, None])
        return losses

    steps = np.full(n, iterations)
    previous = np.full(n, np.inf)
    running = np.ones(n, dtype=bool)
    for iteration in range(iterations):
        rate = learning_rate_at(iteration, learning_rate, iterations, end_learning_rate)
        losses = step(tf.constant(rate, tf.float32), tf.constant(iteration + 1, tf.float32))
        if iteration % check_every == 0:
            losses = losses.numpy()
            stopped = running & (np.abs(losses - previous) < tolerance)
            steps[stopped] = iteration + 1
            running &= ~stopped
            previous = np.where(running, losses, previous)
            if not running.any():
                break
            active.assign(running.astype(np.float32))
    final = image_losses(filters).numpy()
    return Attention(filters=filters.numpy(), steps=steps, losses=final.astype(np.float32))


def resize_map(attention_map, size) -> np.ndarray:
    """One map (h, w) resized bilinearly to ``size`` = (height, width) and min-max normalised to [0, 1].

    This is how the reference overlays a map on its image; a constant map becomes zeros.

    >>> resize_map(np.array([[1.0, 3.0]]), (2, 4)).tolist()
    [[0.0, 0.25, 0.75, 1.0], [0.0, 0.25, 0.75, 1.0]]
    """
    attention_map = np.asarray(attention_map, dtype=np.float32)
    if attention_map.ndim != 2:
        raise CbrError(f"an attention map is 2-D (height, width), not {attention_map.shape}")
    height, width = int(size[0]), int(size[1])
    resized = np.asarray(Image.fromarray(attention_map).resize((width, height), Image.BILINEAR))
    low, high = resized.min(), resized.max()
    return (resized - low) / (high - low) if high > low else np.zeros_like(resized)


def map_peak(attention_map, size) -> tuple[int, int]:
    """The pixel (row, column) where the map, resized to ``size`` by :func:`resize_map`, is largest.

    >>> map_peak(np.array([[0.0, 0.2], [0.1, 0.9]]), (64, 64))
    (48, 48)
    """
    resized = resize_map(attention_map, size)
    row, column = np.unravel_index(int(np.argmax(resized)), resized.shape)
    return int(row), int(column)
