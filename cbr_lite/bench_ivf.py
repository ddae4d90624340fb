"""The IVF study of ``cbr-lite bench --ivf``: the inverted-file head (:mod:`cbr_lite.ivf`) at 10^5 to 10^6 classes.

Run it as ``cbr-lite bench --ivf`` or ``python -m cbr_lite.bench_ivf [--quick] [--json OUT.json]``.

The data are :func:`cbr_lite.bench.synthetic_index` unit embeddings with one image per class (so each
class is one random direction: no cluster structure helps the lists) and queries that are index images
plus noise (:func:`cbr_lite.bench.synthetic_queries`). For each embedding length and number of classes
it clusters the index (:func:`cbr_lite.ivf.build_inverted_lists`, the default number of lists), and for a
few numbers of probes around the default it converts the head and measures:

- ``recall``: the fraction of queries whose top-1 class is the exact answer (the float cosine argmax
  over the whole index), run with LiteRT;
- ``latency_ms`` / ``latency_1thread_ms``: LiteRT, one query at a time, 2 threads / 1 thread (median and
  ``best_ms``, the fastest run, which the machine's other jobs distort least), each run a different query,
  so the probed lists are not still in the CPU cache from the run before;
- ``size_bytes`` next to ``int8_index_bytes`` (``classes x dim``, the raw int8 index);
- ``build_s``: k-means (``kmeans_s``) + conversion (``convert_s``), wall and CPU seconds;
- ``memory_bytes``: how much the resident memory of a fresh process grows when it loads the model from
  its file with LiteRT and answers 200 queries (LiteRT maps the file, so untouched lists stay on disk).

Side by side: FAISS ``IndexIVFFlat`` (``faiss-cpu``, the ``bench`` extra) on the same centres, so with the
same lists, and the same probes (float32 vectors, 1 and 2 threads); and the exact int8 head
(:mod:`cbr_lite.retrieval`, ``index_dtype="int8"``) up to ``--ivf-exact-limit`` classes.
"""

from __future__ import annotations

# As cbr_lite.bench, this module is imported to build the command line's parser: Keras, TensorFlow and the
# IVF head (cbr_lite.ivf) are imported only inside the functions that measure.
import argparse
import gc
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cbr_lite import bench
from cbr_lite.files import write_atomically
from cbr_lite.index_choice import default_nprobe
from cbr_lite.quiet import quiet_environment

IVF_CLASSES = (100_000, 300_000, 1_000_000)
QUICK_IVF_CLASSES = (3_000, 10_000)
IVF_DIMS = (128, 256)
QUERIES = 1000
#: The probes measured for each index, as multiples of its default number (rounded, at least 1).
NPROBE_FACTORS = (0.5, 1.0, 2.0)
#: The exact int8 head is converted only up to this many classes (its float matrix is traced in full).
EXACT_LIMIT = 1_000_000
#: Issue 16's targets at 10^6 classes, d = 128, on a 2-core machine.
TARGETS = {"classes": 1_000_000, "dim": 128, "recall": 0.95, "latency_ms": 5.0, "size_ratio": 1.25, "build_s": 180.0}

# Run in a fresh process: the resident memory that loading a .tflite file with LiteRT and answering queries adds.
_MEMORY_PROBE = """
import sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter

def resident():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))

queries = np.load(sys.argv[2])
before = resident()
interpreter = Interpreter(model_path=sys.argv[1], num_threads=1)
interpreter.allocate_tensors()
index = interpreter.get_input_details()[0]["index"]
for query in queries:
    interpreter.set_tensor(index, query[None])
    interpreter.invoke()
print(resident() - before)
"""


def exact_top1(queries: np.ndarray, index: np.ndarray, block: int = 262_144) -> np.ndarray:
    """The index row with the largest cosine for every unit query (the exact answer), in blocks of rows."""
    best, where = np.full(len(queries), -np.inf, dtype=np.float32), np.zeros(len(queries), dtype=np.int64)
    for start in range(0, len(index), block):
        scores = queries @ index[start:start + block].T
        top = scores.argmax(axis=1)
        better = scores[np.arange(len(queries)), top] > best
        best[better], where[better] = scores[np.arange(len(queries)), top][better], start + top[better]
    return where


def loaded_memory(path: Path, queries: np.ndarray) -> int | None:
    """Bytes the resident memory of a fresh Python process grows by to load ``path`` with LiteRT and run
    ``queries`` (Linux only: read from ``/proc/self/status``; ``None`` elsewhere)."""
    if not Path("/proc/self/status").exists():
        return None
    queries_path = path.with_suffix(".queries.npy")
    np.save(queries_path, queries.astype(np.float32), allow_pickle=False)
    done = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(path), str(queries_path)], capture_output=True,
                          text=True, env=quiet_environment())
    return int(done.stdout.split()[-1]) if done.returncode == 0 and done.stdout.split() else None


def _timed(function):
    """``(result, wall s, CPU s of this process)`` of ``function()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _convert(head, quantize: str, path: Path):
    """``(tflite bytes, convert wall s, convert CPU s, path)``: ``head`` converted, written to ``path``, and let go."""
    import keras

    from cbr_lite.export import to_tflite

    tflite, convert_s, convert_cpu_s = _timed(lambda: to_tflite(head, quantize=quantize))
    del head
    keras.backend.clear_session()
    gc.collect()
    path.write_bytes(tflite)
    return tflite, convert_s, convert_cpu_s, path


def one_query_after_another(queries: np.ndarray, run) -> callable:
    """A function that calls ``run(query)`` with the next of ``queries`` (from the first again after the last).

    Timed with :func:`cbr_lite.bench.time_ms`, it gives the time of a query whose lists are not those of the
    query before: repeating one query would time lists that stay in the CPU cache from run to run.
    """
    rows = itertools.cycle([np.ascontiguousarray(query[None], dtype=np.float32) for query in queries])
    return lambda: run(next(rows))


def _latencies(tflite: bytes, queries: np.ndarray, threads: int) -> dict:
    """LiteRT's median and fastest ms per query with ``threads`` threads and with 1, over different queries."""
    from cbr_lite.export import LiteRTModel

    times = {}
    for key, count in (("", threads), ("_1thread", 1)):
        model = LiteRTModel(tflite, num_threads=count)
        interpreter, tensor = model.interpreter, model.input["index"]

        def run(query):
            interpreter.set_tensor(tensor, query)
            interpreter.invoke()

        times[f"latency{key}_ms"], times[f"best{key}_ms"] = bench.time_ms(
            one_query_after_another(queries, run), min_repeats=20, max_repeats=200, budget_s=1.0)
        del model, interpreter
    return times


def _record(method, classes, dim, **fields) -> dict:
    record = {"method": method, "classes": int(classes), "dim": int(dim), "nlist": None, "nprobe": None,
              "recall": None, "latency_ms": None, "best_ms": None, "latency_1thread_ms": None,
              "best_1thread_ms": None, "size_bytes": None, "int8_index_bytes": int(classes) * int(dim),
              "kmeans_s": None, "kmeans_cpu_s": None, "convert_s": None, "convert_cpu_s": None, "build_s": None,
              "build_cpu_s": None, "memory_bytes": None, "rows_read": None, "note": ""}
    record.update(fields)
    return record


def measure_ivf(lists, kmeans_s, kmeans_cpu_s, queries, truth, nprobe, threads, folder: Path) -> dict:
    """Convert the IVF head with ``nprobe`` probes and measure it (see the module docstring)."""
    from cbr_lite import ivf
    from cbr_lite.export import LiteRTModel

    tflite, convert_s, convert_cpu_s, path = _convert(ivf.build_ivf_head(lists, nprobe), "none", folder / "ivf.tflite")
    runner = LiteRTModel(tflite, num_threads=threads)
    top1 = np.array([runner.run_outputs(query)["top_classes"][0] for query in queries], dtype=np.int64)
    del runner
    classes, dim = lists.num_classes, lists.vectors.shape[1]
    return _record("ivf", classes, dim, nlist=lists.nlist, nprobe=int(nprobe), recall=float(np.mean(top1 == truth)),
                   size_bytes=len(tflite), kmeans_s=kmeans_s, kmeans_cpu_s=kmeans_cpu_s, convert_s=convert_s,
                   convert_cpu_s=convert_cpu_s, build_s=kmeans_s + convert_s, build_cpu_s=kmeans_cpu_s + convert_cpu_s,
                   memory_bytes=loaded_memory(path, queries[:200]), rows_read=lists.rows_read(nprobe),
                   list_length=lists.list_length, smallest_list=int(lists.sizes.min()),
                   **_latencies(tflite, queries, threads))


def measure_faiss_ivf(index, centres, queries, truth, nprobes, threads) -> list:
    """FAISS ``IndexIVFFlat`` on the given centres (hence the same lists) for each ``nprobe``; [] without FAISS."""
    faiss = bench.faiss_module()
    if faiss is None:
        return []
    faiss.omp_set_num_threads(threads)
    quantizer = faiss.IndexFlatIP(index.shape[1])
    quantizer.add(centres)
    search = faiss.IndexIVFFlat(quantizer, index.shape[1], len(centres), faiss.METRIC_INNER_PRODUCT)
    _, add_s, add_cpu_s = _timed(lambda: search.add(index))
    records = []
    for nprobe in nprobes:
        search.nprobe = int(nprobe)
        found = search.search(queries, 1)[1][:, 0]
        timed = one_query_after_another(queries, lambda query: search.search(query, 1))
        latency, best = bench.time_ms(timed, min_repeats=20, max_repeats=200, budget_s=1.0)
        faiss.omp_set_num_threads(1)
        one, one_best = bench.time_ms(timed, min_repeats=20, max_repeats=200, budget_s=1.0)
        faiss.omp_set_num_threads(threads)
        records.append(_record("faiss_ivf", len(index), index.shape[1], nlist=len(centres), nprobe=int(nprobe),
                               recall=float(np.mean(found == truth)), latency_ms=latency, best_ms=best,
                               latency_1thread_ms=one, best_1thread_ms=one_best, size_bytes=int(index.nbytes + 8 * len(index)),
                               build_s=add_s, build_cpu_s=add_cpu_s,
                               note="same centres as ours; float32 vectors; build = adding the vectors"))
    del search, quantizer
    return records


def measure_exact_int8(index, labels, queries, truth, threads, folder: Path) -> dict:
    """The exact head with the int8 index (:func:`cbr_lite.retrieval.build_retrieval_head`), converted and measured."""
    from cbr_lite.export import LiteRTModel
    from cbr_lite.retrieval import build_retrieval_head

    tflite, convert_s, convert_cpu_s, path = _convert(build_retrieval_head(index, labels, len(index), index_dtype="int8"),
                                                      "int8", folder / "exact.tflite")
    runner = LiteRTModel(tflite, num_threads=threads)
    top1 = np.array([runner.run_one(query).argmax() for query in queries[:200]])
    del runner
    return _record("exact_int8", len(index), index.shape[1], recall=float(np.mean(top1 == truth[:200])),
                   size_bytes=len(tflite), convert_s=convert_s, convert_cpu_s=convert_cpu_s, build_s=convert_s,
                   build_cpu_s=convert_cpu_s, memory_bytes=loaded_memory(path, queries[:20]), rows_read=len(index),
                   note="recall on 200 queries (LiteRT rounds the query to int8)",
                   **_latencies(tflite, queries, threads))


def nprobes_around(nlist: int, factors=None) -> list:
    """The probes to measure: the default for ``nlist`` times each factor, rounded, distinct, within 1..nlist."""
    default = default_nprobe(nlist)
    return sorted({min(nlist, max(1, round(default * f))) for f in factors or NPROBE_FACTORS})


def run_ivf_study(classes_list=QUICK_IVF_CLASSES, dims=IVF_DIMS, threads: int | None = None, queries: int = QUERIES,
                  exact_limit: int = EXACT_LIMIT, factors=None, log=print) -> dict:
    """Measure the IVF head, FAISS IVF and the exact int8 head for every (dim, classes); returns the records."""
    from cbr_lite import ivf

    threads = threads or os.cpu_count() or 1
    records, machine, started = [], bench.machine_info(), time.perf_counter()  # the load average at the start
    with tempfile.TemporaryDirectory() as folder:
        for dim in dims:
            for classes in sorted(int(c) for c in classes_list):
                index, labels = bench.synthetic_index(classes, shots=1, dim=dim)
                query_rows = bench.synthetic_queries(index, count=queries)
                truth = labels[exact_top1(query_rows, index)]
                lists, kmeans_s, kmeans_cpu_s = _timed(lambda: ivf.build_inverted_lists(index, labels, classes))
                nprobes = nprobes_around(lists.nlist, factors)
                found = [measure_ivf(lists, kmeans_s, kmeans_cpu_s, query_rows, truth, nprobe, threads, Path(folder))
                         for nprobe in nprobes]
                found += measure_faiss_ivf(index, lists.centres, query_rows, truth, nprobes, threads)
                if classes <= exact_limit:
                    found.append(measure_exact_int8(index, labels, query_rows, truth, threads, Path(folder)))
                for record in found:
                    log(format_record(record))
                records += found
                del index, labels, lists
                gc.collect()
    return {"machine": machine, "records": records,
            "settings": {"classes": list(classes_list), "dims": list(dims), "threads": threads, "queries": queries,
                         "exact_limit": exact_limit, "seconds": time.perf_counter() - started},
            "load_average_end": os.getloadavg() if hasattr(os, "getloadavg") else None}


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------

TABLE_HEADER = ("    method   dim   classes nlist nprobe recall  ms(2t)  ms(1t) best_ms  size_MB /int8  "
                "build_s build_cpu_s mem_MB")


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def format_record(r: dict) -> str:
    """One line of the text table."""
    ratio = r["size_bytes"] / r["int8_index_bytes"] if r["size_bytes"] else None
    best = min(v for v in (r["best_ms"], r["best_1thread_ms"]) if v is not None) if r["best_ms"] else None
    return (f"{r['method']:>10} {r['dim']:>5} {r['classes']:>9,} {_fmt(r['nlist'], '>5')} {_fmt(r['nprobe'], '>6')} "
            f"{_fmt(r['recall'], '6.3f')} {_fmt(r['latency_ms'], '7.2f')} {_fmt(r['latency_1thread_ms'], '7.2f')} "
            f"{_fmt(best, '7.2f')} {_fmt(r['size_bytes'] and r['size_bytes'] / 1e6, '8.1f')} {_fmt(ratio, '5.2f')} "
            f"{_fmt(r['build_s'], '8.1f')} {_fmt(r['build_cpu_s'], '11.1f')} "
            f"{_fmt(r['memory_bytes'] and r['memory_bytes'] / 1e6, '6.0f')}")


def markdown_table(records: list) -> str:
    """The records as a Markdown table (for docs/benchmark.md)."""
    rows = ["| method | dim | classes | lists | probes | recall@1 | latency 2 thr (ms) | 1 thr (ms) | fastest (ms) "
            "| file (MB) | / int8 index | build (s) | build CPU (s) | k-means CPU (s) | memory (MB) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        best = min(v for v in (r["best_ms"], r["best_1thread_ms"]) if v is not None) if r["best_ms"] else None
        ratio = r["size_bytes"] / r["int8_index_bytes"] if r["size_bytes"] else None
        rows.append(f"| {r['method']} | {r['dim']} | {r['classes']:,} | {_fmt(r['nlist'], '')} | {_fmt(r['nprobe'], '')} "
                    f"| {_fmt(r['recall'], '.3f')} | {_fmt(r['latency_ms'], '.2f')} | {_fmt(r['latency_1thread_ms'], '.2f')} "
                    f"| {_fmt(best, '.2f')} | {_fmt(r['size_bytes'] and r['size_bytes'] / 1e6, '.1f')} "
                    f"| {_fmt(ratio, '.2f')} | {_fmt(r['build_s'], '.1f')} | {_fmt(r['build_cpu_s'], '.1f')} "
                    f"| {_fmt(r.get('kmeans_cpu_s'), '.1f')} | {_fmt(r['memory_bytes'] and r['memory_bytes'] / 1e6, '.0f')} |")
    return "\n".join(rows)


def target_check(records: list) -> list:
    """``[(target, figure, met), ...]`` for the IVF head at :data:`TARGETS`' size with the default probes."""
    size = [r for r in records if r["method"] == "ivf" and r["classes"] == TARGETS["classes"] and r["dim"] == TARGETS["dim"]]
    if not size:
        return []
    r = next((r for r in size if r["nprobe"] == default_nprobe(r["nlist"])), size[0])
    latency = min(v for v in (r["latency_ms"], r["latency_1thread_ms"]) if v is not None)
    ratio = r["size_bytes"] / r["int8_index_bytes"]
    return [(f"recall@1 >= {TARGETS['recall']}", f"{r['recall']:.3f}", r["recall"] >= TARGETS["recall"]),
            (f"latency <= {TARGETS['latency_ms']} ms (median, better of 1 / 2 threads)", f"{latency:.2f} ms",
             latency <= TARGETS["latency_ms"]),
            (f"file <= {TARGETS['size_ratio']}x the raw int8 index", f"{ratio:.2f}x", ratio <= TARGETS["size_ratio"]),
            (f"build <= {TARGETS['build_s']:.0f} s (k-means + conversion, wall)",
             f"{r['build_s']:.0f} s wall, {r['build_cpu_s']:.0f} s CPU", r["build_s"] <= TARGETS["build_s"])]


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the IVF study (added to ``cbr-lite bench``, whose --quick, --classes, --dim, --threads and
    --json it shares)."""
    parser.add_argument("--ivf", action="store_true",
                        help="run the IVF study instead: 100k, 300k and 1M classes at dim 128 and 256 "
                             "(~11 min on 2 cores with FAISS; --quick: 3k and 10k classes)")
    parser.add_argument("--ivf-exact-limit", type=int, default=EXACT_LIMIT, metavar="CLASSES",
                        help=f"with --ivf, convert the exact int8 head only up to this many classes (default {EXACT_LIMIT:,})")


def main(args: argparse.Namespace) -> int:
    """Run the IVF study as the options say, print its table and the targets, write --json."""
    classes = args.classes or (QUICK_IVF_CLASSES if args.quick else IVF_CLASSES)
    dims = [args.dim] if args.dim else IVF_DIMS
    print(TABLE_HEADER, flush=True)
    result = run_ivf_study(classes, dims, args.threads, exact_limit=args.ivf_exact_limit,
                           log=lambda line: print(line, flush=True))
    for target, figure, met in target_check(result["records"]):
        print(f"target {target}: {figure} ({'met' if met else 'NOT met'})")
    if args.json:
        write_atomically(args.json, (json.dumps(result, indent=1) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(bench.run_module("python -m cbr_lite.bench_ivf", __doc__.splitlines()[0], (bench.add_arguments, add_arguments),
                              main))
