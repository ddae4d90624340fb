"""Train cbr-lite's offline default embedder (``glyph-cnn``) and write it to data/embedders/.

    python scripts/train_default_embedder.py            # the committed model (see data/embedders/glyph_cnn.json)
    python scripts/train_default_embedder.py --quick    # a tiny run to check that everything works

Only *base* data is used (see cbr_lite.glyphs): base-script glyphs, base-photo instance classes and
procedural shapes. Novel scripts, icon symbols, handwritten digits and the novel photos are never seen,
so scripts/evaluate_embedders.py can measure how well the embedder generalises to new classes.
Same arguments -> the same weights (seeded, deterministic TensorFlow ops, no timestamps in the files).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from cbr_lite.quiet import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()  # before anything imports TensorFlow: no start-up lines

from cbr_lite import glyphs  # noqa: E402
from cbr_lite.locations import DATA_DIR  # noqa: E402


#: The committed glyph-cnn's recipe: what `python scripts/train_default_embedder.py` does with no options.
DEFAULTS = {
    "steps": 4500, "batch_size": 128, "images_per_class": 4, "grouped_fraction": 0.0, "learning_rate": 2e-3,
    "scale": 16.0, "margin": 0.2, "triplet_weight": 0.0, "svmax_weight": 0.0, "low_resolution": 0.25,
    "glyph_samples": 24, "shape_classes": 400, "shape_samples": 24, "photo_samples": 48,
}
#: Each DEFAULTS key is an option (``--batch-size`` for batch_size) of its default's type; its help, if any.
HELP = {
    "steps": "training steps (batches)",
    "images_per_class": "images of each class in a batch (batch = classes x this)",
    "grouped_fraction": "fraction of each batch drawn as classes x images-per-class groups (the triplet "
                        "head needs them); the rest are single images of distinct classes",
    "scale": "cosine-softmax scale",
    "margin": "CosFace margin",
    "triplet_weight": "weight of the batch-hard triplet (retrieval) head; 0: none",
    "svmax_weight": "weight of the SVMax term (minus the batch's mean singular value); 0: none",
    "low_resolution": "fraction of training images shrunk to 8-32 px and enlarged back",
    "glyph_samples": "rendered samples per glyph class",
    "shape_classes": "number of procedural shape classes",
    "shape_samples": "rendered samples per shape class",
    "photo_samples": "rendered crops per photo-region class",
}
#: The options that go to cbr_lite.training.train (the others choose the data).
RECIPE = ("steps", "batch_size", "images_per_class", "grouped_fraction", "learning_rate", "scale", "margin", "triplet_weight",
          "svmax_weight", "low_resolution")


def _render_glyph_chunk(job):
    classes, samples, seed = job
    return glyphs.render_glyphs(classes, samples, seed)[0]


def _render_shape_chunk(job):
    classes, samples, seed = job
    return glyphs.render_shapes(classes, samples, seed)[0]


def _render_photo_chunk(job):
    classes, samples, seed = job
    return glyphs.render_photos(classes, samples, seed)[0]


def _parallel(function, classes, samples, seed, workers, chunk=64):
    """Render class chunks in worker processes; the result does not depend on ``workers``."""
    jobs = [(classes[i:i + chunk], samples, seed) for i in range(0, len(classes), chunk)]
    if workers <= 1:
        return np.concatenate([function(job) for job in jobs])
    with ProcessPoolExecutor(workers) as pool:
        return np.concatenate(list(pool.map(function, jobs)))


def make_training_data(glyph_samples, shape_classes, shape_samples, photo_samples, seed, workers, limit=None):
    """All base training data: ``(images uint8 (n, 64, 64, 3), labels int32 (n,), class names)``.

    Glyph classes, then procedural-shape classes, then photo-region classes, labels numbered in that order.
    ``limit`` keeps only the first classes of each kind (for ``--quick``).
    """
    parts, names = [], []
    kinds = [
        ("glyph", glyphs.glyph_classes("base"), glyph_samples, _render_glyph_chunk),
        ("shape", glyphs.shape_classes(shape_classes, seed=seed), shape_samples, _render_shape_chunk),
        ("photo", glyphs.photo_classes("base", rows=3, columns=4), photo_samples, _render_photo_chunk),
    ]
    for kind, classes, samples, function in kinds:
        classes = classes[:limit] if limit else classes
        if not classes or samples < 1:
            continue
        start = time.perf_counter()
        images = _parallel(function, classes, samples, seed, workers)
        print(f"rendered {len(images)} {kind} images ({len(classes)} classes) in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        parts.append((images, len(classes), samples))
        names.extend(f"{kind}:{label}" for label, _ in classes)
    images = np.concatenate([p[0] for p in parts])
    labels, offset = [], 0
    for _, count, samples in parts:
        labels.append(np.repeat(np.arange(offset, offset + count, dtype=np.int32), samples))
        offset += count
    return images, np.concatenate(labels), names


def _cpu_seconds():
    """User + system CPU seconds of this process and its finished workers (None where unavailable)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return round(sum(u.ru_utime + u.ru_stime for u in usage), 1)


def save(embedder, info, folder):
    """Write ``glyph_cnn.keras`` (loadable by every supported Keras) and ``glyph_cnn.json`` into ``folder``,
    each via a temporary file + rename."""
    from cbr_lite.files import write_atomically
    from cbr_lite.training import embedder_file_bytes

    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(folder / "glyph_cnn.keras", embedder_file_bytes(embedder))
    write_atomically(folder / "glyph_cnn.json", (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())


def main(argv=None):
    """Parse the arguments, render the data, train, save."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run (few classes, 20 steps) to test the script")
    for key, default in DEFAULTS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(default), default=default, help=HELP.get(key))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="processes rendering the data")
    parser.add_argument("--output", type=Path, default=DATA_DIR / "embedders",
                        help="folder for glyph_cnn.keras and glyph_cnn.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.glyph_samples, args.shape_samples, args.photo_samples = 20, 4, 4, 4
    total_start = time.perf_counter()

    import keras
    import tensorflow as tf

    from cbr_lite import training

    training.make_deterministic(args.seed)
    images, labels, names = make_training_data(
        args.glyph_samples, args.shape_classes, args.shape_samples, args.photo_samples, args.seed,
        args.workers, limit=64 if args.quick else None)
    print(f"{len(images)} images, {len(names)} base classes", flush=True)
    recipe = {key: getattr(args, key) for key in RECIPE}
    embedder, history = training.train(
        images, labels, seed=args.seed, log=lambda line: print(line, flush=True),
        log_every=5 if args.quick else 250, **recipe)
    info = {
        "name": "glyph-cnn",
        "input_size": list(training.INPUT_SIZE),
        "mean": [0.0, 0.0, 0.0],
        "std": [255.0, 255.0, 255.0],
        "embedding_dim": int(embedder.output_shape[-1]),
        "parameters": int(embedder.count_params()),
        "seed": args.seed,
        **recipe,
        "samples_per_class": {"glyph": args.glyph_samples, "shape": args.shape_samples,
                              "photo": args.photo_samples},
        "training_images": int(len(images)),
        "base_classes": len(names),
        "base_class_counts": {kind: sum(n.startswith(kind + ":") for n in names)
                              for kind in ("glyph", "shape", "photo")},
        "training_seconds": round(history["seconds"], 1),
        "total_seconds": round(time.perf_counter() - total_start, 1),
        # Wall time depends on what else the machine runs; CPU time (this process and the render workers) does not.
        "cpu_seconds": _cpu_seconds(),
        "final_loss": round(history["loss"][-1], 4),
        "final_batch_accuracy": round(history["accuracy"][-1], 4),
        "final_mean_singular_value": round(history["mean_singular_value"][-1], 4),
        "history": {key: [round(value, 4) for value in history[key]]
                    for key in ("loss", "accuracy", "mean_singular_value")} | {"step": history["step"]},
        "quick": bool(args.quick),
        "command": "python scripts/train_default_embedder.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "software": {"python": platform.python_version(), "tensorflow": tf.__version__,
                     "keras": keras.__version__, "numpy": np.__version__},
    }
    save(embedder, info, args.output)
    print(json.dumps(info, indent=2), flush=True)
    print(f"wrote {args.output / 'glyph_cnn.keras'} in {info['total_seconds']:.0f} s total", flush=True)


if __name__ == "__main__":
    main()
