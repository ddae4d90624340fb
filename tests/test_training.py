"""Tests for cbr_lite.training: training is reproducible and the embedder saves and loads safely."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

from cbr_lite.errors import CbrError
from cbr_lite.training import (EMBEDDING_DIM, augment_batch, batch_hard_triplet_loss, build_embedder,
                               class_balanced_batches, embedder_file_bytes, make_deterministic, mean_singular_value, svmax_bounds,
                               train)


def _data():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 64, 64, 3), dtype=np.uint8)
    return images, np.arange(16) % 4


def _two_steps(seed):
    make_deterministic(seed)
    images, labels = _data()
    # A narrow network runs the same code path (data order, augmentation, optimiser) in a fraction of the time.
    embedder, history = train(images, labels, steps=2, seed=seed, batch_size=8, widths=(8, 8, 8, 8),
                              embedding_dim=16, triplet_weight=1.0, svmax_weight=0.1, low_resolution=0.5,
                              log=lambda line: None)
    return embedder, history


def test_same_seed_gives_identical_weights_and_training_changes_them():
    first, history = _two_steps(0)
    second, _ = _two_steps(0)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    # The same seed also gives the same *initial* weights, so this shows that the two steps moved them.
    make_deterministic(0)
    initial = build_embedder(16, widths=(8, 8, 8, 8)).get_weights()
    assert any(not np.array_equal(a, c) for a, c in zip(first.get_weights(), initial))
    assert history["step"] == [2] and np.isfinite(history["loss"][0])
    # The training head's learnt class vectors come back as unit rows, one per class.
    assert history["class_vectors"].shape == (4, 16)
    np.testing.assert_allclose(np.linalg.norm(history["class_vectors"], axis=1), 1.0, rtol=1e-5)


def test_embedder_file_loads_with_safe_mode_gives_the_same_embeddings_and_is_reproducible(tmp_path):
    embedder = build_embedder()
    data = embedder_file_bytes(embedder)
    path = tmp_path / "embedder.keras"
    path.write_bytes(data)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    pixels = np.random.default_rng(1).random((3, 64, 64, 3)).astype(np.float32)
    expected = embedder.predict_on_batch(pixels)
    assert expected.shape == (3, EMBEDDING_DIM)
    np.testing.assert_allclose(loaded.predict_on_batch(pixels), expected, rtol=1e-5, atol=1e-6)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in loaded.layers)
    assert embedder_file_bytes(embedder) == data  # no save date or zip timestamps in the file


def test_embedder_file_has_no_config_keys_that_keras_3_12_refuses():
    import json
    import zipfile
    from io import BytesIO

    from cbr_lite.training import _NEWER_KERAS_DEFAULTS

    config = zipfile.ZipFile(BytesIO(embedder_file_bytes(build_embedder(16, (8, 8, 8, 8))))).read("config.json")
    refused = {key for keys in _NEWER_KERAS_DEFAULTS.values() for key in keys}
    found = set()

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("config"), dict):
                found.update(set(node["config"]) & refused)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(config))
    assert not found


def test_augmentation_keeps_shape_and_range_and_is_seeded():
    images, _ = _data()
    a = augment_batch(images, np.random.default_rng(5))
    b = augment_batch(images, np.random.default_rng(5))
    assert a.shape == images.shape and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    np.testing.assert_array_equal(a, b)


def test_bad_training_data_is_refused():
    images, labels = _data()
    with pytest.raises(CbrError, match="uint8"):
        train(images.astype(np.float32), labels, steps=1)
    with pytest.raises(CbrError, match="one label per image"):
        train(images, labels[:3], steps=1)


def test_augmentation_at_low_resolution_blurs_but_keeps_shape():
    images, _ = _data()
    sharp = augment_batch(images, np.random.default_rng(5))
    blurred = augment_batch(images, np.random.default_rng(5), low_resolution=1.0)
    assert blurred.shape == sharp.shape and 0.0 <= blurred.min() and blurred.max() <= 1.0
    # Noise images lose their pixel-to-pixel detail when shrunk and enlarged back.
    assert np.abs(np.diff(blurred, axis=1)).mean() < 0.5 * np.abs(np.diff(sharp, axis=1)).mean()


def test_class_balanced_batches_hold_p_classes_of_k_images_and_visit_every_class():
    labels = np.repeat(np.arange(10), 5)
    batches = class_balanced_batches(labels, classes_per_batch=3, images_per_class=4, rng=np.random.default_rng(0))
    seen = set()
    for _ in range(3):  # one pass over the 10 classes visits 9 of them (3 x 3); the last one comes next
        rows = next(batches)
        classes, counts = np.unique(labels[rows], return_counts=True)
        assert len(rows) == 12 and len(classes) == 3 and set(counts) == {4}
        assert len(set(rows.tolist())) == 12  # enough images per class: drawn without replacement
        seen.update(classes.tolist())
    assert len(seen) == 9
    with pytest.raises(CbrError, match="needs that many classes"):
        next(class_balanced_batches(labels, 11, 2, np.random.default_rng(0)))


def test_batch_hard_triplet_loss_is_zero_for_separated_classes_and_positive_for_mixed_ones():
    import tensorflow as tf

    labels = tf.constant([0, 0, 1, 1])
    separated = tf.constant([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert float(batch_hard_triplet_loss(separated, labels, margin=0.2)) == 0.0
    # Rows 0 and 2 swapped: every image's hardest positive is now farther than its hardest negative.
    mixed = tf.constant([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    expected = np.sqrt(2.0) - 0.0 + 0.2  # d_pos = sqrt(2), d_neg = 0 for every row
    np.testing.assert_allclose(float(batch_hard_triplet_loss(mixed, labels, margin=0.2)), expected, rtol=1e-5)


def test_mean_singular_value_lies_between_the_svmax_bounds():
    rng = np.random.default_rng(0)
    b, d = 64, 16
    low, high = svmax_bounds(b, d)
    collapsed = np.tile(rng.normal(size=(1, d)), (b, 1))
    spread = np.tile(np.eye(d), (b // d, 1))
    random = rng.normal(size=(b, d))
    values = [mean_singular_value(x / np.linalg.norm(x, axis=1, keepdims=True)) for x in (collapsed, spread, random)]
    np.testing.assert_allclose(values[:2], [low, high], rtol=1e-6)
    assert low < values[2] < high
    import tensorflow as tf

    np.testing.assert_allclose(float(mean_singular_value(tf.constant(spread, tf.float32))), high, rtol=1e-5)
    with pytest.raises(CbrError, match="at least as many rows"):
        svmax_bounds(8, 16)
