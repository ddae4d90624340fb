"""Tests for cbr_lite.compatibility: the cross-model episodes, the frozen classifier and influence loss against
hand computations, the trainer's heads, and that a query model trains reproducibly."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

from cbr_lite.compatibility import (build_compatible_trainer, cross_model_few_shot_accuracy, gallery_classifier,
                                    influence_loss, multiply_adds, train_query_model)
from cbr_lite.errors import CbrError
from cbr_lite.evaluation import few_shot_accuracy
from cbr_lite.training import make_deterministic


def _clusters(classes=12, per_class=8, spread=0.3, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    return rng.normal(size=(classes, dim))[labels] + spread * rng.normal(size=(len(labels), dim)), labels


def test_same_embeddings_on_both_sides_give_the_one_model_episodes():
    embeddings, labels = _clusters(spread=1.0)
    for shots in (1, 3):
        assert (cross_model_few_shot_accuracy(embeddings, embeddings, labels, shots=shots, seed=4)
                == few_shot_accuracy(embeddings, labels, shots=shots, seed=4))


def test_a_rotated_gallery_is_incompatible_until_the_rotation_is_undone():
    # Many classes: with few, each class pair is always right or always wrong, and the mean strays from chance.
    embeddings, labels = _clusters(classes=60, per_class=6)
    rotation, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(16, 16)))
    rotated = embeddings @ rotation
    # A rotation keeps every cosine within one model: the same accuracy, query and gallery both rotated...
    assert (cross_model_few_shot_accuracy(rotated, rotated, labels, episodes=100).mean
            == pytest.approx(cross_model_few_shot_accuracy(embeddings, embeddings, labels, episodes=100).mean))
    # ...but queries from the first space against the rotated gallery are near chance (1/5).
    mixed = cross_model_few_shot_accuracy(embeddings, rotated, labels, episodes=300)
    assert abs(mixed.mean - 0.2) < 0.1
    assert cross_model_few_shot_accuracy(rotated @ rotation.T, embeddings, labels, episodes=100).mean > 0.9


def test_cross_model_requests_are_checked():
    embeddings, labels = _clusters()
    with pytest.raises(CbrError, match="same number"):
        cross_model_few_shot_accuracy(embeddings[:, :8], embeddings, labels)
    with pytest.raises(CbrError, match="same n images"):
        cross_model_few_shot_accuracy(embeddings[:-1], embeddings, labels)
    with pytest.raises(CbrError, match="12 classes"):
        cross_model_few_shot_accuracy(embeddings, embeddings, labels, ways=13)


def test_gallery_classifier_is_the_unit_class_mean():
    embeddings, labels = _clusters(classes=3, per_class=4, dim=5)
    classifier = gallery_classifier(embeddings, labels)
    assert classifier.shape == (3, 5) and classifier.dtype == np.float32
    for c in range(3):
        mean = embeddings[labels == c].mean(axis=0)
        np.testing.assert_allclose(classifier[c], mean / np.linalg.norm(mean), atol=1e-6)
    with pytest.raises(CbrError, match="at least one image"):
        gallery_classifier(embeddings, labels, num_classes=4)


def test_influence_loss_matches_a_hand_computed_softmax():
    # Two classes along the axes; one query on each axis, scale 2, no margin: -log(e^2 / (e^2 + e^0)).
    classifier = np.eye(2)
    queries, labels = np.array([[3.0, 0.0], [0.0, 0.5]]), np.array([0, 1])
    expected = -np.log(np.exp(2) / (np.exp(2) + 1))
    assert influence_loss(queries, labels, classifier, scale=2.0, margin=0.0) == pytest.approx(expected)
    # A margin lowers the true class's logit by scale * margin, so the loss grows.
    with_margin = -np.log(np.exp(2 - 0.4) / (np.exp(2 - 0.4) + 1))
    assert influence_loss(queries, labels, classifier, scale=2.0, margin=0.2) == pytest.approx(with_margin)


def _tiny_query_model(dim=8):
    pixels = keras.Input(shape=(8, 8, 3))
    return keras.Model(pixels, keras.layers.Dense(dim)(keras.layers.Flatten()(pixels)))


def test_trainer_heads_are_scaled_cosines_and_the_gallery_head_is_frozen():
    keras.utils.set_random_seed(0)
    model = _tiny_query_model()
    classifier = gallery_classifier(np.random.default_rng(0).normal(size=(6, 8)), np.arange(6) % 3)
    trainer = build_compatible_trainer(model, 3, classifier, scale=10.0)
    pixels = np.random.default_rng(1).uniform(size=(4, 8, 8, 3)).astype(np.float32)
    own, gallery = trainer.predict_on_batch(pixels)
    unit = model.predict_on_batch(pixels)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    np.testing.assert_allclose(gallery, 10.0 * unit @ classifier.T, atol=1e-4)
    assert np.all(np.abs(own) <= 10.0 + 1e-4)
    assert not trainer.get_layer("gallery_classifier").trainable
    assert len(build_compatible_trainer(model, 3).outputs) == 1
    with pytest.raises(CbrError, match="one row per class"):
        build_compatible_trainer(model, 4, classifier)


def test_multiply_adds_counts_convolutions_and_dense_layers():
    pixels = keras.Input(shape=(8, 8, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(pixels)         # 4x4x4 outputs x 3*3*3 inputs
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)                    # 4x4x4 outputs x 3*3
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(pixels, keras.layers.Dense(5)(x))                     # 5 outputs x 4 inputs
    assert multiply_adds(model) == 64 * 27 + 64 * 9 + 20
    outer = keras.Model(pixels, model(pixels))
    assert multiply_adds(outer) == multiply_adds(model)


def _train(seed, classifier):
    make_deterministic(seed)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 64, 64, 3), dtype=np.uint8)
    return train_query_model(images, np.arange(16) % 4, classifier, steps=2, seed=seed, batch_size=8,
                             widths=(4, 4, 4), embedding_dim=8)


def test_query_model_training_is_reproducible_and_reports_both_losses():
    classifier = gallery_classifier(np.eye(8)[:4] + 0.1, np.arange(4))
    first, history = _train(0, classifier)
    second, _ = _train(0, classifier)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert first.output_shape == (None, 8)
    assert history["own_loss"] > 0 and history["influence_loss"] > 0
    alone, history = _train(0, None)
    assert history["influence_loss"] is None
    with pytest.raises(CbrError, match="uint8"):
        train_query_model(np.zeros((4, 32, 32, 3), np.uint8), np.arange(4), steps=1)
