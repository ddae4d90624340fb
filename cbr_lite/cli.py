"""The ``cbr-lite`` command line.

Each sub-command is a ``run_<name>(args)`` function registered in :func:`make_parser`. Errors the user
can fix (:class:`CbrError`) are printed as one line, ``cbr-lite: error: ...``, with exit status 2.
TensorFlow is imported only by the commands that need it, so ``cbr-lite --help`` is quick.
"""

from __future__ import annotations

import argparse
import io
import os
import sys

from cbr_lite.errors import CbrError


def run_embed(args) -> None:
    """Write the raw embeddings of the given images (folders expanded, sorted) to a .npy file."""
    import numpy as np

    from cbr_lite.albums import expand_inputs
    from cbr_lite.embedders import load_embedder
    from cbr_lite.files import write_atomically
    from cbr_lite.images import load_image

    paths = expand_inputs(args.inputs)
    images, kept = [], []
    for path in paths:
        try:
            images.append(load_image(path))
            kept.append(path)
        except CbrError as error:
            if args.on_bad_image == "error":
                raise
            print(f"warning: skipped {error}", file=sys.stderr)
    if not images:
        raise CbrError("no readable images to embed")
    embedder = load_embedder(args.embedder)
    with progress_bar(len(images), "embedding") as bar:
        embeddings = embedder.embed(images, progress=bar.update)
    buffer = io.BytesIO()
    np.save(buffer, embeddings, allow_pickle=False)
    write_atomically(args.output, buffer.getvalue())
    print(f"embedded {len(kept)} images with {embedder.name}: {embeddings.shape[0]} x {embeddings.shape[1]} "
          f"float32 -> {args.output}")


def progress_bar(total: int, description: str):
    """A tqdm progress bar on stderr, shown only when stderr is a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="img", file=sys.stderr, disable=None, leave=False)


def make_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    from cbr_lite import __version__
    from cbr_lite.embedders import DEFAULT_EMBEDDER

    parser = argparse.ArgumentParser(
        prog="cbr-lite",
        description="Classification by retrieval: build image classifiers from folders of examples, no training.",
    )
    parser.add_argument("--version", action="version", version=f"cbr-lite {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    embed = commands.add_parser("embed", help="write raw image embeddings to a .npy file")
    embed.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders (searched recursively)")
    embed.add_argument("--embedder", default=DEFAULT_EMBEDDER, help=f"embedder name (default: {DEFAULT_EMBEDDER})")
    embed.add_argument("-o", "--output", required=True, metavar="OUT.npy", help="where to write the (images, dim) array")
    embed.add_argument("--on-bad-image", choices=("error", "skip"), default="error",
                       help="stop at an unreadable image (default) or skip it with a warning")
    embed.set_defaults(run=run_embed)
    return parser


def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = make_parser().parse_args(argv)
    try:
        args.run(args)
    except CbrError as error:
        print(f"cbr-lite: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cbr-lite: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
