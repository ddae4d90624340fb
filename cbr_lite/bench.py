"""How the retrieval head scales with the number of classes: conversion time, file size, query latency.

Run it as ``cbr-lite bench`` or ``python -m cbr_lite.bench [--quick] [--json OUT.json] [--plot OUT.png]``.

The data are synthetic unit embeddings (``dim`` 1024, ``shots`` 5 per class, every class a random centre
plus noise), so any number of classes can be made in seconds. For each number of classes it builds each
head variant, converts it to ``.tflite``, checks its scores against NumPy, and times one query at a time
with LiteRT:

========== ===========================================================================================
variant    what the head does after the ``FULLY_CONNECTED`` layer that scores every index image
========== ===========================================================================================
per_class  (a) Google's reference: one select + max per class, then a concatenation (2 ops per class)
gather     (b) the default (:class:`cbr_lite.layers.ClassAggregation`): one ``GATHER`` into a
           ``(classes, shots)`` grid + one ``REDUCE_MAX``
reshape    (c) the matrix columns put in grid order when it is built, so only a ``RESHAPE`` + ``REDUCE_MAX``
segment    (c) one ``UNSORTED_SEGMENT_MAX`` over the class ids
masked     (c) scores + a ``(classes, images)`` mask of 0 / -3, then ``REDUCE_MAX``: reads classes x images
           floats, so it is only run while that mask stays small
int8       (d) the default head with the matrix stored as int8 (:mod:`cbr_lite.quantization`)
numpy      baseline: NumPy mat-vec + per-class max on the same matrix
faiss      baseline: FAISS ``IndexFlatIP`` (exact inner-product search, top 1), if ``faiss`` is installed
========== ===========================================================================================

The head reads its whole matrix for every query, so it cannot be faster than memory bandwidth allows:
``gb_per_s`` (file bytes / latency) is set next to ``copy_gb_per_s``, the speed of a NumPy copy of a
large array measured in the same run.

The JSON written by ``--json`` is ``{"machine": ..., "settings": ..., "records": [...], "limits": {...},
"end_to_end": {...}}``; each record is one (variant, classes) with ``variant``, ``classes``,
``index_vectors``, ``convert_s``, ``size_bytes``, ``latency_ms`` (plus ``gb_per_s``, ``max_abs_error``,
``ops`` and ``extrapolated``: true where the number was fitted from smaller sizes, not measured).
"""

from __future__ import annotations

# This module is imported to build ``cbr-lite``'s argument parser, so it imports Keras and TensorFlow
# only inside the functions that measure (the head forms live in cbr_lite.bench_heads).
import argparse
import contextlib
import gc
import importlib.metadata
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cbr_lite.errors import CbrError
from cbr_lite.export import LiteRTModel, to_tflite
from cbr_lite.files import check_output_path, write_atomically
from cbr_lite.quiet import import_tensorflow_quietly

TFLITE_VARIANTS = ("per_class", "gather", "reshape", "segment", "masked", "int8")
BASELINES = ("numpy", "faiss")
VARIANTS = TFLITE_VARIANTS + BASELINES
FULL_CLASSES = (100, 1_000, 10_000, 50_000)
QUICK_CLASSES = (100, 1_000)
#: The masked form stores a (classes, images) float matrix; above this many bytes it is not built.
MASKED_LIMIT_BYTES = 64 * 2**20


# --------------------------------------------------------------------------------------------------
# Data and heads
# --------------------------------------------------------------------------------------------------


def synthetic_index(classes: int, shots: int = 5, dim: int = 1024, seed: int = 0, noise: float = 0.5):
    """Unit index embeddings ``(classes * shots, dim)`` float32 and class ids, sorted by class as albums are.

    Every class is a random direction plus ``noise`` times a random vector per image, so neighbours of
    one class are closer to each other than to other classes, like real embeddings.
    """
    if classes < 2 or shots < 1 or dim < 1:
        raise CbrError(f"need at least 2 classes, 1 shot and 1 dimension, got {classes}, {shots}, {dim}")
    rng = np.random.default_rng(seed)
    index = np.empty((classes * shots, dim), dtype=np.float32)
    # In blocks, so 50,000 classes x 1024 dims (1 GB) needs no float64 copies.
    block = max(1, 2**22 // (shots * dim))
    for start in range(0, classes, block):
        stop = min(classes, start + block)
        centres = rng.standard_normal((stop - start, 1, dim), dtype=np.float32)
        rows = centres + noise * rng.standard_normal((stop - start, shots, dim), dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=-1, keepdims=True)
        index[start * shots: stop * shots] = rows.reshape(-1, dim)
    return index, np.repeat(np.arange(classes, dtype=np.int32), shots)


def synthetic_queries(index: np.ndarray, count: int = 8, seed: int = 1, noise: float = 0.3) -> np.ndarray:
    """``count`` unit queries, each a random index image plus noise (so each has a clear best class)."""
    rng = np.random.default_rng(seed)
    picks = index[rng.choice(len(index), size=count, replace=count > len(index))]
    queries = picks + noise * rng.standard_normal(picks.shape, dtype=np.float32) / np.sqrt(index.shape[1])
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def reference_scores(queries: np.ndarray, index: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Class scores by NumPy: cosine with every unit index row, then the max over each class's row of ``members``."""
    return np.stack([(index @ query)[members].max(axis=1) for query in np.atleast_2d(queries)])


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


def time_ms(function, min_repeats: int = 5, max_repeats: int = 50, budget_s: float = 0.5) -> tuple[float, float]:
    """``(median, fastest)`` wall time of ``function()`` in milliseconds, after one warm-up call.

    Repeats until ``budget_s`` seconds are spent (at least ``min_repeats``, at most ``max_repeats`` times).
    The fastest run shows what the machine can do when other programs leave it alone.
    """
    function()
    times, spent = [], 0.0
    while len(times) < min_repeats or (spent < budget_s and len(times) < max_repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
        spent += times[-1]
    return 1000.0 * statistics.median(times), 1000.0 * min(times)


def median_ms(function, **options) -> float:
    """Median wall time of ``function()`` in milliseconds (see :func:`time_ms`)."""
    return time_ms(function, **options)[0]


def litert_latency(tflite: bytes, query: np.ndarray, threads: int) -> tuple[float, float, np.ndarray, list]:
    """``(median ms, fastest ms of one query, the output scores, the op names)`` for a .tflite run by LiteRT."""
    model = LiteRTModel(tflite, num_threads=threads)
    interpreter, tensor = model.interpreter, model.input["index"]
    interpreter.set_tensor(tensor, query.reshape(model.input["shape"]).astype(np.float32))
    latency, best = time_ms(interpreter.invoke)
    return latency, best, model.run_one(query), model.ops()


def blas_threads(threads: int):
    """A context in which NumPy's BLAS uses ``threads`` threads (needs ``threadpoolctl``; else no change)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(threads)


def copy_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """GB/s of a NumPy copy of a large array (bytes copied / s; each byte is read once and written once)."""
    source = np.ones(megabytes * 2**20 // 4, dtype=np.float32)
    target = np.empty_like(source)
    np.copyto(target, source)  # touch every page before timing
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        times.append(time.perf_counter() - start)
    return source.nbytes / min(times) / 1e9


def faiss_module():
    """The ``faiss`` module, or ``None`` when it is not installed (``pip install faiss-cpu``)."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


# --------------------------------------------------------------------------------------------------
# One (variant, classes) record
# --------------------------------------------------------------------------------------------------


def _record(variant, classes, index, **fields):
    record = {"variant": variant, "classes": int(classes), "index_vectors": int(len(index)), "dim": int(index.shape[1]),
              "convert_s": None, "size_bytes": None, "latency_ms": None, "best_ms": None, "latency_1thread_ms": None,
              "gb_per_s": None,
              "max_abs_error": None,
              "ops": None, "extrapolated": False, "note": ""}
    record.update(fields)
    if record["size_bytes"] and record["latency_ms"]:
        record["gb_per_s"] = record["size_bytes"] / (record["latency_ms"] / 1000.0) / 1e9
    return record


def measure_tflite_variant(variant: str, index, labels, classes: int, queries, threads: int) -> dict:
    """Build, convert, check and time one head variant; returns its record."""
    import keras

    from cbr_lite.bench_heads import build_head, convert_head
    from cbr_lite.layers import class_grid

    start = time.perf_counter()
    head = build_head(variant, index, labels, classes)
    build_s = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    tflite = convert_head(variant, head)
    convert_s, convert_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    del head
    keras.backend.clear_session()
    gc.collect()
    latency, best, output, op_names = litert_latency(tflite, queries[0], threads)
    one_thread = litert_latency(tflite, queries[0], 1)[0] if threads > 1 else latency
    members, _ = class_grid(labels, classes)
    expected = reference_scores(queries[:1], index, members)[0]
    return _record(variant, classes, index, build_s=build_s, convert_s=convert_s, convert_cpu_s=convert_cpu_s,
                   size_bytes=len(tflite), latency_ms=latency, best_ms=best, latency_1thread_ms=one_thread,
                   ops=len(op_names), op_names=sorted(set(op_names)),
                   max_abs_error=float(np.abs(output - expected).max()),
                   top1_same=bool(output.argmax() == expected.argmax()))


def measure_numpy(index, labels, classes: int, queries, threads: int = 1) -> dict:
    """NumPy baseline: one mat-vec with the unit index, then the max of each class's row of the grid.

    Timed with ``threads`` BLAS threads (as LiteRT) and with one.
    """
    from cbr_lite.layers import class_grid

    members, _ = class_grid(labels, classes)
    query = queries[0]
    with blas_threads(threads):
        latency, best = time_ms(lambda: (index @ query)[members].max(axis=1))
    with blas_threads(1):
        one_thread = time_ms(lambda: (index @ query)[members].max(axis=1))[0]
    return _record("numpy", classes, index, size_bytes=index.nbytes, latency_ms=latency, best_ms=best,
                   latency_1thread_ms=one_thread, max_abs_error=0.0)


def measure_faiss(index, labels, classes: int, queries, threads: int) -> dict | None:
    """FAISS baseline: exact inner-product search (``IndexFlatIP``) for the top-1 image; ``None`` without faiss.

    With max aggregation the best class is the class of the best image, so top 1 answers the same question.
    """
    from cbr_lite.layers import class_grid

    faiss = faiss_module()
    if faiss is None:
        return None
    faiss.omp_set_num_threads(threads)
    search = faiss.IndexFlatIP(index.shape[1])
    search.add(index)
    query = queries[:1]
    latency, best = time_ms(lambda: search.search(query, 1))
    faiss.omp_set_num_threads(1)
    one_thread = time_ms(lambda: search.search(query, 1))[0]
    faiss.omp_set_num_threads(threads)
    nearest = int(search.search(query, 1)[1][0, 0])
    expected = int(reference_scores(query, index, class_grid(labels, classes)[0])[0].argmax())
    record = _record("faiss", classes, index, size_bytes=index.nbytes, latency_ms=latency, best_ms=best,
                     latency_1thread_ms=one_thread,
                     top1_same=bool(labels[nearest] == expected))
    del search
    return record


def extrapolate(records: list, classes: int, field: str) -> float | None:
    """Fit ``field = a * classes ** b`` to the measured records (one record: ``b = 1``) and evaluate at ``classes``."""
    points = [(r["classes"], r[field]) for r in records if not r["extrapolated"] and r[field]]
    if not points:
        return None
    if len(points) == 1:
        return points[0][1] * classes / points[0][0]
    x, y = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    slope, intercept = np.polyfit(x, y, 1)
    return float(np.exp(intercept + slope * np.log(classes)))


# --------------------------------------------------------------------------------------------------
# The whole benchmark
# --------------------------------------------------------------------------------------------------


def run_benchmark(classes_list=QUICK_CLASSES, variants=VARIANTS, dim: int = 1024, shots: int = 5,
                  threads: int | None = None, max_convert_s: float = 180.0, log=print,
                  copy_megabytes: int = 256) -> dict:
    """Measure every variant at every number of classes; returns ``{"records": [...], "limits": {...}, ...}``.

    A variant whose conversion is predicted (from its smaller sizes) to take longer than ``max_convert_s``
    is not converted: its record holds the fitted numbers and ``extrapolated: true``.
    """
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise CbrError(f"unknown variant {unknown[0]!r}: use some of {', '.join(VARIANTS)}")
    threads = threads or os.cpu_count() or 1
    records, machine = [], machine_info()  # its load average is the start's; limits holds the end's
    started = time.perf_counter()
    for classes in sorted(int(c) for c in classes_list):
        index, labels = synthetic_index(classes, shots, dim)
        queries = synthetic_queries(index)
        for variant in variants:
            done = [r for r in records if r["variant"] == variant]
            if variant == "numpy":
                record = measure_numpy(index, labels, classes, queries, threads)
            elif variant == "faiss":
                record = measure_faiss(index, labels, classes, queries, threads)
                if record is None:
                    continue
            elif variant == "masked" and classes * len(index) * 4 > MASKED_LIMIT_BYTES:
                record = _record(variant, classes, index, note=f"not built: its mask would be "
                                 f"{classes * len(index) * 4 / 1e9:.1f} GB")
            # CPU seconds, not wall seconds, decide: they do not grow when other programs share the machine.
            elif variant == "per_class" and (extrapolate(done, classes, "convert_cpu_s") or 0) > max_convert_s:
                record = _record(variant, classes, index, extrapolated=True,
                                 note=f"extrapolated from {', '.join(str(r['classes']) for r in done if not r['extrapolated'])} classes",
                                 **{f: extrapolate(done, classes, f)
                                    for f in ("convert_s", "convert_cpu_s", "size_bytes", "latency_ms")})
            else:
                record = measure_tflite_variant(variant, index, labels, classes, queries, threads)
            records.append(record)
            log(format_record(record))
        del index, labels, queries
        gc.collect()
    limits = {"copy_gb_per_s": copy_bandwidth(copy_megabytes), "threads": threads,
              "load_average_end": os.getloadavg() if hasattr(os, "getloadavg") else None}
    return {"machine": machine, "records": records, "limits": limits,
            "settings": {"classes": list(classes_list), "dim": dim, "shots": shots, "threads": threads,
                         "max_convert_s": max_convert_s, "seconds": time.perf_counter() - started}}


def machine_info() -> dict:
    """CPU model, core count, load average and the versions that matter for the numbers."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for module in ("tensorflow", "keras", "ai_edge_litert", "faiss"):
        try:
            versions[module] = getattr(__import__(module), "__version__", "?")
        except ImportError:
            versions[module] = None
    try:
        versions["ai_edge_litert"] = importlib.metadata.version("ai-edge-litert")
    except Exception:  # noqa: BLE001 - the version is informative only
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average": load, "platform": platform.platform(),
            "versions": versions}


# --------------------------------------------------------------------------------------------------
# End-to-end: embedding speed and `cbr-lite build`
# --------------------------------------------------------------------------------------------------


def embedding_throughput(embedder_name: str = "glyph-cnn", batch_sizes=(1, 32), seconds: float = 2.0) -> dict:
    """Images per second embedded by the Keras model (``predict_on_batch``) and by its .tflite (LiteRT).

    The input is random normalised pixels: the time does not depend on what the image shows.
    """
    from cbr_lite.embedders import load_embedder

    embedder = load_embedder(embedder_name)
    height, width = embedder.input_size
    rng = np.random.default_rng(0)
    result = {"embedder": embedder.name, "dim": embedder.dim, "input_size": [height, width]}
    tflite = to_tflite(embedder.model)
    for batch in batch_sizes:
        images = rng.standard_normal((batch, height, width, 3), dtype=np.float32)
        ms = median_ms(lambda: embedder.model.predict_on_batch(images), budget_s=seconds)
        result[f"keras_batch{batch}_images_per_s"] = 1000.0 * batch / ms
        runner = LiteRTModel(tflite, num_threads=os.cpu_count())
        interpreter = runner.interpreter
        interpreter.resize_tensor_input(runner.input["index"], [batch, height, width, 3])
        interpreter.allocate_tensors()
        interpreter.set_tensor(runner.input["index"], images)
        ms = median_ms(interpreter.invoke, budget_s=seconds)
        result[f"tflite_batch{batch}_images_per_s"] = 1000.0 * batch / ms
    result["tflite_size_bytes"] = len(tflite)
    return result


def build_time(images: int = 1000, classes: int = 50, embedder_name: str = "glyph-cnn") -> dict:
    """Seconds that ``cbr-lite build`` takes for an album of ``images`` PNG files (``classes`` folders).

    The album is written by :func:`cbr_lite.glyphs.write_albums` into a temporary folder; the command is run
    as a separate process, as a user would run it, so the time includes starting Python and TensorFlow.
    """
    from cbr_lite import glyphs

    with tempfile.TemporaryDirectory() as folder:
        albums = Path(folder) / "albums"
        names = glyphs.glyph_classes("base")[:classes]
        glyphs.write_albums(albums, names, images // classes, seed=0)
        count = sum(1 for _ in albums.rglob("*.png"))
        command = [sys.executable, "-m", "cbr_lite", "build", str(albums), "-o", str(Path(folder) / "model.tflite"),
                   "--embedder", embedder_name]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)  # the command line quiets TensorFlow itself
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            return {"images": count, "error": (done.stderr.strip().splitlines() or ["?"])[-1]}
        return {"images": count, "classes": classes, "seconds": seconds,
                "size_bytes": (Path(folder) / "model.tflite").stat().st_size, "command": "cbr-lite build"}


# --------------------------------------------------------------------------------------------------
# Output: table, plot, JSON
# --------------------------------------------------------------------------------------------------


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def format_record(record: dict) -> str:
    """One line of the table: variant, classes, vectors, convert s, size MB, latency ms, GB/s, note."""
    size = record["size_bytes"] / 1e6 if record["size_bytes"] else None
    mark = " (extrapolated)" if record["extrapolated"] else ""
    return (f"{record['variant']:>9} {record['classes']:>7} {record['index_vectors']:>8} "
            f"{_fmt(record['convert_s'], '8.2f')} {_fmt(size, '9.1f')} {_fmt(record['latency_ms'], '10.3f')} "
            f"{_fmt(record['gb_per_s'], '6.1f')}{mark} {record['note']}").rstrip()


TABLE_HEADER = "  variant classes  vectors convert_s   size_MB latency_ms   GB/s"


def format_table(result: dict) -> str:
    """The records of :func:`run_benchmark` as a text table, followed by the copy bandwidth."""
    lines = [TABLE_HEADER] + [format_record(r) for r in result["records"]]
    lines.append(f"memory copy: {result['limits']['copy_gb_per_s']:.1f} GB/s; LiteRT/FAISS threads: "
                 f"{result['limits']['threads']}")
    return "\n".join(lines)


def markdown_table(records: list) -> str:
    """The records as a Markdown table (for docs/benchmark.md); extrapolated numbers in italics."""
    rows = ["| variant | classes | index vectors | convert (s) | convert CPU (s) | .tflite / index (MB) "
            "| latency (ms) | fastest (ms) | 1 thread (ms) | GB/s | note |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in records:
        cell = (lambda text: f"*{text}*") if r["extrapolated"] else (lambda text: text)
        size = r["size_bytes"] / 1e6 if r["size_bytes"] else None
        rows.append(f"| {r['variant']} | {r['classes']:,} | {r['index_vectors']:,} | {cell(_fmt(r['convert_s'], '.2f'))} "
                    f"| {cell(_fmt(r.get('convert_cpu_s'), '.2f'))} | {cell(_fmt(size, '.1f'))} "
                    f"| {cell(_fmt(r['latency_ms'], '.2f'))} | {_fmt(r.get('best_ms'), '.2f')} "
                    f"| {_fmt(r.get('latency_1thread_ms'), '.2f')} | {_fmt(r['gb_per_s'], '.1f')} | {r['note']} |")
    return "\n".join(rows)


def best_latency(record: dict) -> float | None:
    """The lower of the median latencies with all threads and with one (threads can hurt on a busy machine)."""
    values = [v for v in (record["latency_ms"], record.get("latency_1thread_ms")) if v]
    return min(values) if values else None


def plot(result: dict, path=None):
    """Latency (:func:`best_latency`) and size against classes, one line per variant (log-log); extrapolated points hollow."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for variant in VARIANTS:
        rows = [r for r in result["records"] if r["variant"] == variant and r["latency_ms"]]
        if not rows:
            continue
        line, = left.plot([r["classes"] for r in rows], [best_latency(r) for r in rows], "-", label=variant)
        for r in rows:
            left.plot(r["classes"], best_latency(r), "o", color=line.get_color(),
                      markerfacecolor="none" if r["extrapolated"] else line.get_color())
            if r["size_bytes"]:
                right.plot(r["classes"], r["size_bytes"] / 1e6, "o", color=line.get_color(),
                           markerfacecolor="none" if r["extrapolated"] else line.get_color())
        sized = [r for r in rows if r["size_bytes"]]
        right.plot([r["classes"] for r in sized], [r["size_bytes"] / 1e6 for r in sized], "-",
                   color=line.get_color(), label=variant)
    for axes, title, label in ((left, "One query (LiteRT / baselines)", "median latency, best of 1 / all threads (ms)"),
                               (right, ".tflite file (baselines: index in memory)", "size (MB)")):
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("classes (5 index images each)")
        axes.set_ylabel(label)
        axes.set_title(title)
        axes.grid(True, which="major", alpha=0.3)
    left.legend(fontsize=8)
    figure.suptitle(f"Retrieval head scaling, dim {result['settings']['dim']} "
                    f"(hollow: extrapolated)")
    figure.tight_layout()
    if path is not None:
        stream = io.BytesIO()
        figure.savefig(stream, dpi=110, format=Path(path).suffix.lstrip(".") or "png")
        write_atomically(path, stream.getvalue())
        plt.close(figure)
    return figure


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``cbr-lite bench`` / ``python -m cbr_lite.bench``."""
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 classes only (under a minute)")
    parser.add_argument("--classes", type=int, nargs="+", help="numbers of classes (default 100 1000 10000 50000)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="head variants and baselines to run (default: all)")
    parser.add_argument("--dim", type=int, help="embedding length (default 1024; with --ivf: 128 and 256)")
    parser.add_argument("--shots", type=int, default=5, help="index images per class (default 5)")
    parser.add_argument("--threads", type=int, help="LiteRT and FAISS threads (default: all cores)")
    parser.add_argument("--max-convert-s", type=float,
                        help="extrapolate the per-class head instead of converting it when that would take "
                             "longer (default 180 s, 15 s with --quick)")
    parser.add_argument("--end-to-end", action="store_true",
                        help="also time embedding (Keras and .tflite) and `cbr-lite build` of 1,000 images")
    parser.add_argument("--embedder", default="glyph-cnn", help="embedder for --end-to-end (default glyph-cnn)")
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="write all numbers as JSON")
    parser.add_argument("--plot", type=Path, metavar="OUT.png", help="write latency and size plots")


def main(args: argparse.Namespace) -> int:
    """Run the benchmark as the options say, print the table, write --json / --plot; returns the exit status."""
    for path in (args.json, args.plot):
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            check_output_path(path)  # before minutes of measuring, not after
    import_tensorflow_quietly()
    classes = args.classes or (QUICK_CLASSES if args.quick else FULL_CLASSES)
    max_convert_s = args.max_convert_s if args.max_convert_s is not None else (15.0 if args.quick else 180.0)
    print(TABLE_HEADER, flush=True)
    result = run_benchmark(classes, args.variants, args.dim or 1024, args.shots, args.threads, max_convert_s,
                           log=lambda line: print(line, flush=True))
    print(f"memory copy: {result['limits']['copy_gb_per_s']:.1f} GB/s; threads: {result['limits']['threads']}")
    if args.end_to_end:
        end_to_end = {"embedding": embedding_throughput(args.embedder), "build": build_time(embedder_name=args.embedder)}
        result["end_to_end"] = end_to_end
        print(json.dumps(end_to_end, indent=1))
    if args.json:
        write_atomically(args.json, (json.dumps(result, indent=1) + "\n").encode())
    if args.plot:
        plot(result, args.plot)
    return 0


def run_module(prog: str, description: str, adders, run) -> int:
    """``python -m`` entry of a benchmark module: options from each of ``adders``, then ``run(args)``; a
    :class:`CbrError` becomes a one-line error and exit status 2."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    for add in adders:
        add(parser)
    try:
        return run(parser.parse_args())
    except CbrError as error:
        print(f"cbr-lite bench: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(run_module("python -m cbr_lite.bench", __doc__.splitlines()[0], (add_arguments,), main))
