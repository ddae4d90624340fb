"""Which int8 scale keeps the index's answers? The table of docs/benchmark.md, "int8: which scale".

For each embedder and held-out glyph domain (:func:`cbr_lite.evaluation.load_domain`: classes no embedder
trained on), half of each class's renders are the index and half the queries. The script prints the float
index's top-1 accuracy, then the top-1 agreement with the float index of the int8 index under each scale of
:mod:`cbr_lite.quantization` (NumPy), of the converted int8 head run by LiteRT (per-row scales), and the
accuracy with the per-row int8 index. Max aggregation, as the exported model.

    python scripts/int8_scale_study.py            # ~3 min on 2 cores
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from cbr_lite.quiet import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()  # before anything imports TensorFlow: no start-up lines

#: (embedder, domain, renders per class, at most this many classes).
STUDIES = (("glyph-cnn", "novel-glyphs", 10, None), ("glyph-cnn", "icons", 10, None),
           ("efficientnet-lite0", "novel-glyphs", 10, 200))


def litert_top1(index, labels, num_classes, queries) -> np.ndarray:
    """Top-1 classes of the exact int8 head, converted and run by LiteRT one query at a time."""
    from cbr_lite.export import LiteRTModel, to_tflite
    from cbr_lite.retrieval import build_retrieval_head

    runner = LiteRTModel(to_tflite(build_retrieval_head(index, labels, num_classes, index_dtype="int8"), quantize="int8"))
    return np.array([runner.run_one(query).argmax() for query in queries])


def study(name: str, domain: str, renders: int, most_classes: int | None) -> str:
    """One table row."""
    from cbr_lite.embedders import load_embedder
    from cbr_lite.evaluation import load_domain
    from cbr_lite.quantization import int8_scores, top1_agreement
    from cbr_lite.similarity import class_scores, cosine_similarity, l2_normalize

    images, labels, names = load_domain(domain, samples_per_class=renders)
    if most_classes is not None:
        keep = labels < most_classes
        images, labels, names = images[keep], labels[keep], names[:most_classes]
    embeddings = l2_normalize(load_embedder(name).embed(images))
    in_index = np.arange(len(labels)) % renders < renders // 2  # rendered class by class: the first half of each
    index, index_labels = embeddings[in_index], labels[in_index]
    queries, query_labels = embeddings[~in_index], labels[~in_index]
    classes = len(names)
    exact = class_scores(cosine_similarity(queries, index), index_labels, classes, "max").argmax(axis=1)
    per_row = class_scores(int8_scores(queries, index, "row"), index_labels, classes, "max").argmax(axis=1)
    litert = litert_top1(index, index_labels, classes, queries)
    cells = [f"{np.mean(exact == query_labels):.3f}"]
    cells += [f"{top1_agreement(queries, index, index_labels, classes, scale=scale):.3f}"
              for scale in ("fixed", "matrix", "row")]
    cells += [f"{np.mean(litert == exact):.3f}", f"{np.mean(per_row == query_labels):.3f}"]
    return (f"| {name} {domain} | {classes} | {len(index)} / {len(queries)} | {embeddings.shape[1]} | "
            + " | ".join(cells) + " |")


def main() -> int:
    print("| embeddings | classes | index / queries | dim | float accuracy | fixed 1/128 | per matrix | per row "
          "| LiteRT int8 | accuracy int8 (row) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, domain, renders, most_classes in STUDIES:
        print(study(name, domain, renders, most_classes), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
