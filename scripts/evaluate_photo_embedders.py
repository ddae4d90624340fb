"""Which embedder should ``cbr-lite build`` use for photos? Few-shot accuracy vs LiteRT speed and size, measured.

    python scripts/evaluate_photo_embedders.py                    # Lite0/1/2, with and without centring
    python scripts/evaluate_photo_embedders.py --embedders efficientnet-lite0 --flip

**The data, honestly described.** No labelled photo collection ships with the installed packages, so the
classes are *regions* of the 15 bundled photos (scikit-image's astronaut, cat, coffee, rocket, ..., the
scikit-learn and matplotlib samples; a 2x2 grid per photo: 60 classes), and each image is a new
"photograph" of its region rendered by :func:`cbr_lite.glyphs.render_photos` (moved by up to 15%, zoomed
0.8-1.25x, rotated up to 15 degrees, colour, contrast, blur and noise changes), 192x192 pixels, so the
embedders enlarge it as they would a typical phone thumbnail. It is "the same thing seen again", not "another
thing of the same category": a harder problem for pixels, an easier one for semantics than real albums of
birds, fruit and vegetables. Nothing is trained on it.

Protocol: :func:`cbr_lite.evaluation.few_shot_accuracy`, max aggregation as in the exported model, 9-way
3-shot (like albums of 9 classes with 3 photos each) and 5-way 1-shot episodes, 5 queries per class,
without and with centring (CL2N: the episode's mean index embedding subtracted before the cosine).
Speed: the embedder alone converted to a float32 .tflite, LiteRT, one image, best of 20 after a warm-up,
one thread and all threads; size: that file.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from cbr_lite.quiet import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()  # before anything imports TensorFlow: no start-up lines

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "china", "flower", "grace_hopper",
          "hubble_deep_field", "retina", "stereo_motorcycle", "camera", "coins", "cell", "clock")
EMBEDDERS = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
#: (ways, shots) of the episodes.
TASKS = ((9, 3), (5, 1))


def photo_dataset(kind: str = "parts", size: int = 192, seed: int = 1):
    """``(images uint8 (n, size, size, 3), labels (n,), class names)``.

    ``"regions"``: a class is one region of a 2x2 grid on a photo (60 classes), 8 re-photographed views of
    it each: "the same thing seen again". ``"parts"``: a class is a photo (15 classes), its images are 2 views
    of each of the 9 regions of a 3x3 grid, so index and query images mostly show *different parts* of the
    scene (the cat's face, its fur, the cushion): closer to "another thing of the same kind".
    """
    from cbr_lite import glyphs

    if kind == "regions":
        classes = [(f"{photo}_r{r}_c{c}", (photo, r, c, 2, 2)) for photo in PHOTOS for r in range(2) for c in range(2)]
        images, labels = glyphs.render_photos(classes, 8, seed, size=size)
        return images, labels, [name for name, _ in classes]
    parts = [(f"{photo}_r{r}_c{c}", (photo, r, c, 3, 3)) for photo in PHOTOS for r in range(3) for c in range(3)]
    images, labels = glyphs.render_photos(parts, 2, seed, size=size)
    return images, labels // 9, list(PHOTOS)


def latency_and_size(embedder) -> dict:
    """Best-of-20 LiteRT milliseconds per image (1 thread, all threads) and the float32 .tflite size in MB."""
    from cbr_lite.export import LiteRTModel, to_tflite

    data = to_tflite(embedder.model)
    item = np.zeros((1, *embedder.input_size, 3), np.float32)
    result = {"size_mb": len(data) / 1e6}
    for threads in (1, os.cpu_count()):
        result[f"ms_{threads}"] = best_ms(LiteRTModel(data, num_threads=threads), item)
    return result


def best_ms(model, item) -> float:
    """Milliseconds of ``model.run_one(item)`` (a LiteRTModel), best of 20 after one warm-up."""
    model.run_one(item)
    best = float("inf")
    for _ in range(20):
        start = time.perf_counter()
        model.run_one(item)
        best = min(best, time.perf_counter() - start)
    return 1000 * best


def embed(embedder, images, flip: bool = False) -> np.ndarray:
    """Raw embeddings; with ``flip``, the mean of the image's and its mirror image's (test-time augmentation)."""
    embeddings = embedder.embed(images, batch_size=32)
    if flip:
        embeddings = (embeddings + embedder.embed(images[:, :, ::-1], batch_size=32)) / 2
    return embeddings


def glyph_domains(name: str, episodes: int) -> int:
    """An embedder's 5-way 1- and 5-shot accuracy on the held-out glyph domains, L2N vs CL2N (centred)."""
    from cbr_lite.embedders import load_embedder
    from cbr_lite.evaluation import DOMAINS, few_shot_accuracy, load_domain

    embedder = load_embedder(name)
    print(f"{name}, {episodes} episodes")
    print("| domain | 5-way 1-shot L2N | CL2N | 5-way 5-shot L2N | CL2N |")
    for domain in DOMAINS:
        images, labels, _ = load_domain(domain)
        embeddings = embedder.embed(images)
        cells = [few_shot_accuracy(embeddings, labels, 5, shots, episodes, 5, seed=0, center=center)
                 for shots in (1, 5) for center in (False, True)]
        print(f"| {domain} | " + " | ".join(f"{r.mean:.3f} ± {r.ci95:.3f}" for r in cells) + " |", flush=True)
    return 0


def quantizations(name: str, dataset: str = "parts", shots: int | None = None) -> int:
    """One classifier file per quantisation, run with LiteRT on the images that are not in its index: size,
    latency, accuracy and top-1 agreement with float32. The int8-full file is calibrated on the index images.

    ``dataset`` ``"parts"``: the "parts" photos (all 15 classes, 3 index images each, centred as ``cbr-lite build
    --center`` does). ``"novel-glyphs"``: the first 30 classes of :func:`cbr_lite.evaluation.load_domain`'s
    held-out scripts, 15 renders each, 5 in the index, not centred (centring costs glyph-cnn 1-3 points).
    """
    from cbr_lite.builder import classifier_file_from_index
    from cbr_lite.classifier import Classifier
    from cbr_lite.embedders import load_embedder
    from cbr_lite.evaluation import load_domain
    from cbr_lite.export import QUANTIZATIONS, LiteRTModel

    embedder = load_embedder(name)
    if dataset == "novel-glyphs":
        images, labels, names = load_domain("novel-glyphs", samples_per_class=15)
        keep = labels < 30
        images, labels, names, shots, center = images[keep], labels[keep], names[:30], shots or 5, False
    else:
        (images, labels, names), shots, center = photo_dataset("parts"), shots or 3, True
    rng = np.random.default_rng(0)
    index_rows = np.concatenate([rng.choice(np.flatnonzero(labels == c), shots, replace=False) for c in range(len(names))])
    query_rows = np.setdiff1d(np.arange(len(labels)), index_rows)
    index_images = [images[i] for i in index_rows]
    embeddings = embedder.embed(index_images)
    queries = [images[i] for i in query_rows]
    print(f"{name}: {len(names)} classes x {shots} index images, {len(queries)} queries"
          f"{', centred' if center else ''}")
    print("| quantisation | file MB | LiteRT ms (1 thread) | top-1 accuracy | top-1 agreement with float32 |")
    reference = None
    for quantize in QUANTIZATIONS:
        data = classifier_file_from_index(embedder, embeddings, labels[index_rows], names, quantize=quantize,
                                          center=center, representative=index_images)
        classifier = Classifier(data)
        top = classifier.scores(queries).argmax(axis=1)
        reference = top if reference is None else reference
        milliseconds = best_ms(LiteRTModel(data, num_threads=1), classifier.preprocess(queries[0]))
        print(f"| {quantize} | {len(data) / 1e6:.1f} | {milliseconds:.0f} | {np.mean(top == labels[query_rows]):.3f} | "
              f"{np.mean(top == reference):.3f} |", flush=True)
    return 0


def main(argv=None) -> int:
    """Print one table row per embedder (and variant)."""
    from cbr_lite.embedders import load_embedder
    from cbr_lite.evaluation import few_shot_accuracy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedders", nargs="+", default=list(EMBEDDERS))
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--flip", action="store_true", help="also measure horizontal-flip test-time augmentation")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--dataset", choices=("parts", "regions"), default="parts")
    parser.add_argument("--quantizations", nargs="?", const="parts", choices=("parts", "novel-glyphs"),
                        help="instead: float32 / float16 / int8 / int8-full classifier files of the first embedder, "
                             "on the 'parts' photos (default) or on held-out glyphs ('novel-glyphs', for glyph-cnn)")
    parser.add_argument("--glyph-domains", action="store_true",
                        help="instead: glyph-cnn on cbr_lite.evaluation's held-out domains, with and without centring")
    args = parser.parse_args(argv)

    if args.glyph_domains:
        return glyph_domains(args.embedders[0], args.episodes)
    if args.quantizations:
        return quantizations(args.embedders[0], args.quantizations)
    images, labels, names = photo_dataset(args.dataset)
    print(f"{len(names)} classes x {len(images) // len(names)} images of {images.shape[1]}x{images.shape[2]}; "
          f"{args.episodes} episodes per task; machine: {os.cpu_count()} CPUs (shared)")
    header = " | ".join(f"{w}-way {s}-shot {c}" for w, s in TASKS for c in ("L2N", "CL2N"))
    print(f"| embedder | {header} | LiteRT ms (1 thread / all) | .tflite MB |")
    for name in args.embedders:
        embedder = load_embedder(name)
        for flip in (False, True) if args.flip else (False,):
            embeddings = embed(embedder, images, flip)
            cells = []
            for ways, shots in TASKS:
                for center in (False, True):
                    r = few_shot_accuracy(embeddings, labels, ways, shots, args.episodes, 5, seed=0, center=center)
                    cells.append(f"{r.mean:.3f} ± {r.ci95:.3f}")
            timing = "-" if args.no_timing or flip else None
            if timing is None:
                t = latency_and_size(embedder)
                timing = f"{t['ms_1']:.0f} / {t[f'ms_{os.cpu_count()}']:.0f} | {t['size_mb']:.1f}"
            else:
                timing = "- | -"
            print(f"| {name}{' + flip' if flip else ''} | " + " | ".join(cells) + f" | {timing} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
