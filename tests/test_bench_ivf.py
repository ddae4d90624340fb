"""Tests for cbr_lite.bench_ivf on a tiny index: the records add up; big sizes run only in the benchmark."""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

from cbr_lite import bench, bench_ivf


def test_exact_top1_finds_the_best_row_across_blocks():
    index, _ = bench.synthetic_index(50, shots=1, dim=8)
    queries = bench.synthetic_queries(index, count=7)
    np.testing.assert_array_equal(bench_ivf.exact_top1(queries, index, block=16), (queries @ index.T).argmax(1))


def test_latency_is_timed_over_one_query_after_another():
    seen = []
    timed = bench_ivf.one_query_after_another(np.arange(6, dtype=np.float64).reshape(3, 2), seen.append)
    for _ in range(4):
        timed()
    assert [row.tolist() for row in seen] == [[[0, 1]], [[2, 3]], [[4, 5]], [[0, 1]]]
    assert all(row.dtype == np.float32 and row.flags.c_contiguous for row in seen)


def test_nprobes_around_the_default_stay_in_range():
    assert bench_ivf.nprobes_around(1024) == [8, 16, 32]
    assert bench_ivf.nprobes_around(4) == [2, 4]


@pytest.fixture(scope="module")
def tiny_study():
    return bench_ivf.run_ivf_study((400,), dims=(16,), threads=1, queries=40, factors=(1.0, 2.0),
                                   log=lambda line: None)


def test_tiny_study_measures_ivf_faiss_and_the_exact_head(tiny_study):
    records = tiny_study["records"]
    ours = [r for r in records if r["method"] == "ivf"]
    assert [r["nprobe"] for r in ours] == bench_ivf.nprobes_around(ours[0]["nlist"], (1.0, 2.0))
    for r in ours:
        assert 0.0 <= r["recall"] <= 1.0 and r["latency_ms"] > 0 and r["latency_1thread_ms"] > 0
        assert r["build_s"] == pytest.approx(r["kmeans_s"] + r["convert_s"])
        assert r["size_bytes"] > r["int8_index_bytes"] == 400 * 16
        assert r["rows_read"] == r["nprobe"] * r["list_length"]
    # More probes find at least as many true neighbours.
    assert ours[1]["recall"] >= ours[0]["recall"]
    exact = [r for r in records if r["method"] == "exact_int8"]
    assert len(exact) == 1 and exact[0]["recall"] >= 0.95
    if bench.faiss_module() is not None:
        theirs = [r for r in records if r["method"] == "faiss_ivf"]
        # Same centres, hence the same lists: FAISS finds the same neighbours (up to int8 near-ties).
        assert [r["nprobe"] for r in theirs] == [r["nprobe"] for r in ours]
        assert all(abs(a["recall"] - b["recall"]) <= 0.05 for a, b in zip(ours, theirs))
    table = bench_ivf.markdown_table(records)
    assert table.count("\n| ") == len(records)
    assert all(bench_ivf.format_record(r) for r in records)


def test_target_check_reads_the_default_probes_at_the_target_size():
    record = bench_ivf._record("ivf", 1_000_000, 128, nlist=1024, nprobe=16, recall=0.97, latency_ms=6.0,
                               latency_1thread_ms=4.0, size_bytes=140_000_000, build_s=200.0, build_cpu_s=90.0)
    other = dict(record, nprobe=8, recall=0.5)
    checks = bench_ivf.target_check([other, record])
    assert [met for _, _, met in checks] == [True, True, True, False]
    assert checks[1][1] == "4.00 ms" and checks[2][1] == "1.09x"
    assert bench_ivf.target_check([dict(record, classes=100_000)]) == []


def test_main_runs_the_quick_study_and_writes_json(tmp_path, capsys, monkeypatch):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    bench_ivf.add_arguments(parser)
    out = tmp_path / "ivf.json"
    monkeypatch.setattr(bench_ivf, "NPROBE_FACTORS", (1.0,))
    args = parser.parse_args(["--ivf", "--classes", "300", "--dim", "8", "--threads", "1",
                              "--ivf-exact-limit", "0", "--json", str(out)])
    assert bench_ivf.main(args) == 0
    data = json.loads(out.read_text())
    assert {r["method"] for r in data["records"]} <= {"ivf", "faiss_ivf"}
    assert "ivf" in capsys.readouterr().out
