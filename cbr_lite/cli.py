"""The ``cbr-lite`` command line.

Each sub-command is a ``run_<name>(args)`` function registered in :func:`make_parser`. Errors the user
can fix (:class:`CbrError`) are printed as one line, ``cbr-lite: error: ...``, with exit status 2.
Importing this module imports no TensorFlow (nor does ``import cbr_lite``), so ``cbr-lite --help`` is
quick, and ``classify`` and ``inspect`` never import it: they need LiteRT and the model file only.

A model file is data: no command runs code it names or reaches the network because of it. ``remove``
loads no embedder; ``add`` loads the embedder the file names only if it is one of the built-in offline
embedders, otherwise only one the user names with ``--embedder``. Labels and paths are printed with
control characters escaped (JSON output is JSON).

::

    cbr-lite build albums/ -o pets.tflite            # a folder of class folders -> one .tflite file
    cbr-lite classify pets.tflite photo.jpg --json   # needs nothing but the model file
    cbr-lite inspect pets.tflite
    cbr-lite add pets.tflite more_albums/ -o pets2.tflite
    cbr-lite remove pets2.tflite hamster -o pets3.tflite
    cbr-lite embed photos/ -o embeddings.npy
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import signal
import sys
import threading
import time

import numpy as np

from cbr_lite.albums import ON_BAD_IMAGE, expand_inputs, find_albums, read_image_or_skip, warn_on_stderr
from cbr_lite.errors import CbrError
from cbr_lite.export import QUANTIZATIONS
from cbr_lite.files import check_output_path, write_atomically
from cbr_lite.labels import printable
from cbr_lite.version import VERSION

#: The embedder the command line uses unless told otherwise: people bring ordinary photos, for which an
#: ImageNet network is the right default (the package's own ``DEFAULT_EMBEDDER`` is the offline glyph CNN).
CLI_DEFAULT_EMBEDDER = "efficientnet-lite0"
#: Whether ``cbr-lite build`` centres on the index's mean embedding when told neither ``--center`` nor ``--no-center``.
CLI_CENTER = False
OUTPUT_HELP = ("a regular file, replaced only once the new one is complete; an existing device, FIFO or "
               "symbolic link is refused (links are not followed: give the file's own path)")


def run_embed(args) -> None:
    """Write the raw embeddings of the given images (folders expanded, sorted) to a .npy file."""
    from cbr_lite.builder import embed_paths, resolve_embedder

    paths = expand_inputs(args.inputs)
    check_output_path(args.output)
    embedder = resolve_embedder(args.embedder)
    with progress_bar(len(paths), "embedding") as bar:
        embeddings, kept = embed_paths(paths, embedder, args.on_bad_image, progress=bar.update)
    if not kept:
        raise CbrError("no readable images to embed")
    buffer = io.BytesIO()
    np.save(buffer, embeddings, allow_pickle=False)
    write_atomically(args.output, buffer.getvalue())
    print(f"embedded {len(kept)} images with {printable(embedder.name)}: {embeddings.shape[0]} x "
          f"{embeddings.shape[1]} float32 -> {printable(args.output)}")


def run_build(args) -> None:
    """Build a classifier .tflite file from a folder of class folders."""
    from cbr_lite.builder import build_classifier_file
    from cbr_lite.classifier_file import read_classifier_file

    start = time.perf_counter()
    check_output_path(args.output)
    albums = find_albums(args.albums)
    with progress_bar(sum(len(paths) for _, paths in albums), "embedding") as bar:
        data = build_classifier_file(albums, args.embedder, args.aggregation, args.quantize,
                                     args.on_bad_image, progress=bar.update, center=args.center, index=args.index)
    write_atomically(args.output, data)
    print(f"built {printable(args.output)} in {time.perf_counter() - start:.1f} s")
    print_summary(read_classifier_file(data, str(args.output)))


def run_classify(args) -> None:
    """Classify images with a model file; labels and preprocessing come from its metadata."""
    from cbr_lite.classifier import Classifier, check_top_k

    check_top_k(args.top_k, "--top-k")
    classifier = Classifier(args.model)
    results = []
    for path in expand_inputs(args.inputs):
        image = read_image_or_skip(path, args.on_bad_image, warn_on_stderr)
        if image is None:
            continue
        predictions = classifier.ranked(classifier.scores([image])[0], args.top_k)
        results.append({"image": str(path),
                        "predictions": [{"label": label, "score": score} for label, score in predictions]})
        if not args.json:
            best = ", ".join(f"{printable(label)} ({score:.3f})" for label, score in predictions)
            print(f"{printable(path)}: {best}")
    if args.json:
        print(json.dumps(results, indent=2))


def run_inspect(args) -> None:
    """Describe a cbr-lite model file: embedder, classes, index, aggregation, quantisation, ops, size."""
    from cbr_lite.classifier import count_ops
    from cbr_lite.classifier_file import read_classifier_file, read_model_file

    data = read_model_file(args.model)
    model = read_classifier_file(data, str(args.model))
    ops = count_ops(data, str(args.model))
    if args.json:
        print(json.dumps({
            "model": str(args.model), "size_bytes": model.size, "embedder": model.embedder,
            "input_size": list(model.input_size), "mean": list(model.mean), "std": list(model.std),
            "embedding_dim": int(model.index_embeddings.shape[1]), "aggregation": model.aggregation,
            "quantize": model.quantize, "center": model.center, "index": model.index or {"kind": "exact"},
            "classes": model.images_per_class(),
            "ops": dict(ops), "cbr_lite_version": model.version,
        }, indent=2))
        return
    print(f"model:        {printable(args.model)} ({human_size(model.size)})")
    print_summary(model, classes_in_full=True)
    height, width = model.input_size
    print(f"input:        {height}x{width} RGB, (pixel - {_numbers(model.mean)}) / {_numbers(model.std)}")
    print(f"ops:          {', '.join(f'{printable(name)} x{count}' for name, count in ops)}")
    print(f"made with:    cbr-lite {printable(model.version)}")


def run_add(args) -> None:
    """Add the classes of a folder of class folders to a model, embedding only the new images."""
    from cbr_lite.builder import add_classes, load_file_embedder
    from cbr_lite.classifier_file import read_classifier_file, read_model_file

    start = time.perf_counter()
    data = read_model_file(args.model)
    before = read_classifier_file(data, str(args.model))
    check_output_path(args.output)
    albums = find_albums(args.albums)
    embedder = load_file_embedder(before, str(args.model), args.embedder)
    why = "given with --embedder" if args.embedder else "named by the model, a built-in offline embedder"
    print(f"embedding the new images with {printable(embedder.name)} ({why})")
    with progress_bar(sum(len(paths) for _, paths in albums), "embedding") as bar:
        new = add_classes(data, albums, args.on_bad_image, progress=bar.update, source=str(args.model),
                          embedder=embedder)
    write_atomically(args.output, new)
    after = read_classifier_file(new, str(args.output))
    old_counts, new_counts = before.images_per_class(), after.images_per_class()
    added = [name for name in after.class_names if name not in old_counts]
    grown = [name for name in before.class_names if new_counts[name] > old_counts[name]]
    print(f"wrote {printable(args.output)} in {time.perf_counter() - start:.1f} s: "
          f"added {len(added)} classes ({_names(added)})"
          + (f", more images for {len(grown)} existing classes ({_names(grown)})" if grown else ""))
    print_summary(after)


def run_remove(args) -> None:
    """Remove classes (and their index images) from a model."""
    from cbr_lite.builder import remove_classes
    from cbr_lite.classifier_file import read_classifier_file, read_model_file

    data = read_model_file(args.model)
    check_output_path(args.output)
    print(f"keeping the model's own embedder network ({printable(read_classifier_file(data, str(args.model)).embedder)}): "
          "no embedder is loaded")
    new = remove_classes(data, args.labels, source=str(args.model))
    write_atomically(args.output, new)
    print(f"wrote {printable(args.output)}: removed {len(set(args.labels))} classes "
          f"({_names(sorted(set(args.labels)))})")
    print_summary(read_classifier_file(new, str(args.output)))


def run_bench(args) -> int:
    """Hand over to :mod:`cbr_lite.bench`, or with ``--ivf`` to :mod:`cbr_lite.bench_ivf` (imported only when asked for)."""
    from cbr_lite import bench, bench_ivf

    return (bench_ivf if args.ivf else bench).main(args)


def print_summary(model, classes_in_full: bool = False) -> None:
    """Print what a classifier file holds, a few aligned lines (labels with control characters escaped)."""
    counts = {printable(name): count for name, count in model.images_per_class().items()}
    print(f"embedder:     {printable(model.embedder)}")
    print(f"classes:      {len(counts)}" + ("" if classes_in_full else f" ({_names(list(counts))})"))
    if classes_in_full:
        width = max(len(name) for name in counts)
        for name, count in counts.items():
            print(f"  {name:<{width}}  {count} images")
    print(f"images:       {sum(counts.values())} ({_spread(list(counts.values()))} per class)")
    print(f"aggregation:  {printable(model.aggregation)}")
    print(f"quantisation: {printable(model.quantize)}")
    print(f"centring:     {'on the index mean' if model.center else 'none'}")
    images = model.index_embeddings.shape[0]
    if model.index:
        ivf = model.index
        print(f"index:        IVF ({printable(ivf['spec'])}): {ivf['nlist']} lists of {ivf['smallest_list']}-"
              f"{ivf['list_length']} images, {ivf['nprobe']} probed per query: reads {ivf['rows_read']:,} of "
              f"{images:,} rows ({ivf['rows_read'] / images:.1%})")
        print(f"              {human_size(ivf['index_bytes'])} of int8 rows, scales, class numbers and centres in "
              f"the network; outputs the {ivf['top_k']} best classes"
              + (" and every class's score" if ivf["full_scores"] else " (no full score vector)"))
    print(f"size:         {human_size(model.size)} (index {images} x "
          f"{model.index_embeddings.shape[1]} float32 inside)")


def human_size(size: int) -> str:
    """``1234567`` -> ``'1.2 MB'`` (powers of 1000, as file managers show)."""
    for unit in ("bytes", "kB", "MB"):
        if size < 1000 or unit == "MB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def _names(names: list, limit: int = 8) -> str:
    # Quote names that would otherwise blur the list ("green, leafy"; " padded "); escape control characters.
    names = [printable(name) for name in names]
    shown = ", ".join(f'"{n}"' if "," in n or n != n.strip() else n for n in names[:limit])
    return shown + (f", ... {len(names) - limit} more" if len(names) > limit else "")


def _spread(values: list) -> str:
    return str(values[0]) if min(values) == max(values) else f"{min(values)}-{max(values)}"


def _numbers(values) -> str:
    values = [f"{v:g}" for v in values]
    return values[0] if len(set(values)) == 1 else "(" + ", ".join(values) + ")"


def progress_bar(total: int, description: str):
    """A tqdm progress bar on stderr, shown only when stderr is a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="img", file=sys.stderr, disable=None, leave=False)


def _add_bad_image_option(parser) -> None:
    parser.add_argument("--on-bad-image", choices=ON_BAD_IMAGE, default=ON_BAD_IMAGE[0],
                        help="stop at an unreadable image (default) or skip it with a warning")


def _add_output_option(parser, metavar: str, what: str) -> None:
    parser.add_argument("-o", "--output", required=True, metavar=metavar, help=f"where to write {what}: {OUTPUT_HELP}")


def make_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="cbr-lite",
        description="Classification by retrieval: build image classifiers from folders of examples, no training.",
        epilog="A model file is data: cbr-lite never runs code or reaches the network because a model file "
               "names it (see README.md, 'The command line').",
    )
    parser.add_argument("--version", action="version", version=f"cbr-lite {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = commands.add_parser("build", help="build a .tflite classifier from a folder of class folders")
    build.add_argument("albums", metavar="ALBUMS_DIR", help="a folder with one sub-folder of images per class")
    _add_output_option(build, "MODEL.tflite", "the model")
    build.add_argument("--embedder", default=CLI_DEFAULT_EMBEDDER,
                       help=f"embedder name (default: {CLI_DEFAULT_EMBEDDER})")
    build.add_argument("--aggregation", default="max", metavar="max|mean|topk:K",
                       help="how a class's image similarities become its score (default: max)")
    build.add_argument("--quantize", choices=QUANTIZATIONS, default=QUANTIZATIONS[0],
                       help="store weights as float32 (none, default), float16, int8 (dynamic range) or "
                            "int8-full (integers throughout, uint8 input, for NPUs / Edge TPU)")
    build.add_argument("--index", default="exact", metavar="exact|ivf[:NLIST[:NPROBE]]",
                       help="exact (default): every query compares with every index image, so its time grows "
                            "with the index; right up to some tens of MB of index (tens of thousands of classes). "
                            "ivf: k-means lists, only NPROBE of NLIST read per query (default about sqrt(images) "
                            "lists, 1/64 of them probed, at least 8); switch to it for hundreds of thousands of "
                            "classes or more, or when queries must take about a millisecond; recall is below 1 "
                            "(cbr-lite bench --ivf measures it)")
    build.add_argument("--center", action=argparse.BooleanOptionalAction, default=CLI_CENTER,
                       help="centre embeddings on the index's mean before the cosine (SimpleShot's CL2N; "
                            f"default: {'on' if CLI_CENTER else 'off'})")
    _add_bad_image_option(build)
    build.set_defaults(run=run_build, tensorflow=True)

    classify = commands.add_parser("classify", help="classify images with a model file")
    classify.add_argument("model", metavar="MODEL.tflite", help="a classifier made by cbr-lite (or any TFLite "
                          "image classifier with metadata)")
    classify.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders (searched recursively)")
    classify.add_argument("--top-k", type=int, default=3, metavar="K", help="show the K best classes (0: all; default 3)")
    classify.add_argument("--json", action="store_true", help="print a JSON list of {image, predictions}")
    _add_bad_image_option(classify)
    classify.set_defaults(run=run_classify)

    inspect = commands.add_parser("inspect", help="describe a model file made by cbr-lite")
    inspect.add_argument("model", metavar="MODEL.tflite")
    inspect.add_argument("--json", action="store_true", help="print the description as JSON")
    inspect.set_defaults(run=run_inspect)

    add = commands.add_parser("add", help="add classes to a model (only the new images are embedded)")
    add.add_argument("model", metavar="MODEL.tflite")
    add.add_argument("albums", metavar="ALBUMS_DIR", help="a folder of class folders; a class already in the "
                     "model gets the new images added to it")
    _add_output_option(add, "NEW.tflite", "the new model")
    add.add_argument("--embedder", help="embed the new images with this embedder (default: the one the model "
                     "names, if it is a built-in offline embedder; any other must be named here)")
    _add_bad_image_option(add)
    add.set_defaults(run=run_add, tensorflow=True)

    remove = commands.add_parser("remove", help="remove classes from a model")
    remove.add_argument("model", metavar="MODEL.tflite")
    remove.add_argument("labels", nargs="+", metavar="LABEL", help="class names to remove")
    _add_output_option(remove, "NEW.tflite", "the new model")
    remove.set_defaults(run=run_remove, tensorflow=True)

    embed = commands.add_parser("embed", help="write raw image embeddings to a .npy file")
    embed.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders (searched recursively)")
    embed.add_argument("--embedder", default=CLI_DEFAULT_EMBEDDER, help=f"embedder name (default: {CLI_DEFAULT_EMBEDDER})")
    _add_output_option(embed, "OUT.npy", "the (images, dim) array")
    _add_bad_image_option(embed)
    embed.set_defaults(run=run_embed, tensorflow=True)

    # bench.py comes from another part of the project; the other commands work without it.
    if importlib.util.find_spec("cbr_lite.bench") is not None:
        from cbr_lite import bench, bench_ivf

        bench_parser = commands.add_parser("bench", help="time and compare models (see cbr_lite.bench)")
        bench.add_arguments(bench_parser)
        bench_ivf.add_arguments(bench_parser)
        bench_parser.set_defaults(run=run_bench, tensorflow=True)
    return parser


class Terminated(BaseException):
    """SIGTERM, turned into an exception so that temporary files are removed as on Ctrl-C."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    args = make_parser().parse_args(argv)
    # Only the main thread may set signal handlers (cli.main can be called from anywhere).
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        if getattr(args, "tensorflow", False):
            from cbr_lite.quiet import import_tensorflow_quietly

            import_tensorflow_quietly()
        status = args.run(args)
    except CbrError as error:
        print(f"cbr-lite: error: {printable(error)}", file=sys.stderr)
        return 2
    except OSError as error:
        # A disk that is full or a folder we may not write to: the user's to fix, so no traceback either.
        where = f"{error.filename}: " if error.filename else ""
        print(f"cbr-lite: error: {printable(where + (error.strerror or str(error)))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cbr-lite: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("cbr-lite: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
