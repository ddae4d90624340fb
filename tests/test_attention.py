"""L2-CAF attention maps (cbr_lite.attention) on tiny models whose right answers are known."""

import keras
import numpy as np
import pytest

from cbr_lite.attention import Attention, l2_caf, learning_rate_at, map_peak, resize_map, split_at_pool
from cbr_lite.embedders import Embedder
from cbr_lite.errors import CbrError


def tiny_network(pool=True):
    """pixels (8x8x3) -> conv (4 channels) -> ReLU -> global average pooling -> Dense(3)."""
    rng = np.random.default_rng(0)
    pixels = keras.Input((8, 8, 3), name="pixels")
    conv = keras.layers.Conv2D(4, 3, padding="same", name="conv")
    x = keras.layers.ReLU(name="relu")(conv(pixels))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x) if pool else keras.layers.Flatten(name="flat")(x)
    dense = keras.layers.Dense(3, name="embedding")
    model = keras.Model(pixels, dense(x), name="tiny")
    conv.set_weights([rng.normal(size=(3, 3, 3, 4)).astype("float32"), np.full(4, 0.1, "float32")])
    dense.set_weights([rng.normal(size=dense.kernel.shape).astype("float32"), np.zeros(3, "float32")])
    return model


def average_pooling_head(channels):
    """P = global average pooling alone (as EfficientNet-Lite0's): linear, no weights."""
    maps = keras.Input((None, None, channels))
    return keras.Model(maps, keras.layers.GlobalAveragePooling2D()(maps))


def class_score_head(kernel):
    """P = global average pooling, then a bias-free Dense: one linear "score" per class."""
    maps = keras.Input((None, None, kernel.shape[0]))
    dense = keras.layers.Dense(kernel.shape[1], use_bias=False)
    head = keras.Model(maps, dense(keras.layers.GlobalAveragePooling2D()(maps)))
    dense.set_weights([np.asarray(kernel, "float32")])
    return head


# ------------------------------------------------------------------------------------------------ splitting
def test_the_two_halves_compute_the_model_and_share_its_layers():
    model = tiny_network()
    trunk, head = split_at_pool(model)
    images = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype("float32")
    feature_maps = trunk.predict_on_batch(images)
    assert feature_maps.shape == (2, 8, 8, 4)
    np.testing.assert_allclose(head.predict_on_batch(feature_maps), model.predict_on_batch(images), atol=1e-5)
    assert model.get_layer("conv") in trunk.layers and model.get_layer("embedding") in head.layers
    # Any input size: the trunk is convolutional, the head pools whatever map it gets.
    assert trunk.predict_on_batch(np.zeros((1, 12, 16, 3), "float32")).shape == (1, 12, 16, 4)
    assert head.predict_on_batch(np.ones((1, 3, 5, 4), "float32")).shape == (1, 3)


def test_an_embedder_a_named_layer_and_the_errors():
    model = tiny_network()
    embedder = Embedder("tiny", model, (8, 8), (0.0,) * 3, (1.0,) * 3)
    trunk, _ = split_at_pool(embedder, layer="relu")  # split at the input of any layer that reads a feature map
    assert trunk.output.shape[-1] == 4 and model.get_layer("conv") in trunk.layers
    with pytest.raises(CbrError, match="no layer named 'nope'"):
        split_at_pool(model, layer="nope")
    with pytest.raises(CbrError, match="not a feature map"):
        split_at_pool(model, layer="embedding")
    with pytest.raises(CbrError, match="no GlobalAveragePooling2D"):
        split_at_pool(tiny_network(pool=False))


# ------------------------------------------------------------------------------------------- the optimiser
def test_class_oblivious_keeps_the_only_cell_that_carries_the_output():
    feature_maps = np.zeros((1, 3, 3, 2), "float32")
    feature_maps[0, 2, 1] = [1.0, 2.0]
    attention = l2_caf(average_pooling_head(2), feature_maps, optimizer="adam")
    assert isinstance(attention, Attention) and attention.maps.shape == (1, 3, 3)
    assert np.unravel_index(attention.maps[0].argmax(), (3, 3)) == (2, 1)
    assert attention.maps[0, 2, 1] > 0.99 and attention.losses[0] < 1e-6
    np.testing.assert_allclose(np.linalg.norm(attention.maps[0]), 1.0, rtol=1e-6)


def test_a_uniform_filter_is_where_it_starts_and_the_optimum_beats_it():
    feature_maps = np.random.default_rng(2).uniform(0, 1, size=(2, 4, 4, 3)).astype("float32")
    head = average_pooling_head(3)
    start = l2_caf(head, feature_maps, iterations=1, learning_rate=0.0, end_learning_rate=0.0)
    np.testing.assert_array_equal(start.filters, np.ones((2, 4, 4)))
    np.testing.assert_allclose(start.maps, np.full((2, 4, 4), 0.25))
    # A uniform unit filter shrinks the average by 1/sqrt(16): loss = mean((1 - 1/4)^2 * mean(A)^2).
    expected = np.mean((0.75 * feature_maps.mean(axis=(1, 2))) ** 2, axis=1)
    np.testing.assert_allclose(start.losses, expected, rtol=1e-5)
    assert np.all(l2_caf(head, feature_maps, optimizer="adam").losses < start.losses)


def test_images_in_a_batch_are_optimised_independently():
    feature_maps = np.random.default_rng(3).uniform(0, 1, size=(3, 3, 3, 4)).astype("float32")
    feature_maps[1] *= 50  # a far larger loss: SGD's steps differ from the others', and it stops elsewhere
    head = average_pooling_head(4)
    together = l2_caf(head, feature_maps, iterations=120, check_every=20)
    for i in range(3):
        alone = l2_caf(head, feature_maps[i:i + 1], iterations=120, check_every=20)
        np.testing.assert_allclose(together.filters[i], alone.filters[0], rtol=1e-5, atol=1e-6)
        assert together.steps[i] == alone.steps[0]


def test_the_stopping_rule_checks_every_check_every_steps():
    # The loss cannot change (P ignores its input): the check at step 0 compares with nothing, the next stops.
    maps = keras.Input((None, None, 2))
    constant = keras.Model(maps, keras.layers.Lambda(lambda x: keras.ops.zeros_like(x[:, 0, 0, :]))(maps))
    attention = l2_caf(constant, np.ones((2, 2, 2, 2), "float32"), check_every=50)
    np.testing.assert_array_equal(attention.steps, [51, 51])
    # Without the rule firing, every image gets the whole budget.
    moving = l2_caf(average_pooling_head(2), np.random.default_rng(4).uniform(size=(1, 2, 2, 2)).astype("float32"),
                    iterations=30, check_every=50, tolerance=0.0)
    assert moving.steps.tolist() == [30]


def test_sgd_follows_the_reference_update():
    """Two steps of the loop by hand: f <- f - lr(step) * d loss / d f, with the linear decay."""
    import tensorflow as tf

    feature_maps = np.random.default_rng(5).uniform(0, 1, size=(1, 2, 3, 2)).astype("float32")
    head = average_pooling_head(2)
    target = head(feature_maps)
    filters = tf.Variable(tf.ones((1, 2, 3)))
    for step in range(2):
        with tf.GradientTape() as tape:
            unit = filters / tf.norm(filters)
            loss = tf.reduce_mean(tf.square(head(feature_maps * unit[..., None]) - target))
        filters.assign_sub(learning_rate_at(step, 10.0, 2) * tape.gradient(loss, filters))
    attention = l2_caf(head, feature_maps, learning_rate=10.0, iterations=2)
    np.testing.assert_allclose(attention.filters, filters.numpy(), rtol=1e-5)


def test_class_specific_maps_point_at_their_class():
    # Channel 0 (class 0's evidence) lives in the left column, channel 1 (class 1's) in the right one.
    feature_maps = np.zeros((2, 3, 3, 2), "float32")
    feature_maps[:, :, 0, 0] = 1.0
    feature_maps[:, :, 2, 1] = 1.0
    head = class_score_head(np.eye(2))
    attention = l2_caf(head, feature_maps, classes=np.array([0, 1]), optimizer="adam")
    assert [np.unravel_index(m.argmax(), m.shape)[1] for m in attention.maps] == [0, 2]
    # The same as weights: -1 for the class explained (the reference adds +1 for every other class).
    weighted = l2_caf(head, feature_maps, classes=-np.eye(2, dtype="float32"), optimizer="adam")
    np.testing.assert_allclose(weighted.filters, attention.filters, rtol=1e-6)


@pytest.mark.parametrize("bad, message", [
    ({"feature_maps": np.zeros((3, 3, 2), "float32")}, "non-empty batch"),
    ({"optimizer": "rmsprop"}, "unknown optimizer"),
    ({"iterations": 0}, "at least 1"),
    ({"classes": np.array([0, 2])}, "one class number"),
    ({"classes": np.array([0.0, 1.0])}, "one class number"),
    ({"classes": np.zeros((2, 3))}, "one class number"),
])
def test_bad_arguments_are_one_line_errors(bad, message):
    arguments = {"feature_maps": np.ones((2, 2, 2, 2), "float32"), **bad}
    with pytest.raises(CbrError, match=message):
        l2_caf(class_score_head(np.eye(2)), **arguments)


# -------------------------------------------------------------------------------------------------- maps
def test_resize_and_peak():
    attention_map = np.array([[0.1, 0.2], [0.3, 0.9]])
    resized = resize_map(attention_map, (20, 30))
    assert resized.shape == (20, 30) and resized.min() == 0.0 and resized.max() == 1.0
    row, column = map_peak(attention_map, (20, 30))
    assert row >= 10 and column >= 15  # in the bottom-right quarter, where the largest cell is
    np.testing.assert_array_equal(resize_map(np.full((2, 2), 0.5), (4, 4)), np.zeros((4, 4)))
    with pytest.raises(CbrError, match="2-D"):
        resize_map(np.ones((1, 2, 2)), (4, 4))
