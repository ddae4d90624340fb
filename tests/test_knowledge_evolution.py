"""Tests for cbr_lite.knowledge_evolution: the fit/reset split, re-initialising the reset hypothesis, and the slim
network extracted as a smaller Keras model."""

import doctest
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

from cbr_lite import knowledge_evolution
from cbr_lite.errors import CbrError
from cbr_lite.knowledge_evolution import extract_slim, fit_masks, fit_width, slim_architecture, split_reinitialize


def small_network(widths=(4, 6), classes=5, head=True):
    """Conv/BN/ReLU stages, global pooling, a dense classifier (or the pooled features when ``head=False``)."""
    keras.utils.set_random_seed(0)
    pixels = keras.Input((8, 8, 3), name="pixels")
    x = pixels
    for i, width in enumerate(widths):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if head:
        x = keras.layers.Dense(classes, name="classifier")(x)
    return keras.Model(pixels, x)


def randomise_batch_norm(model, seed=1):
    """Give every batch normalisation non-trivial parameters and statistics, as after training."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) if i in (0, 3)
                               else rng.normal(size=w.shape).astype(np.float32)
                               for i, w in enumerate(layer.get_weights())])


def test_fit_width_rounds_up():
    assert [fit_width(n) for n in (1, 2, 5, 64)] == [1, 1, 3, 32]
    assert fit_width(10, 0.8) == 8


def test_masks_are_leading_corners_first_layer_keeps_inputs_classifier_keeps_outputs():
    model = small_network()
    masks = fit_masks(model)
    assert list(masks) == ["conv0", "conv1", "classifier"]
    for name, layer_masks in masks.items():
        assert [m.shape for m in layer_masks] == [tuple(w.shape) for w in model.get_layer(name).weights]
    conv0, conv1, (dense, bias) = masks["conv0"][0], masks["conv1"][0], masks["classifier"]
    assert conv0[:, :, :3, :2].all() and conv0.sum() == 9 * 3 * 2          # all 3 image channels, 2 of 4 filters
    assert conv1[:, :, :2, :3].all() and conv1.sum() == 9 * 2 * 3          # 2 of 4 inputs, 3 of 6 filters
    assert dense[:3, :].all() and dense.sum() == 3 * 5 and bias.all()      # 3 of 6 inputs, every class


def test_split_reinitialize_keeps_the_fit_part_and_redraws_the_rest():
    model = small_network()
    randomise_batch_norm(model)
    masks = fit_masks(model)
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}
    split_reinitialize(model, masks, np.random.default_rng(0))
    for layer in model.layers:
        after = layer.get_weights()
        if layer.name not in masks:                              # batch normalisation is not touched
            for old, new in zip(before[layer.name], after):
                np.testing.assert_array_equal(old, new)
            continue
        for old, new, mask in zip(before[layer.name], after, masks[layer.name]):
            np.testing.assert_array_equal(new[mask], old[mask])
            if old.ndim > 1:
                assert (new[~mask] != old[~mask]).all()
                assert np.abs(new[~mask]).max() <= 1 / np.sqrt(np.prod(old.shape[:-1]))
    # The classifier's bias is all fit hypothesis; the same generator state gives the same weights.
    again = small_network()
    randomise_batch_norm(again)
    split_reinitialize(again, masks, np.random.default_rng(0))
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_reset_biases_of_hidden_dense_layers_become_zero():
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(3, name="out")(keras.layers.Dense(4, bias_initializer="ones", name="hidden")(inputs))
    model = keras.Model(inputs, outputs)
    split_reinitialize(model, fit_masks(model), np.random.default_rng(0))
    np.testing.assert_array_equal(model.get_layer("hidden").bias.numpy(), [1, 1, 0, 0])
    assert model.get_layer("hidden").kernel.shape == (6, 4)


def test_extract_slim_is_the_full_network_with_the_reset_hypothesis_zeroed():
    model = small_network()
    randomise_batch_norm(model)
    slim = extract_slim(model)
    assert [slim.get_layer(f"conv{i}").filters for i in range(2)] == [2, 3]
    assert slim.get_layer("classifier").units == 5
    assert slim.count_params() < model.count_params() / 2
    images = np.random.default_rng(2).uniform(size=(4, 8, 8, 3)).astype(np.float32)
    masks = fit_masks(model)
    for layer in model.layers:
        if layer.name in masks:
            layer.set_weights([w * m for w, m in zip(layer.get_weights(), masks[layer.name])])
    np.testing.assert_allclose(slim.predict_on_batch(images), model.predict_on_batch(images), atol=1e-5)


def test_an_embedder_loses_half_of_its_embedding_and_slim_architecture_has_fresh_weights():
    model = small_network(head=False)
    assert model.output_shape == (None, 6)
    assert extract_slim(model).output_shape == (None, 3)
    assert slim_architecture(model).output_shape == (None, 3)


@pytest.mark.parametrize("layer", [keras.layers.Flatten(), keras.layers.LayerNormalization()])
def test_layers_that_cannot_be_split_are_refused(layer):
    pixels = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(pixels)
    model = keras.Model(pixels, keras.layers.Dense(2)(layer(x)))
    with pytest.raises(CbrError, match="cannot be split"):
        fit_masks(model)


def test_split_rate_must_be_a_fraction():
    with pytest.raises(CbrError, match="split rate"):
        extract_slim(small_network(), split_rate=1.0)


def test_module_examples():
    assert doctest.testmod(knowledge_evolution).failed == 0
