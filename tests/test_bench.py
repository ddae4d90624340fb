"""Tests for cbr_lite.bench on tiny sizes: every head variant gives the NumPy scores, and the records add up."""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

from cbr_lite import bench, bench_heads
from cbr_lite.errors import CbrError
from cbr_lite.layers import class_grid
from cbr_lite.similarity import class_scores, cosine_similarity


def test_synthetic_index_is_unit_sorted_and_clustered():
    index, labels = bench.synthetic_index(6, shots=3, dim=32, seed=0)
    assert index.shape == (18, 32) and index.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(index, axis=1), 1.0, atol=1e-5)
    assert labels.tolist() == sorted(labels.tolist()) and np.bincount(labels).tolist() == [3] * 6
    queries = bench.synthetic_queries(index, count=6)
    expected = class_scores(cosine_similarity(queries, index), labels, 6)
    members, _ = class_grid(labels, 6)
    np.testing.assert_allclose(bench.reference_scores(queries, index, members), expected, atol=1e-5)
    # Each query is a noisy copy of an index image, so its own class wins.
    nearest = (queries @ index.T).argmax(1)
    assert np.array_equal(expected.argmax(1), labels[nearest])


def test_synthetic_index_rejects_one_class():
    with pytest.raises(CbrError, match="at least 2 classes"):
        bench.synthetic_index(1)


@pytest.mark.parametrize("variant", ["per_class", "gather", "reshape", "segment", "masked", "int8"])
def test_every_head_variant_gives_the_numpy_class_scores_in_keras(variant):
    index, labels = bench.synthetic_index(5, shots=3, dim=16)
    # Uneven classes, so the grid has padding and the segment ids are not a plain repeat.
    index, labels = index[:-2], labels[:-2]
    queries = bench.synthetic_queries(index, count=4)
    head = bench_heads.build_head(variant, index, labels, 5)
    expected = bench.reference_scores(queries, index, class_grid(labels, 5)[0])
    tolerance = 0.02 if variant == "int8" else 1e-5
    np.testing.assert_allclose(head.predict_on_batch(queries), expected, atol=tolerance)


def test_unknown_variant_is_an_error():
    index, labels = bench.synthetic_index(2, shots=1, dim=4)
    with pytest.raises(CbrError, match="unknown head variant"):
        bench_heads.build_head("sorted", index, labels, 2)
    with pytest.raises(CbrError, match="unknown variant"):
        bench.run_benchmark((2,), variants=("sorted",))


def test_extrapolate_fits_a_power_law_and_scales_one_point_linearly():
    records = [{"classes": c, "convert_s": 0.5 * c ** 1.5, "extrapolated": False} for c in (10, 100)]
    assert bench.extrapolate(records, 1000, "convert_s") == pytest.approx(0.5 * 1000 ** 1.5, rel=1e-6)
    assert bench.extrapolate(records[:1], 40, "convert_s") == pytest.approx(4 * 0.5 * 10 ** 1.5)
    assert bench.extrapolate([], 40, "convert_s") is None


@pytest.mark.parametrize("variant", ["reshape", "segment", "masked", "int8"])
def test_each_alternative_head_converts_and_runs_in_litert(variant):
    index, labels = bench.synthetic_index(3, shots=2, dim=16)
    record = bench.measure_tflite_variant(variant, index, labels, 3, bench.synthetic_queries(index), threads=1)
    assert record["latency_ms"] > 0 and record["size_bytes"] > 0 and record["top1_same"]
    assert record["max_abs_error"] < (0.02 if variant == "int8" else 1e-5)
    assert ("GATHER" in record["op_names"]) == (variant == "int8")


def test_tiny_run_measures_and_extrapolates_the_slow_per_class_head(tmp_path):
    variants = ("per_class", "gather", "numpy", "faiss")
    result = bench.run_benchmark((3, 6), variants=variants, dim=16, shots=2, max_convert_s=1e-6,
                                 log=lambda line: None, copy_megabytes=8)
    records = {(r["variant"], r["classes"]): r for r in result["records"]}
    assert result["limits"]["copy_gb_per_s"] > 0
    for variant in ("per_class", "gather", "numpy"):
        measured = records[(variant, 3)]
        assert not measured["extrapolated"] and measured["latency_ms"] > 0
        assert measured["max_abs_error"] < 1e-5
    # Each class's max is its own op pair: the per-class graph grows with the classes, the gather one does not.
    assert records[("per_class", 3)]["ops"] > records[("gather", 3)]["ops"]
    # The per-class form at 6 classes would exceed the (tiny) conversion limit: fitted, twice the 3-class time.
    fitted = records[("per_class", 6)]
    assert fitted["extrapolated"] and fitted["convert_s"] == pytest.approx(2 * records[("per_class", 3)]["convert_s"])
    assert not records[("gather", 6)]["extrapolated"]
    assert records[("numpy", 6)]["size_bytes"] == 12 * 16 * 4
    if bench.faiss_module() is not None:
        assert records[("faiss", 6)]["top1_same"]
    table = bench.format_table(result)
    assert "(extrapolated)" in table and table.count("\n") == len(result["records"]) + 1
    assert bench.markdown_table(result["records"]).count("\n| ") == len(result["records"])
    bench.plot(result, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 0


def test_main_writes_json(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = tmp_path / "bench.json"
    args = parser.parse_args(["--classes", "3", "--dim", "8", "--shots", "2", "--variants", "numpy",
                              "--json", str(out)])
    assert bench.main(args) == 0
    data = json.loads(out.read_text())
    assert [(r["variant"], r["classes"], r["index_vectors"]) for r in data["records"]] == [("numpy", 3, 6)]
    assert {"variant", "classes", "index_vectors", "convert_s", "size_bytes", "latency_ms"} <= set(data["records"][0])
    assert data["limits"]["copy_gb_per_s"] > 0 and data["machine"]["cores"] >= 1
    assert "numpy" in capsys.readouterr().out


@pytest.mark.parametrize("variant", ["reshape", "segment", "masked"])
def test_alternative_heads_are_registered_layers_that_save_and_load_in_safe_mode(tmp_path, variant):
    import keras

    index, labels = bench.synthetic_index(4, shots=2, dim=8)
    head = bench_heads.build_head(variant, index, labels, 4)
    head.save(tmp_path / "head.keras")
    loaded = keras.saving.load_model(tmp_path / "head.keras", safe_mode=True, compile=False)
    queries = bench.synthetic_queries(index, count=3)
    np.testing.assert_array_equal(loaded.predict_on_batch(queries), head.predict_on_batch(queries))


def test_the_command_line_lists_the_forms_bench_heads_builds():
    assert bench.TFLITE_VARIANTS == bench_heads.HEAD_FORMS
