"""Tests for cbr_lite.training: training is reproducible and the embedder saves and loads safely."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

from cbr_lite.errors import CbrError
from cbr_lite.training import EMBEDDING_DIM, augment_batch, build_embedder, make_deterministic, train


def _data():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 64, 64, 3), dtype=np.uint8)
    return images, np.arange(16) % 4


def _two_steps(seed):
    make_deterministic(seed)
    images, labels = _data()
    # A narrow network runs the same code path (data order, augmentation, optimiser) in a fraction of the time.
    embedder, history = train(images, labels, steps=2, seed=seed, batch_size=8, widths=(8, 8, 8, 8),
                              embedding_dim=16, log=lambda line: None)
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


def test_embedder_saves_and_loads_with_safe_mode(tmp_path):
    embedder = build_embedder()
    path = tmp_path / "embedder.keras"
    embedder.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    pixels = np.random.default_rng(1).random((3, 64, 64, 3)).astype(np.float32)
    expected = embedder.predict_on_batch(pixels)
    assert expected.shape == (3, EMBEDDING_DIM)
    np.testing.assert_allclose(loaded.predict_on_batch(pixels), expected, rtol=1e-5, atol=1e-6)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in loaded.layers)


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
