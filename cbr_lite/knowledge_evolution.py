"""Knowledge Evolution (Taha et al., CVPR 2021): training on a few images per class in generations, and the
slim network that comes out of it.

Every convolution and dense layer is split into a *fit hypothesis* and a *reset hypothesis*. With the split
rate ``s`` (0.5 in the paper), the fit hypothesis of a layer is its first ``ceil(s * filters)`` filters,
restricted to the first ``ceil(s * inputs)`` input channels: the leading corner of its kernel. Two layers
keep more: the first one reads every input channel (the image has only three), and a layer that produces a
model output (the classifier) keeps every output. Everything else in the kernel is the reset hypothesis.

Training runs in generations. After each one, :func:`split_reinitialize` keeps the fit hypothesis and draws
the reset hypothesis afresh, and the next generation starts with a new optimiser. The fit hypothesis alone is
a network of its own, about ``s**2`` of the size: :func:`extract_slim` builds it as a real, narrower Keras
model. This follows the reference code (``ahmdtaha/knowledge_evolution``: the ``kels`` split of
``SplitConv``/``SplitLinear``, ``split_reinitialize`` with ``evolve_mode="rand"``, ``extract_slim``), where
batch normalisation is never re-initialised and the slim network takes the first channels of its statistics.

>>> import keras
>>> pixels = keras.Input((8, 8, 3))
>>> features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(6, 3, name="conv")(pixels))
>>> model = keras.Model(pixels, keras.layers.Dense(4, name="classifier")(features))
>>> {name: [int(mask.sum()) for mask in masks] for name, masks in fit_masks(model).items()}
{'conv': [81, 3], 'classifier': [12, 4]}
>>> extract_slim(model).count_params(), model.count_params()
(100, 196)
"""

from __future__ import annotations

import math

import keras
import numpy as np

from cbr_lite.errors import CbrError

#: The paper's split rate: half of the filters and half of the inputs of each layer are the fit hypothesis.
SPLIT_RATE = 0.5
#: The layers that are split (their kernels hold the two hypotheses).
SPLIT_LAYERS = (keras.layers.Conv2D, keras.layers.Dense)
#: Layers that would mix channels with positions or with each other, so that "the first channels" of
#: their output are not the fit channels of their input.
_UNSUPPORTED = (keras.layers.Flatten, keras.layers.Reshape, keras.layers.Concatenate,
                keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D, keras.layers.Conv2DTranspose)


def fit_width(width: int, split_rate: float = SPLIT_RATE) -> int:
    """How many of ``width`` filters (or inputs) belong to the fit hypothesis: ``ceil(split_rate * width)``.

    >>> fit_width(64), fit_width(5)
    (32, 3)
    """
    return math.ceil(split_rate * width)


def _check(model: keras.Model, split_rate: float) -> None:
    if not 0.0 < split_rate < 1.0:
        raise CbrError(f"the split rate must lie strictly between 0 and 1, got {split_rate}")
    for layer in model.layers:
        if isinstance(layer, _UNSUPPORTED) or (
                layer.weights and not isinstance(layer, (*SPLIT_LAYERS, keras.layers.BatchNormalization))):
            raise CbrError(f"layer {layer.name!r} ({type(layer).__name__}) cannot be split into fit and reset "
                           "hypotheses here: use Conv2D, Dense and BatchNormalization, with channel-wise layers "
                           "(activations, pooling, global pooling, addition) between them")


def _output_layers(model: keras.Model) -> set[str]:
    outputs = {id(tensor) for tensor in model.outputs}
    return {layer.name for layer in model.layers if id(layer.output) in outputs}


def slim_architecture(model: keras.Model, split_rate: float = SPLIT_RATE) -> keras.Model:
    """A copy of ``model``'s architecture with ``fit_width`` filters (units) in every split layer, except the
    layers that produce a model output, which keep their width. Its weights are fresh (see :func:`extract_slim`).
    """
    _check(model, split_rate)
    keep = _output_layers(model)

    def narrower(layer):
        config = layer.get_config()
        if isinstance(layer, SPLIT_LAYERS) and layer.name not in keep:
            key = "filters" if isinstance(layer, keras.layers.Conv2D) else "units"
            config[key] = fit_width(config[key], split_rate)
        return type(layer).from_config(config)

    return keras.models.clone_model(model, clone_function=narrower)


def _corner(shape) -> tuple[slice, ...]:
    return tuple(slice(0, size) for size in shape)


def fit_masks(model: keras.Model, split_rate: float = SPLIT_RATE) -> dict[str, list[np.ndarray]]:
    """The fit hypothesis of every split layer: ``{layer name: [a boolean mask per weight]}``, the masks in
    the order of ``layer.weights`` (kernel, then bias), True on the fit hypothesis.

    Each mask is the leading corner of its weight that the slim network (:func:`slim_architecture`) keeps:
    ``kernel[..., :fit inputs, :fit filters]`` and ``bias[:fit filters]``.
    """
    slim = slim_architecture(model, split_rate)
    masks = {}
    for layer in model.layers:
        if isinstance(layer, SPLIT_LAYERS):
            masks[layer.name] = []
            for weight, slim_weight in zip(layer.weights, slim.get_layer(layer.name).weights):
                mask = np.zeros(weight.shape, dtype=bool)
                mask[_corner(slim_weight.shape)] = True
                masks[layer.name].append(mask)
    return masks


def reset_values(shape, rng: np.random.Generator) -> np.ndarray:
    """Fresh kernel values for the reset hypothesis, drawn as the reference draws them: uniform in
    ``+-1/sqrt(fan_in)`` (PyTorch's default, ``kaiming_uniform_(a=sqrt(5))``), ``fan_in`` being the kernel's
    size without its output axis. Keras' equivalent is ``VarianceScaling(1/3, "fan_in", "uniform")``.
    """
    limit = 1.0 / math.sqrt(math.prod(shape[:-1]))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)


def split_reinitialize(model: keras.Model, masks: dict[str, list[np.ndarray]], rng: np.random.Generator) -> None:
    """Keep the fit hypothesis of every layer in ``masks`` and re-initialise its reset hypothesis, in place:
    kernels from :func:`reset_values`, biases to zero (Keras' default). Layers are visited in ``model.layers``
    order, kernel before bias, so the same ``rng`` state gives the same weights. Batch normalisation is left
    as it is (the reference does not re-initialise it).
    """
    for layer in model.layers:
        if layer.name not in masks:
            continue
        for weight, mask in zip(layer.weights, masks[layer.name]):
            value = keras.ops.convert_to_numpy(weight)
            fresh = reset_values(value.shape, rng) if value.ndim > 1 else np.zeros_like(value)
            weight.assign(np.where(mask, value, fresh))


def extract_slim(model: keras.Model, split_rate: float = SPLIT_RATE) -> keras.Model:
    """The fit hypothesis of ``model`` as a real, narrower Keras model (:func:`slim_architecture`), with the
    leading corner of every weight copied in: kernels, biases and batch-normalisation parameters and statistics.

    Its outputs are those of ``model`` with the reset hypothesis set to zero.
    """
    slim = slim_architecture(model, split_rate)
    for slim_layer in slim.layers:
        if not slim_layer.weights:
            continue
        layer = model.get_layer(slim_layer.name)
        for slim_weight, weight in zip(slim_layer.weights, layer.weights):
            slim_weight.assign(keras.ops.convert_to_numpy(weight)[_corner(slim_weight.shape)])
    return slim
