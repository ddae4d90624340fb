"""Tests for cbr_lite.quantization: int8 index embeddings, the int8 layer and head, and their .tflite form."""

import io
import os
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

from cbr_lite.errors import CbrError
from cbr_lite.export import LiteRTModel, to_tflite
from cbr_lite.quantization import (
    SCALES, Int8NearestNeighbours, dequantize_index, int8_scores, quantize_index, top1_agreement,
)
from cbr_lite.retrieval import build_retrieval_head
from cbr_lite.similarity import class_scores, l2_normalize


def unit_rows(n, dim, seed=0):
    return l2_normalize(np.random.default_rng(seed).normal(size=(n, dim)))


@pytest.mark.parametrize("scale", SCALES)
def test_quantize_round_trip_error_is_within_half_a_step(scale):
    unit = unit_rows(50, 64)
    q, scales = quantize_index(unit, scale)
    assert q.dtype == np.int8 and q.shape == unit.shape and scales.shape == (50,)
    assert np.abs(q.astype(int)).max() <= 127
    error = np.abs(dequantize_index(q, scales) - unit)
    assert np.all(error <= scales[:, None] / 2 + 1e-7)


def test_row_scale_uses_the_full_range_of_every_row():
    q, scales = quantize_index(unit_rows(30, 128), "row")
    assert np.all(np.abs(q.astype(int)).max(axis=1) == 127)
    _, fixed = quantize_index(unit_rows(30, 128), "fixed")
    assert np.all(fixed == np.float32(1 / 128))


def test_fixed_scale_clips_a_component_of_one():
    q, _ = quantize_index(np.array([[1.0, 0.0], [-1.0, 0.0]]), "fixed")
    assert q.tolist() == [[127, 0], [-127, 0]]


def test_row_scale_is_more_accurate_than_fixed_in_high_dimensions():
    unit = unit_rows(200, 1024)
    errors = {scale: np.abs(dequantize_index(*quantize_index(unit, scale)) - unit).mean() for scale in SCALES}
    assert errors["row"] < errors["matrix"] < errors["fixed"]


def test_bad_scale_and_shape_are_cbr_errors():
    layer = Int8NearestNeighbours(units=3, dim=4)
    with pytest.raises(CbrError, match="expected int8 rows"):
        layer.set_index(np.zeros((4, 3)), np.ones(3))
    with pytest.raises(CbrError, match="unknown int8 scale"):
        quantize_index(unit_rows(3, 4), "per-tensor")
    with pytest.raises(CbrError, match="non-empty"):
        quantize_index(np.zeros((0, 4)), "row")


def test_layer_matches_numpy_reference_and_saves(tmp_path):
    index, queries = unit_rows(12, 16), unit_rows(5, 16, seed=1)
    layer = Int8NearestNeighbours.from_index(index, "matrix", name="nn")
    query = keras.Input(shape=(16,))
    model = keras.Model(query, layer(query))
    expected = int8_scores(queries, index, "matrix")
    np.testing.assert_allclose(model.predict_on_batch(queries), expected, atol=1e-5)
    np.testing.assert_allclose(layer(queries).numpy(), expected, atol=1e-5)
    path = tmp_path / "int8.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    assert loaded.layers[1].kernel.dtype == "int8"
    # The file holds the int8 integers and the scales, not the float matrix the layer computes with.
    h5py = pytest.importorskip("h5py")
    with zipfile.ZipFile(path) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as h5:
        arrays = []
        h5.visititems(lambda name, item: arrays.append(item) if isinstance(item, h5py.Dataset) else None)
        assert sorted((str(a.dtype), a.shape) for a in arrays) == [("float32", (12,)), ("int8", (16, 12))]
    np.testing.assert_allclose(loaded.predict_on_batch(queries), expected, atol=1e-5)


def test_int8_head_agrees_with_float_head():
    rng = np.random.default_rng(2)
    index, labels = rng.normal(size=(60, 32)), np.arange(60) % 12
    queries = index[::3] + 0.3 * rng.normal(size=(20, 32))
    float_scores = build_retrieval_head(index, labels).predict_on_batch(queries)
    int8_head = build_retrieval_head(index, labels, index_dtype="int8")
    scores = int8_head.predict_on_batch(queries)
    reference = class_scores(int8_scores(queries, index), labels, 12)
    np.testing.assert_allclose(scores, reference, atol=1e-5)
    # One int8 step per component changes a cosine by far less than 0.01 in 32 dimensions.
    assert np.abs(scores - float_scores).max() < 0.01
    assert np.array_equal(scores.argmax(1), float_scores.argmax(1))


def test_top1_agreement_counts_disagreements():
    rng = np.random.default_rng(3)
    index, labels = rng.normal(size=(400, 256)), np.arange(400) % 100
    queries = rng.normal(size=(300, 256))
    row, fixed = (top1_agreement(queries, index, labels, scale=s) for s in ("row", "fixed"))
    assert 0.0 <= fixed <= row <= 1.0
    # Random queries are nearly tied between classes, so 1/128 steps flip some of them; per-row fewer.
    assert fixed < 1.0 and row > 0.9


def test_tflite_keeps_the_same_int8_integers_in_one_fully_connected_op():
    index, labels = unit_rows(300, 64), np.arange(300) % 30
    head = build_retrieval_head(index, labels, index_dtype="int8")
    data = to_tflite(head, quantize="int8")
    float_data = to_tflite(build_retrieval_head(index, labels), quantize="none")
    assert len(data) < 0.4 * len(float_data)
    runner = LiteRTModel(data)
    assert runner.ops().count("FULLY_CONNECTED") == 1 and "CAST" not in runner.ops()
    q, scales = quantize_index(index, "row")
    stored = [t for t in runner.interpreter.get_tensor_details() if t["dtype"] == np.int8 and t["shape"].tolist() == [300, 64]]
    assert len(stored) == 1
    assert np.array_equal(runner.interpreter.get_tensor(stored[0]["index"]), q)
    np.testing.assert_allclose(stored[0]["quantization_parameters"]["scales"], scales, rtol=1e-6)
    queries = unit_rows(10, 64, seed=4)
    expected = head.predict_on_batch(queries)
    # LiteRT also rounds the query to int8 on the fly; the class ranking stays.
    got = runner(queries)
    assert np.abs(got - expected).max() < 0.02
    assert np.array_equal(got.argmax(1), expected.argmax(1))
