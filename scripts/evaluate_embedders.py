"""Few-shot accuracy of cbr-lite's embedders on held-out domains, as a markdown table.

    python scripts/evaluate_embedders.py                                   # print the table
    python scripts/evaluate_embedders.py --json docs/figures/embedder_eval.json \
        --markdown docs/figures/embedder_eval.md                          # and write the figures

Rows: the raw-pixel baseline, ``glyph-cnn`` and ``efficientnet-lite0`` (when it loads); columns: each
evaluation domain of ``cbr_lite.evaluation`` x {5-way 1-shot, 5-way 5-shot}, mean accuracy over random
episodes with its 95% confidence interval. Also embedding speed (images/s at batch 64 with
``Embedder.embed``) and parameter counts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from cbr_lite.quiet import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()  # before anything imports TensorFlow: no start-up lines

from cbr_lite.errors import CbrError  # noqa: E402
from cbr_lite.evaluation import DOMAINS, few_shot_accuracy, load_domain, raw_pixel_embedder  # noqa: E402
from cbr_lite.locations import DATA_DIR  # noqa: E402


def load_embedders(names):
    """``{name: Embedder}`` for the names that load; the others are reported and skipped."""
    from cbr_lite.embedders import load_embedder

    embedders = {}
    for name in names:
        try:
            embedders[name] = raw_pixel_embedder() if name == "raw-pixels" else load_embedder(name)
        except CbrError as error:
            print(f"skipping {name}: {error}", file=sys.stderr)
    return embedders


def images_per_second(embedder, images, batch_size=64, repeats=3):
    """Best-of-``repeats`` throughput of ``embedder.embed`` on ``images`` in batches of ``batch_size``."""
    embedder.embed(images[:batch_size], batch_size=batch_size)  # warm-up: traces the model once
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        embedder.embed(images, batch_size=batch_size)
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def markdown_table(results, domains, columns):
    """Rows = embedders, columns = domain x episode kind, cells ``mean ± ci95`` in percent."""
    header = "| embedder | " + " | ".join(f"{d}<br>{c}" for d in domains for c in columns) + " |"
    lines = [header, "|---|" + "---|" * (len(domains) * len(columns))]
    for name, scores in results.items():
        cells = [f"{100 * scores[d][c]['mean']:.1f} ± {100 * scores[d][c]['ci95']:.1f}"
                 for d in domains for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reuse_rows(path: Path, settings: dict, domains, results: dict, details: dict) -> tuple[dict, dict]:
    """``results`` and ``details`` with the rows of ``path`` (an earlier ``--json``) for the embedders not measured
    now, in the earlier order; refused unless that run had the same settings and domains."""
    earlier = json.loads(path.read_text())
    if earlier["settings"] != settings or list(earlier["domains"]) != list(domains):
        sys.exit(f"--reuse {path}: that run had other settings or domains; measure every embedder instead")
    order = [*earlier["accuracy"], *(name for name in results if name not in earlier["accuracy"])]
    merged = {name: results.get(name) or earlier["accuracy"][name] for name in order}
    merged_details = {name: details.get(name) or earlier["embedders"][name] for name in order}
    return merged, merged_details


def main(argv=None):
    """Parse the arguments, embed every domain with every embedder, run the episodes, print/write figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedders", nargs="+", default=["raw-pixels", "glyph-cnn", "efficientnet-lite0"])
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=list(DOMAINS))
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--queries-per-class", type=int, default=5)
    parser.add_argument("--samples-per-class", type=int, default=10, help="images per class of rendered domains")
    parser.add_argument("--seed", type=int, default=0, help="episode seed")
    parser.add_argument("--json", type=Path, help="write the figures as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the table (with notes) as markdown here")
    parser.add_argument("--reuse", type=Path, metavar="JSON",
                        help="keep the rows of embedders not named in --embedders from this earlier --json "
                             "(same settings and domains, else refused): re-measure glyph-cnn without "
                             "re-running the slow EfficientNet rows")
    args = parser.parse_args(argv)

    embedders = load_embedders(args.embedders)
    columns = [f"{args.ways}-way {k}-shot" for k in args.shots]
    data, results, details = {}, {name: {} for name in embedders}, {}
    for domain in args.domains:
        images, labels, names = load_domain(domain, samples_per_class=args.samples_per_class)
        data[domain] = {"images": len(images), "classes": len(names)}
        print(f"{domain}: {len(images)} images of {len(names)} classes", flush=True)
        for name, embedder in embedders.items():
            embeddings = embedder.embed(images)
            results[name][domain] = {}
            for k, column in zip(args.shots, columns):
                mean, ci95 = few_shot_accuracy(embeddings, labels, args.ways, k, args.episodes,
                                               args.queries_per_class, seed=args.seed)
                results[name][domain][column] = {"mean": round(mean, 4), "ci95": round(ci95, 4)}
            print(f"  {name}: " + ", ".join(f"{c} {100 * results[name][domain][c]['mean']:.1f}%" for c in columns),
                  flush=True)

    speed_images = load_domain("handwriting")[0][:256]
    for name, embedder in embedders.items():
        details[name] = {
            "dim": embedder.dim,
            "input_size": list(embedder.input_size),
            "parameters": int(embedder.model.count_params()),
            "images_per_second_batch_64": round(images_per_second(embedder, speed_images), 1),
        }
    weights = DATA_DIR / "embedders" / "glyph_cnn.keras"
    if "glyph-cnn" in details and weights.exists():
        details["glyph-cnn"]["file_bytes"] = weights.stat().st_size
        info = json.loads((weights.with_suffix(".json")).read_text())
        details["glyph-cnn"]["training"] = {k: info.get(k) for k in (
            "steps", "batch_size", "base_classes", "base_class_counts", "training_images", "training_seconds",
            "total_seconds", "command")}

    settings = {"ways": args.ways, "shots": args.shots, "episodes": args.episodes,
                "queries_per_class": args.queries_per_class, "samples_per_class": args.samples_per_class,
                "seed": args.seed, "aggregation": "max", "similarity": "cosine"}
    if args.reuse:
        results, details = reuse_rows(args.reuse, settings, args.domains, results, details)
    table = markdown_table(results, args.domains, columns)
    print()
    print(table)
    print()
    for name, detail in details.items():
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in detail.items() if k != "training"))
    figures = {
        "settings": settings,
        "domains": {d: {"description": DOMAINS[d], **data[d]} for d in args.domains},
        "accuracy": results,
        "embedders": details,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    from cbr_lite.files import write_atomically

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(args.json, (json.dumps(figures, indent=2) + "\n").encode())
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        notes = [f"- **{d}** ({data[d]['classes']} classes, {data[d]['images']} images): {DOMAINS[d]}"
                 for d in args.domains]
        speed = [f"| {name} | {d['dim']} | {d['parameters']:,} | {d['images_per_second_batch_64']:.0f} |"
                 for name, d in details.items()]
        text = "\n".join([
            "# Few-shot accuracy of the embedders on held-out domains",
            "",
            f"Written by `python scripts/evaluate_embedders.py --json ... --markdown ...`. "
            f"{args.ways}-way K-shot episodes ({args.episodes} per cell, {args.queries_per_class} queries per "
            "class, cosine similarity, class score = max over its index images, as the exported CbR model "
            "scores), accuracy in percent ± the 95% confidence interval. No domain was used to train glyph-cnn.",
            "",
            table,
            "",
            "Domains:",
            "",
            *notes,
            "",
            "| embedder | embedding size | parameters | images/s (batch 64, `Embedder.embed`, this machine) |",
            "|---|---|---|---|",
            *speed,
            "",
        ])
        write_atomically(args.markdown, text.encode())


if __name__ == "__main__":
    main()
