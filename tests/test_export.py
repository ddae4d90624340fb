"""Keras -> .tflite with LiteRT: parity with Keras, the ops the converter writes, float16 safety.

Conversions take about a second each, so every converted model is a module-scoped fixture.
"""

import keras
import numpy as np
import pytest

from cbr_lite.errors import CbrError
from cbr_lite.export import LiteRTModel, to_tflite
from cbr_lite.layers import L2Normalize
from cbr_lite.retrieval import build_retrieval_head

DIM = 64


def index_for(num_classes, seed=0):
    """An index with unequal shots per class (1, 2, 3, ... images), labels interleaved."""
    labels = np.concatenate([np.full(c + 1, c) for c in range(num_classes)])
    labels = np.random.default_rng(seed).permutation(labels)
    return np.random.default_rng(seed + 1).normal(size=(len(labels), DIM)).astype(np.float32), labels


@pytest.fixture(scope="module")
def queries():
    rng = np.random.default_rng(7)
    # Ordinary, tiny and huge query lengths, and the zero vector.
    return np.concatenate([rng.normal(size=(4, DIM)), rng.normal(size=(2, DIM)) * [[1e-20], [1e20]],
                           np.zeros((1, DIM))]).astype(np.float32)


def converted(num_classes, quantize="none", **options):
    head = build_retrieval_head(*index_for(num_classes), **options)
    return head, LiteRTModel(to_tflite(head, quantize))


@pytest.fixture(scope="module")
def max_head():
    return converted(8)


@pytest.fixture(scope="module")
def max_head_float16():
    return converted(8, "float16")


@pytest.fixture(scope="module")
def topk_head():
    return converted(8, aggregation="topk:3")


@pytest.fixture(scope="module")
def small_max_head():
    return converted(3)


@pytest.fixture(scope="module")
def per_class_head():
    return converted(8, per_class_ops=True)


@pytest.mark.parametrize("which", ["max_head", "topk_head", "per_class_head"])
def test_tflite_scores_equal_keras_scores(request, queries, which):
    head, lite = request.getfixturevalue(which)
    keras_scores = head.predict_on_batch(queries)
    lite_scores = lite(queries)
    assert lite_scores.shape == keras_scores.shape == (len(queries), 8) and lite_scores.dtype == np.float32
    np.testing.assert_allclose(lite_scores, keras_scores, atol=2e-6)
    assert not lite_scores[-1].any(), "the zero query must give zero scores, not NaN"


def test_float16_weights_keep_the_scores_close_and_halve_the_file(max_head, max_head_float16, queries):
    (head, lite), (_, lite16) = max_head, max_head_float16
    np.testing.assert_allclose(lite16(queries), head.predict_on_batch(queries), atol=5e-4)
    assert np.array_equal(lite16(queries).argmax(axis=1)[:6], lite(queries).argmax(axis=1)[:6])
    assert len(lite16.model_bytes) < 0.75 * len(lite.model_bytes)


def test_one_gather_and_one_reduce_max_whatever_the_number_of_classes(max_head, small_max_head):
    ops = max_head[1].ops()
    assert ops.count("GATHER") == 1 and ops.count("REDUCE_MAX") == 2  # one in L2Normalize, one per class grid
    assert "FULLY_CONNECTED" in ops
    assert small_max_head[1].ops() == ops


def test_the_per_class_reference_writes_ops_for_every_class(per_class_head, max_head):
    ops = per_class_head[1].ops()
    # A max over a class's single image is folded away, so 7 of the 8 classes keep their REDUCE_MAX.
    assert ops.count("GATHER") == 8 and ops.count("REDUCE_MAX") == 1 + 7 and "CONCATENATION" in ops
    assert len(ops) > len(max_head[1].ops()) + 10


def test_topk_uses_the_topk_op(topk_head):
    assert "TOPK_V2" in topk_head[1].ops() and "GATHER" in topk_head[1].ops()


def normaliser(layer):
    embedding = keras.Input((8,))
    return keras.Model(embedding, layer(embedding))


SCALES = [1.0, 1e-3, 1e-7, 1e-10, 1e-20, 1e-30, 1e30]


@pytest.fixture(scope="module")
def tiny_norm_vectors():
    base = np.random.default_rng(3).normal(size=(1, 8))
    return np.concatenate([base * scale for scale in SCALES] + [np.zeros((1, 8))]).astype(np.float32)


def test_l2_normalize_survives_float16_conversion(tiny_norm_vectors):
    model = normaliser(L2Normalize())
    float32, float16 = (LiteRTModel(to_tflite(model, q))(tiny_norm_vectors) for q in ["none", "float16"])
    expected = np.concatenate([np.tile(tiny_norm_vectors[:1] / np.linalg.norm(tiny_norm_vectors[0]),
                                       (len(SCALES), 1)), np.zeros((1, 8))])
    np.testing.assert_allclose(float32, expected, atol=1e-6)
    np.testing.assert_allclose(float16, float32, atol=1e-6)


def test_keras_unit_normalization_does_not_survive_float16_conversion(tiny_norm_vectors):
    """Why cbr-lite has L2Normalize: UnitNormalization's epsilon turns into float16 nonsense.

    If this test fails, Keras' layer has become float16-safe; update the L2Normalize docstring.
    """
    lite = LiteRTModel(to_tflite(normaliser(keras.layers.UnitNormalization()), "float16"))
    norms = np.linalg.norm(lite(tiny_norm_vectors), axis=1)
    at_1e7 = norms[SCALES.index(1e-7)]
    assert abs(norms[0] - 1) < 1e-5 and not abs(at_1e7 - 1) < 0.1, norms
    assert np.isnan(norms[-1]), "the zero vector gives NaN"


def test_litert_model_reads_bytes_and_files_alike(tmp_path, max_head, queries):
    lite = max_head[1]
    (tmp_path / "head.tflite").write_bytes(lite.model_bytes)
    from_file = LiteRTModel(tmp_path / "head.tflite")
    assert from_file.input_shape == lite.input_shape == (1, DIM)
    np.testing.assert_array_equal(from_file(queries), lite(queries))
    # One input with or without its batch dimension.
    np.testing.assert_array_equal(lite.run_one(queries[0]), lite.run_one(queries[:1]))


def test_unknown_quantization_is_refused(max_head):
    with pytest.raises(CbrError, match="unknown quantisation 'fp16': use one of none, float16, int8"):
        to_tflite(max_head[0], "fp16")


@pytest.mark.parametrize("content, message", [(b"", "empty"), (b"not a model" * 20, "not a TensorFlow Lite model")])
def test_files_that_are_not_models_are_refused_by_name(tmp_path, content, message):
    path = tmp_path / "model.tflite"
    path.write_bytes(content)
    with pytest.raises(CbrError, match=message) as error:
        LiteRTModel(path)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)
    with pytest.raises(CbrError, match=message):
        LiteRTModel(content)


def test_a_missing_model_file_is_refused_by_name(tmp_path):
    with pytest.raises(CbrError, match="missing.tflite: no such model file"):
        LiteRTModel(tmp_path / "missing.tflite")


def test_several_outputs_are_written_in_the_order_of_their_names():
    """The converter orders a dict's outputs by the graph; to_tflite puts them in name order (what Keras
    lists first comes first), so readers that go by position (MediaPipe) see a fixed order."""
    embedding = keras.Input(shape=(4,), name="embedding")
    # Built so that the graph order is neither the name order nor the reverse of it.
    outputs = {"b_middle": keras.layers.Dense(2, name="two")(embedding),
               "c_last": keras.layers.Dense(1, name="one")(embedding),
               "a_first": keras.layers.Dense(3, name="three")(embedding)}
    model = keras.Model(embedding, outputs)
    runner = LiteRTModel(to_tflite(model))
    assert runner.output_names == ["a_first", "b_middle", "c_last"]
    assert [int(o["shape"][1]) for o in runner.outputs] == [3, 2, 1]
    query = np.arange(4, dtype=np.float32)
    expected = model.predict_on_batch(query[None])
    got = runner.run_outputs(query)
    assert list(got) == ["a_first", "b_middle", "c_last"]
    for name in got:
        np.testing.assert_allclose(got[name], expected[name][0], atol=1e-5)
    np.testing.assert_array_equal(runner.run_one(query), got["a_first"])
