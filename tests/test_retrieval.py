"""Assembled retrieval heads and classifiers: the NumPy reference, index checks, .keras round trips."""

import keras
import numpy as np
import pytest

from cbr_lite.errors import CbrError
from cbr_lite.export import to_tflite
from cbr_lite.layers import ClassAggregation, L2Normalize
from cbr_lite.quantization import Int8NearestNeighbours, int8_scores
from cbr_lite.retrieval import build_classifier, build_retrieval_head, nearest_neighbour_layer
from cbr_lite.similarity import class_scores, cosine_similarity, l2_normalize

# Unequal shots per class (3, 1, 4), labels not grouped.
LABELS = np.array([2, 0, 1, 2, 0, 2, 0, 2])


@pytest.fixture(scope="module")
def index():
    return np.random.default_rng(0).normal(size=(len(LABELS), 6)).astype(np.float32) * 5


@pytest.fixture(scope="module")
def queries():
    return np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)


def test_nearest_neighbour_layer_gives_cosine_similarities(index, queries):
    layer = nearest_neighbour_layer(index)
    assert layer.bias is None and not layer.trainable
    np.testing.assert_allclose(layer.get_weights()[0], l2_normalize(index).T)
    scores = np.asarray(layer(l2_normalize(queries)))
    np.testing.assert_allclose(scores, cosine_similarity(queries, index), atol=1e-6)


@pytest.mark.parametrize("aggregation", ["max", "mean", "topk:2", "topk:5"])
def test_head_equals_the_numpy_reference(index, queries, aggregation):
    head = build_retrieval_head(index, LABELS, aggregation=aggregation)
    expected = class_scores(cosine_similarity(queries, index), LABELS, 3, aggregation)
    np.testing.assert_allclose(head.predict_on_batch(queries), expected, atol=1e-6)
    assert not head.trainable_weights


def test_per_class_reference_head_gives_the_same_scores(index, queries):
    ours = build_retrieval_head(index, LABELS)
    reference = build_retrieval_head(index, LABELS, per_class_ops=True)
    np.testing.assert_array_equal(ours.predict_on_batch(queries), reference.predict_on_batch(queries))


def test_per_class_reference_head_supports_only_max(index):
    with pytest.raises(CbrError, match="only max"):
        build_retrieval_head(index, LABELS, aggregation="mean", per_class_ops=True)


@pytest.mark.parametrize("per_class_ops", [False, True])
def test_zero_query_gives_zero_scores_not_nan(index, per_class_ops):
    scores = build_retrieval_head(index, LABELS, per_class_ops=per_class_ops).predict_on_batch(np.zeros((1, 6)))
    assert np.all(np.isfinite(scores)) and not scores.any()


def test_the_query_length_does_not_matter(index, queries):
    head = build_retrieval_head(index, LABELS, aggregation="topk:2")
    np.testing.assert_allclose(head.predict_on_batch(queries * 1e-6), head.predict_on_batch(queries * 1e6), atol=1e-6)


@pytest.mark.parametrize("aggregation, per_class_ops", [("max", False), ("topk:3", False), ("max", True)])
def test_head_saves_and_loads_in_safe_mode(tmp_path, index, queries, aggregation, per_class_ops):
    head = build_retrieval_head(index, LABELS, aggregation=aggregation, per_class_ops=per_class_ops)
    head.save(tmp_path / "head.keras")
    loaded = keras.saving.load_model(tmp_path / "head.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded.predict_on_batch(queries), head.predict_on_batch(queries))
    assert [type(layer).__name__ for layer in loaded.layers] == [type(layer).__name__ for layer in head.layers]


def test_num_classes_may_be_given_and_must_cover_every_class(index):
    assert build_retrieval_head(index, LABELS, num_classes=3).output_shape == (None, 3)
    with pytest.raises(CbrError, match="class 3 has no index images"):
        build_retrieval_head(index, LABELS, num_classes=4)
    with pytest.raises(CbrError, match="only 2 classes"):
        build_retrieval_head(index, LABELS, num_classes=2)


def test_classifier_is_embedder_then_head(tiny_test_embedder):
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8) for _ in range(5)]
    index = tiny_test_embedder.embed(images[:4])
    classifier = build_classifier(tiny_test_embedder, index, [0, 1, 1, 0], aggregation="mean")
    batch = tiny_test_embedder.preprocess(images)
    assert classifier.input_shape == (None, 16, 16, 3)
    expected = class_scores(cosine_similarity(tiny_test_embedder.embed(images), index), [0, 1, 1, 0], 2, "mean")
    np.testing.assert_allclose(classifier.predict_on_batch(batch), expected, atol=1e-5)
    # An index image matches itself best: its own class wins under max.
    maxed = build_classifier(tiny_test_embedder, index, [0, 1, 1, 0]).predict_on_batch(batch[:4])
    assert maxed.argmax(axis=1).tolist() == [0, 1, 1, 0]
    np.testing.assert_allclose(maxed.max(axis=1), 1.0, atol=1e-5)


def test_int8_head_scores_with_the_int8_index(index, queries):
    head = build_retrieval_head(index, LABELS, aggregation="topk:2", index_dtype="int8")
    expected = class_scores(int8_scores(queries, index), LABELS, 3, "topk:2")
    np.testing.assert_allclose(head.predict_on_batch(queries), expected, atol=1e-5)
    float_head = build_retrieval_head(index, LABELS, aggregation="topk:2")
    assert [layer.name for layer in head.layers] == [layer.name for layer in float_head.layers]


def test_int8_head_converts_to_the_bytes_of_the_layers_assembled_by_hand(index):
    """The one builder adds nothing to its layers: the int8 head is L2Normalize -> Int8NearestNeighbours ->
    ClassAggregation, named as the float head's layers, and converts to exactly those bytes."""
    embedding = keras.Input(shape=(index.shape[1],), name="embedding")
    unit = L2Normalize(name="l2_normalize")(embedding)
    scores = Int8NearestNeighbours.from_index(index, "row", name="nearest_neighbours")(unit)
    classes = ClassAggregation.from_labels(LABELS, 3, "max", name="class_aggregation")(scores)
    by_hand = keras.Model(embedding, classes, name="retrieval_head")
    built = build_retrieval_head(index, LABELS, index_dtype="int8")
    assert to_tflite(built, quantize="int8") == to_tflite(by_hand, quantize="int8")


def test_unknown_index_dtype_is_an_error(index):
    with pytest.raises(CbrError, match="unknown index dtype 'int4'"):
        build_retrieval_head(index, LABELS, index_dtype="int4")


# --- centring (SimpleShot's CL2N) --------------------------------------------------------------------------

def test_centred_head_scores_are_cosines_of_centred_embeddings_and_one_sub_in_tflite():
    from cbr_lite.export import LiteRTModel

    rng = np.random.default_rng(3)
    common = rng.normal(size=32) * 5  # a large shared component, as real embeddings have
    index = common + rng.normal(size=(12, 32))
    labels = np.arange(12) % 4
    queries = (common + rng.normal(size=(6, 32))).astype(np.float32)
    mean = index.mean(axis=0)
    expected = class_scores(cosine_similarity(queries - mean, index - mean), labels, 4)
    head = build_retrieval_head(index, labels, 4, center=True)
    np.testing.assert_allclose(head.predict_on_batch(queries), expected, atol=1e-5)
    plain = class_scores(cosine_similarity(queries, index), labels, 4)
    assert plain.min() > 0.8 and expected.min() < 0.5  # centring spreads the scores
    given = build_retrieval_head(index, labels, 4, center=np.zeros(32))
    np.testing.assert_allclose(given.predict_on_batch(queries), plain, atol=1e-5)
    tflite = LiteRTModel(to_tflite(head))
    assert tflite.ops().count("SUB") == 1
    np.testing.assert_allclose(np.stack([tflite.run_one(q) for q in queries]), expected, atol=1e-5)


def test_centred_head_saves_and_loads_safely(tmp_path):
    rng = np.random.default_rng(4)
    index, labels = rng.normal(size=(6, 8)) + 3, np.arange(6) % 3
    head = build_retrieval_head(index, labels, 3, center=True, index_dtype="int8")
    head.save(tmp_path / "head.keras")
    again = keras.saving.load_model(tmp_path / "head.keras", safe_mode=True)
    query = rng.normal(size=(2, 8)).astype(np.float32) + 3
    np.testing.assert_allclose(again.predict_on_batch(query), head.predict_on_batch(query), atol=1e-6)


def test_centring_refuses_a_wrong_mean_and_an_index_image_at_the_mean():
    index = np.array([[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(CbrError, match="centring mean has 3 values"):
        build_retrieval_head(index, [0, 1], 2, center=np.zeros(3))
    with pytest.raises(CbrError, match="equals the mean embedding"):
        build_retrieval_head(np.array([[1.0, 2.0], [1.0, 2.0]]), [0, 1], 2, center=True)
