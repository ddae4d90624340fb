"""Which training losses make glyph-cnn transfer best? Train one embedder per variant, same budget, and measure.

    python scripts/embedder_ablation.py                       # every variant, figures to docs/figures/
    python scripts/embedder_ablation.py --quick --output /tmp/ablation   # a tiny run that checks the script

Each variant is ``scripts/train_default_embedder.py`` with the committed recipe (its ``DEFAULTS``: same
data, steps, batches and seed) and only the losses changed:

- ``cosine softmax``: the CosFace classification head alone;
- ``+ triplet head``: plus the batch-hard triplet (retrieval) head on the same embedding;
- ``+ SVMax``: plus the SVMax term (minus the batch's mean singular value);
- ``+ triplet head + SVMax``: both.

Every trained embedder is measured as ``scripts/evaluate_embedders.py`` measures (5-way, 200 episodes, 5
queries per class, max aggregation, the held-out domains of ``cbr_lite.evaluation``), plus leave-one-out
1-NN on the sample album ``data/albums``. Writes ``embedder_ablation.json`` and ``embedder_ablation.md``;
the committed glyph-cnn is the variant that ``train_default_embedder.py`` trains with no options, and the
table says which that is.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import numpy as np  # noqa: E402

from cbr_lite.quiet import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()  # before anything imports TensorFlow: no start-up lines

import train_default_embedder  # noqa: E402

from cbr_lite import evaluation  # noqa: E402
from cbr_lite.files import write_atomically  # noqa: E402
from cbr_lite.locations import DATA_DIR  # noqa: E402

#: Variant name -> the loss options that differ from the committed recipe.
#: The triplet head needs several images of a class in a batch: half of its batches are classes x 4 images.
VARIANTS = {
    "cosine softmax": {"triplet_weight": 0.0, "svmax_weight": 0.0, "grouped_fraction": 0.0},
    "+ triplet head": {"triplet_weight": 1.0, "svmax_weight": 0.0, "grouped_fraction": 0.5},
    "+ SVMax": {"triplet_weight": 0.0, "svmax_weight": 1.0, "grouped_fraction": 0.0},
    "+ triplet head + SVMax": {"triplet_weight": 1.0, "svmax_weight": 1.0, "grouped_fraction": 0.5},
}


def album_leave_one_out(embedder) -> float:
    """Leave-one-out 1-NN accuracy (cosine) on the sample album ``data/albums``."""
    from cbr_lite.albums import load_albums

    albums = load_albums(DATA_DIR / "albums")
    unit = embedder.embed(albums.images)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    similarities = unit @ unit.T
    np.fill_diagonal(similarities, -np.inf)
    labels = np.asarray(albums.image_labels)
    return float(np.mean(labels[similarities.argmax(axis=1)] == labels))


def options(variant: dict) -> list[str]:
    """The command-line options of train_default_embedder.py that give ``variant``."""
    return [f"--{key.replace('_', '-')}={value}" for key, value in sorted(variant.items())]


def committed_variant() -> str | None:
    """The variant whose loss options are the training script's defaults (the committed glyph-cnn)."""
    for name, variant in VARIANTS.items():
        if all(train_default_embedder.DEFAULTS[key] == value for key, value in variant.items()):
            return name
    return None


def markdown(figures: dict) -> str:
    """The table (variants x domains) with the album column and training time, and what it says."""
    columns = [(domain, shots) for domain in evaluation.DOMAINS for shots in ("5-way 1-shot", "5-way 5-shot")]
    header = ("| variant | " + " | ".join(f"{d}<br>{s.split()[1]}" for d, s in columns)
              + " | album leave-one-out | training minutes |")
    lines = [header, "|---|" + "---|" * (len(columns) + 2)]
    for name, result in figures["variants"].items():
        cells = [f"{100 * result['accuracy'][d][s]['mean']:.1f} ± {100 * result['accuracy'][d][s]['ci95']:.1f}"
                 for d, s in columns]
        marker = " (committed)" if name == figures["committed"] else ""
        lines.append(f"| {name}{marker} | " + " | ".join(cells)
                     + f" | {result['album_leave_one_out']:.3f} | {result['training_seconds'] / 60:.1f} |")
    return "\n".join([
        "# Which losses make glyph-cnn transfer? (ablation)",
        "",
        "Written by `python scripts/embedder_ablation.py`. Each row is `scripts/train_default_embedder.py` "
        "with the committed recipe (same data, steps, batches, seed) and only the losses changed; accuracy "
        "in percent ± the 95% confidence interval, measured as in [embedder_eval.md](embedder_eval.md) on "
        "classes never trained on. Training minutes are wall time on this project's 2-core machine.",
        "",
        *lines,
        "",
    ])


def main(argv=None):
    """Train and measure every variant asked for; write the JSON and the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "figures",
                        help="folder for embedder_ablation.json/.md (the trained embedders go in its ablation/)")
    parser.add_argument("--quick", action="store_true", help="tiny training runs and few episodes")
    args = parser.parse_args(argv)

    from cbr_lite.embedders import load_glyph_cnn

    episodes = 20 if args.quick else 200
    data = {domain: evaluation.load_domain(domain) for domain in evaluation.DOMAINS}
    figures = {"settings": {"ways": 5, "shots": [1, 5], "episodes": episodes, "queries_per_class": 5,
                            "seed": 0, "aggregation": "max", "recipe": train_default_embedder.DEFAULTS,
                            "quick": args.quick},
               "committed": committed_variant(), "variants": {}}
    for name in args.variants:
        folder = args.output / "ablation" / name.replace("+ ", "plus-").replace(" ", "-")
        start = time.perf_counter()
        train_default_embedder.main([*options(VARIANTS[name]), f"--output={folder / 'embedders'}",
                                     *(["--quick"] if args.quick else [])])
        info = json.loads((folder / "embedders" / "glyph_cnn.json").read_text())
        embedder = load_glyph_cnn(folder)
        accuracy = evaluation.evaluate(embedder, episodes=episodes, data=data)
        figures["variants"][name] = {
            "options": VARIANTS[name], "accuracy": accuracy, "album_leave_one_out": album_leave_one_out(embedder),
            "training_seconds": info["training_seconds"], "total_seconds": round(time.perf_counter() - start, 1),
            "final_loss": info["final_loss"], "final_mean_singular_value": info["final_mean_singular_value"],
        }
        print(f"{name}: " + json.dumps(figures["variants"][name]), flush=True)
        write_figures(args.output, figures)  # after every variant: a stopped run keeps what it measured
    print(markdown(figures))


def write_figures(folder: Path, figures: dict) -> None:
    """Write embedder_ablation.json and embedder_ablation.md into ``folder`` (each whole or not at all)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(folder / "embedder_ablation.json", (json.dumps(figures, indent=2) + "\n").encode())
    write_atomically(folder / "embedder_ablation.md", markdown(figures).encode())


if __name__ == "__main__":
    main()
