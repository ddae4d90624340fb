"""Deployable CbR classifiers: a folder of class folders in, one self-describing ``.tflite`` file out.

The file is an ordinary TFLite image classifier (one RGB image in, one score per class out) with TFLite
metadata (labels, normalisation; see :mod:`cbr_lite.metadata`) and two more files packed inside it:

- ``index.npz``: the raw index embeddings ``(images, dim)`` and their class ids ``(images,)``, so classes
  can be added or removed later without embedding the old images again (``np.load(allow_pickle=False)``);
- ``cbr.json``: how it was built (embedder name, aggregation, quantisation, input size, mean, std,
  cbr-lite version), so the embedder can be loaded again by name.

>>> data = build_classifier_file("albums/", embedder="glyph-cnn")          # doctest: +SKIP
>>> Classifier(data).predict([image], top_k=2)                              # doctest: +SKIP
[[('cat', 0.93), ('mug', 0.41)]]
>>> read_classifier_file(data).images_per_class()                           # doctest: +SKIP
{'cat': 5, 'mug': 4}

The same inputs give byte-identical files: no timestamps, sorted listings, fixed ZIP entry dates.
"""

from __future__ import annotations

import io
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from cbr_lite.errors import CbrError
from cbr_lite.export import QUANTIZATIONS, LiteRTModel

INDEX_FILE = "index.npz"
#: Bumped when the layout of ``index.npz`` or ``cbr.json`` changes incompatibly.
FORMAT_VERSION = 1
#: How int8 index rows are scaled (see cbr_lite.quantization): one scale per index image.
INT8_SCALE = "row"
#: The dtype the index matrix is stored in for each quantisation (cbr_lite.retrieval.INDEX_DTYPES).
INDEX_DTYPE = {"none": "float32", "float16": "float32", "int8": "int8", "int8-full": "float32"}
#: How many album images (evenly spread) calibrate a full-integer model's activations.
REPRESENTATIVE_IMAGES = 64
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
#: Images are read, shrunk to the embedder's input size and embedded this many at a time, so a folder
#: of full-size photos never has to fit in memory at once.
_BATCH = 32


@dataclass
class ClassifierFile:
    """What a cbr-lite classifier file holds besides its network (see :func:`read_classifier_file`)."""

    class_names: list
    index_embeddings: np.ndarray
    image_labels: np.ndarray
    embedder: str
    aggregation: str
    quantize: str
    input_size: tuple
    mean: tuple
    std: tuple
    version: str
    size: int
    #: Centred on the index's mean embedding (SimpleShot's CL2N; see cbr_lite.retrieval.centring_mean).
    center: bool = False

    def images_per_class(self) -> dict:
        """``{class name: number of index images}``, in class order."""
        counts = np.bincount(self.image_labels, minlength=len(self.class_names))
        return {name: int(count) for name, count in zip(self.class_names, counts)}


# --------------------------------------------------------------------------------------------------
# Embedding albums
# --------------------------------------------------------------------------------------------------


def check_class_names(names: Sequence[str], root=None) -> list:
    """Check that folder names can be labels: non-empty, on one line, distinct. Spaces, commas and any
    Unicode are fine. Raises :class:`CbrError` naming the folder, before any image is embedded."""
    names = [str(name) for name in names]
    # Named by their folder's path when there is one; always quoted (repr), so a line break shows as \n.
    where = (lambda name: str(Path(root) / name)) if root is not None else str
    for name in names:
        if not name.strip():
            raise CbrError(f"{where(name)!r}: a class folder name must not be blank; rename the folder")
        if any(ch in name for ch in "\n\r"):
            raise CbrError(
                f"{where(name)!r}: class folder name has a line break, which labels.txt cannot hold; rename the folder"
            )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise CbrError(f"class {duplicates[0]!r} is given twice")
    return names


def embed_paths(paths: Sequence, embedder, on_bad_image: str = "error",
                progress: Callable[[int], None] | None = None,
                warn: Callable[[str], None] | None = None) -> tuple[np.ndarray, list]:
    """Raw float32 embeddings of the images at ``paths`` (in order), read and embedded in small batches.

    Returns ``(embeddings, kept_paths)``. ``on_bad_image="error"`` stops at the first unreadable image with
    its path; ``"skip"`` leaves it out and reports it through ``warn`` (default: a line on stderr).
    ``progress`` is called with the number of paths done (read or skipped) after each batch.
    Each image is resized to the embedder's input size as soon as it is read, exactly as
    :meth:`Embedder.preprocess` would, so the embeddings equal ``embedder.embed(images)``.
    """
    from cbr_lite.albums import read_image_or_skip
    from cbr_lite.images import resize

    if on_bad_image not in ("error", "skip"):
        raise CbrError(f"on_bad_image must be error or skip, not {on_bad_image!r}")
    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    chunks, kept = [], []
    paths = list(paths)
    for start in range(0, len(paths), _BATCH):
        images = []
        for path in paths[start:start + _BATCH]:
            image = read_image_or_skip(path, on_bad_image, warn)
            if image is None:
                continue
            images.append(resize(image, tuple(embedder.input_size)))
            kept.append(Path(path))
        if images:
            chunks.append(embedder.embed(images))
        if progress:
            progress(len(paths[start:start + _BATCH]))
    if not chunks:
        return np.zeros((0, embedder.dim), dtype=np.float32), kept
    return np.concatenate(chunks).astype(np.float32, copy=False), kept


def embed_albums(root, embedder, on_bad_image: str = "error",
                 progress: Callable[[int], None] | None = None,
                 warn: Callable[[str], None] | None = None) -> tuple[np.ndarray, np.ndarray, list]:
    """Embed every image of a folder of class folders: ``(embeddings, image_labels, class_names)``.

    Folder names are checked as labels before anything is read; a class left without readable images
    (with ``on_bad_image="skip"``) is an error naming its folder.
    """
    from cbr_lite.albums import find_albums

    albums = find_albums(root)
    class_names = check_class_names([name for name, _ in albums], root)
    all_paths = [path for _, paths in albums for path in paths]
    labels = np.concatenate([np.full(len(paths), c, dtype=np.int32) for c, (_, paths) in enumerate(albums)])
    embeddings, kept = embed_paths(all_paths, embedder, on_bad_image, progress, warn)
    kept_set = set(kept)
    keep = np.array([path in kept_set for path in all_paths])
    labels = labels[keep]
    counts = np.bincount(labels, minlength=len(class_names))
    for name, count in zip(class_names, counts):
        if count == 0:
            raise CbrError(f"{Path(root) / name}: no readable images left in this class folder")
    return embeddings, labels, class_names


# --------------------------------------------------------------------------------------------------
# Writing classifier files
# --------------------------------------------------------------------------------------------------


def resolve_embedder(embedder=None):
    """An :class:`Embedder` from a name (loaded; None: the package default) or an Embedder (as is)."""
    from cbr_lite.embedders import DEFAULT_EMBEDDER, load_embedder

    if embedder is None:
        return load_embedder(DEFAULT_EMBEDDER)
    return load_embedder(embedder) if isinstance(embedder, str) else embedder


def build_classifier_file(albums, embedder=None, aggregation: str = "max", quantize: str = "none",
                          on_bad_image: str = "error", progress: Callable[[int], None] | None = None,
                          warn: Callable[[str], None] | None = None, center: bool = False) -> bytes:
    """Build a classifier from a folder of class folders and return the ``.tflite`` file's bytes.

    ``embedder`` is a registered name (stored in the file, so ``add`` can load it again), an
    :class:`~cbr_lite.embedders.Embedder`, or None for :data:`cbr_lite.embedders.DEFAULT_EMBEDDER`. ``aggregation``: ``max``, ``mean`` or ``topk:K``.
    ``quantize``: ``none`` (float32), ``float16`` (half-size weights) or ``int8`` (the index as int8 with
    a scale per image, :mod:`cbr_lite.quantization`; the embedder's weights dynamic-range int8) or
    ``int8-full`` (integers throughout, ``uint8`` input, calibrated on album images; see
    :func:`cbr_lite.export.to_tflite`). ``center=True`` centres index and queries on the index's mean
    embedding inside the model (one ``SUB`` op); ``add``/``remove`` recompute that mean from the new index.
    """
    from cbr_lite.albums import find_albums
    from cbr_lite.similarity import parse_aggregation

    # Settle every option and the folder names before loading the embedder and embedding (both slow),
    # so a typo fails at once.
    parse_aggregation(aggregation)
    _check_quantize(quantize)
    check_class_names([name for name, _ in find_albums(albums)], albums)
    embedder = resolve_embedder(embedder)
    embeddings, labels, class_names = embed_albums(albums, embedder, on_bad_image, progress, warn)
    representative = representative_images(albums, embedder) if quantize == "int8-full" else None
    return classifier_file_from_index(embedder, embeddings, labels, class_names, aggregation, quantize,
                                      center, representative)


def representative_images(albums, embedder, count: int = REPRESENTATIVE_IMAGES) -> list:
    """Up to ``count`` album images (evenly spread over the sorted paths), resized for ``embedder``:
    what a full-integer model is calibrated on. Unreadable images are left out."""
    from cbr_lite.albums import find_albums, read_image_or_skip
    from cbr_lite.images import resize

    paths = [path for _, album in find_albums(albums) for path in album]
    chosen = [paths[i] for i in np.unique(np.linspace(0, len(paths) - 1, min(count, len(paths))).astype(int))]
    images = [read_image_or_skip(path, "skip", lambda message: None) for path in chosen]
    return [resize(image, tuple(embedder.input_size)) for image in images if image is not None]


def classifier_file_from_index(embedder, index_embeddings, image_labels, class_names: Sequence[str],
                               aggregation: str = "max", quantize: str = "none", center: bool = False,
                               representative=None) -> bytes:
    """Assemble, convert and label a classifier from an index that is already embedded.

    ``representative``: ``uint8`` images (any size) to calibrate an ``int8-full`` model on; required for it.
    """
    from cbr_lite import __version__
    from cbr_lite.metadata import add_metadata
    from cbr_lite.similarity import check_index

    embedder = resolve_embedder(embedder)
    _check_quantize(quantize)
    class_names = check_class_names(class_names)
    index_embeddings, image_labels, num_classes = check_index(index_embeddings, image_labels, len(class_names))
    if index_embeddings.shape[1] != embedder.dim:
        raise CbrError(
            f"the index embeddings have {index_embeddings.shape[1]} dimensions but {embedder.name} gives {embedder.dim}"
        )
    if quantize == "int8-full" and not representative:
        raise CbrError("an int8-full model is calibrated on images: build it from albums (cbr-lite build), "
                       "or give representative images")
    tflite = _convert(embedder, index_embeddings, image_labels, num_classes, aggregation, quantize, bool(center),
                      representative)
    info = {
        "format": FORMAT_VERSION,
        "cbr_lite_version": __version__,
        "embedder": embedder.name,
        "embedding_dim": int(embedder.dim),
        "aggregation": aggregation,
        "quantize": quantize,
        **({"int8_scale": INT8_SCALE} if quantize == "int8" else {}),
        **({"center": "index-mean"} if center else {}),
        "input_size": [int(v) for v in embedder.input_size],
        "mean": [float(v) for v in embedder.mean],
        "std": [float(v) for v in embedder.std],
    }
    counts = np.bincount(image_labels, minlength=num_classes)
    description = (
        f"Classification by retrieval: {embedder.name} embeddings, {aggregation} cosine similarity over "
        f"{len(image_labels)} index images of {num_classes} classes ({', '.join(map(str, counts))} per class). "
        f"Made with cbr-lite {__version__}."
    )
    return add_metadata(
        tflite, labels=class_names, mean=list(embedder.mean), std=list(embedder.std),
        name="cbr-lite classifier", description=description,
        extra_files={INDEX_FILE: save_index(index_embeddings, image_labels)}, cbr_info=info,
    )


def _check_quantize(quantize: str) -> None:
    if quantize not in QUANTIZATIONS:
        raise CbrError(f"unknown quantisation {quantize!r}: use one of {', '.join(QUANTIZATIONS)}")


def _convert(embedder, index_embeddings, image_labels, num_classes, aggregation, quantize, center,
             representative) -> bytes:
    """The classifier network as .tflite bytes (no metadata yet)."""
    from cbr_lite.export import to_tflite
    from cbr_lite.retrieval import build_classifier

    # With quantize="int8" the index is stored as int8 with one scale per image (cbr_lite.quantization); the
    # converter's dynamic-range quantisation then keeps those same integers, and the embedder's weights as int8.
    model = build_classifier(embedder, index_embeddings, image_labels, num_classes, aggregation,
                             index_dtype=INDEX_DTYPE[quantize], int8_scale=INT8_SCALE, center=center)
    calibration = None
    if quantize == "int8-full":
        # Plus a black and a white image, so the uint8 input's range covers every pixel value.
        extremes = [np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)]
        calibration = embedder.preprocess(list(representative) + extremes)
    return to_tflite(model, quantize, calibration)  # quiet: to_tflite hides the converter's SavedModel chatter


def save_index(index_embeddings: np.ndarray, image_labels: np.ndarray) -> bytes:
    """The bytes of ``index.npz`` (``embeddings``, ``labels``): like ``np.savez`` without pickle, but
    with fixed ZIP dates, so the same index always gives the same bytes."""
    arrays = {
        "embeddings": np.ascontiguousarray(index_embeddings, dtype=np.float32),
        "labels": np.ascontiguousarray(image_labels, dtype=np.int32),
    }
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            with archive.open(info, "w") as file:
                np.lib.format.write_array(file, array, allow_pickle=False)
    return stream.getvalue()


def load_index(data: bytes, source: str = "the model") -> tuple[np.ndarray, np.ndarray]:
    """Read ``index.npz`` bytes back as ``(embeddings float32 (n, dim), labels int32 (n,))``, no pickle."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            embeddings, labels = npz["embeddings"], npz["labels"]
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile):
        raise CbrError(f"{source}: its {INDEX_FILE} is damaged; build the model again") from None
    if (embeddings.ndim != 2 or embeddings.dtype != np.float32 or labels.shape != (len(embeddings),)
            or not np.issubdtype(labels.dtype, np.integer)):
        raise CbrError(f"{source}: its {INDEX_FILE} has unexpected arrays; build the model again")
    return embeddings, labels.astype(np.int32)


# --------------------------------------------------------------------------------------------------
# Reading and editing classifier files
# --------------------------------------------------------------------------------------------------


def read_classifier_file(data: bytes, source: str = "the model") -> ClassifierFile:
    """Read what a cbr-lite classifier file holds: labels, index, and how it was built.

    Raises :class:`CbrError` if ``data`` is not a cbr-lite classifier (a TFLite model without our
    ``cbr.json``/``index.npz``, or any other file) or if its packed files are damaged.
    """
    from cbr_lite.metadata import read_associated_file

    data = bytes(data)
    metadata = read_model_metadata(data, source)
    info = metadata.get("cbr_info")
    if not isinstance(info, dict) or INDEX_FILE not in metadata["associated_files"]:
        raise CbrError(f"{source} is a TFLite classifier but not one made by cbr-lite (no cbr.json or index.npz)")
    if info.get("format") != FORMAT_VERSION:
        raise CbrError(
            f"{source} was written in cbr-lite file format {info.get('format')!r}; this cbr-lite reads "
            f"format {FORMAT_VERSION}: use the cbr-lite version that made it ({info.get('cbr_lite_version')})"
        )
    embeddings, labels = load_index(read_associated_file(data, INDEX_FILE, source=source), source)
    class_names = list(metadata["labels"])
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise CbrError(f"{source}: its {INDEX_FILE} refers to classes the model does not have; build it again")
    try:
        return ClassifierFile(
            class_names=class_names, index_embeddings=embeddings, image_labels=labels,
            embedder=str(info["embedder"]), aggregation=str(info["aggregation"]), quantize=str(info["quantize"]),
            input_size=tuple(int(v) for v in info["input_size"]),
            mean=tuple(float(v) for v in info["mean"]), std=tuple(float(v) for v in info["std"]),
            version=str(info.get("cbr_lite_version", "?")), size=len(data), center=bool(info.get("center")),
        )
    except (KeyError, TypeError, ValueError):
        raise CbrError(f"{source}: its cbr.json is incomplete; build the model again") from None


def read_model_metadata(data: bytes, source: str = "the model") -> dict:
    """:func:`cbr_lite.metadata.read_metadata`, with any damage in the file reported as a :class:`CbrError`."""
    import struct

    from cbr_lite.metadata import read_metadata

    try:
        return read_metadata(bytes(data), source=source)
    except (ValueError, struct.error, IndexError, UnicodeDecodeError, zipfile.BadZipFile, EOFError) as error:
        # A damaged cbr.json or labels.txt, or a corrupt FlatBuffer that the reader's checks let through.
        raise CbrError(f"{source} is not a readable cbr-lite model ({type(error).__name__}); build it again") from None


def reload_embedder(model: ClassifierFile, source: str):
    """Load the model's embedder by name and check it still preprocesses as the model was built."""
    from cbr_lite.embedders import load_embedder

    embedder = load_embedder(model.embedder)
    same = (tuple(embedder.input_size) == model.input_size and embedder.dim == model.index_embeddings.shape[1]
            and np.allclose(embedder.mean, model.mean) and np.allclose(embedder.std, model.std))
    if not same:
        raise CbrError(
            f"{source} was built with a different version of embedder {model.embedder!r} (input size, "
            "normalisation or dimension changed); build it again from its albums"
        )
    return embedder


def add_classes(data: bytes, albums, on_bad_image: str = "error", progress: Callable[[int], None] | None = None,
                warn: Callable[[str], None] | None = None, source: str = "the model") -> bytes:
    """A new classifier file: the classes of ``data`` plus those of the folder of class folders ``albums``.

    Only the new images are embedded (with the model's embedder, loaded by name). A class folder whose
    name is already a class adds its images to that class. Classes stay in sorted order, so adding
    albums with new classes to a model gives the classifier that building from all the albums at once
    gives (up to float rounding: an embedder's result can differ in the last bits with its batch).
    """
    model = read_classifier_file(data, source)
    embedder = reload_embedder(model, source)
    new_embeddings, new_labels, new_names = embed_albums(albums, embedder, on_bad_image, progress, warn)
    names = sorted(set(model.class_names) | set(new_names))
    old_ids = np.array([names.index(n) for n in model.class_names], dtype=np.int32)[model.image_labels]
    new_ids = np.array([names.index(n) for n in new_names], dtype=np.int32)[new_labels]
    embeddings = np.concatenate([model.index_embeddings, new_embeddings])
    labels = np.concatenate([old_ids, new_ids])
    # Group by class, keeping the old images first within a class (a stable sort).
    order = np.argsort(labels, kind="stable")
    # A centred model is centred on its new index's mean, as building from all the albums would be; an
    # int8-full one is calibrated again, on the new albums' images (the old images are not in the file).
    representative = representative_images(albums, embedder) if model.quantize == "int8-full" else None
    return classifier_file_from_index(embedder, embeddings[order], labels[order], names,
                                      model.aggregation, model.quantize, model.center, representative)


def remove_classes(data: bytes, labels: Iterable[str], source: str = "the model") -> bytes:
    """A new classifier file without the classes named in ``labels`` (and their index images).

    Raises :class:`CbrError` for a label the model does not have or if fewer than two classes would remain.
    """
    model = read_classifier_file(data, source)
    labels = list(labels)
    unknown = [label for label in labels if label not in model.class_names]
    if unknown:
        raise CbrError(f"{source} has no class {unknown[0]!r}; its classes are: {', '.join(model.class_names)}")
    keep_names = [name for name in model.class_names if name not in set(labels)]
    if len(keep_names) < 2:
        raise CbrError(
            f"removing {len(set(labels))} of {len(model.class_names)} classes would leave {len(keep_names)}: "
            "a classifier needs at least two classes"
        )
    if model.quantize == "int8-full":
        raise CbrError(f"{source} is int8-full, calibrated on album images that the file does not keep: build it "
                       "again from the albums without these classes")
    embedder = reload_embedder(model, source)
    remap = np.array([keep_names.index(n) if n in keep_names else -1 for n in model.class_names], dtype=np.int32)
    new_labels = remap[model.image_labels]
    keep = new_labels >= 0
    return classifier_file_from_index(embedder, model.index_embeddings[keep], new_labels[keep], keep_names,
                                      model.aggregation, model.quantize, model.center)


# --------------------------------------------------------------------------------------------------
# Classifying
# --------------------------------------------------------------------------------------------------


class Classifier:
    """A classifier file run with LiteRT; it needs nothing but the file (labels, preprocessing inside).

    Works for any TFLite image classifier with TFLite metadata (labels and normalisation), not only
    ones made by cbr-lite.
    """

    def __init__(self, model, source: str | None = None):
        if isinstance(model, (str, Path)):
            source = source or str(model)
            model = read_model_file(model)
        source = source or "the model"
        self.data = bytes(model)
        metadata = read_model_metadata(self.data, source)
        self.labels = list(metadata["labels"])
        self.mean = np.float32(metadata["mean"])
        self.std = np.float32(metadata["std"])
        self.input_size = tuple(metadata["input_size"])
        self.model = LiteRTModel(self.data)
        self.uint8_input = np.dtype(self.model.input["dtype"]) == np.uint8

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """One ``uint8`` RGB image -> the model's input, as the metadata says (resize, then normalise)."""
        from cbr_lite.images import resize

        pixels = resize(np.asarray(image, dtype=np.uint8), self.input_size)
        if self.uint8_input:
            return pixels
        return (pixels.astype(np.float32) - self.mean) / self.std

    def scores(self, images) -> np.ndarray:
        """The model's own outputs, ``(len(images), classes)`` float32, for ``uint8`` RGB images."""
        rows = [self.model.run_one(self.preprocess(image)) for image in images]
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, len(self.labels)), np.float32)

    def predict(self, images, top_k: int = 0) -> list:
        """For each image, ``[(label, score), ...]`` best first; ``top_k=0`` gives every class."""
        return [self.ranked(row, top_k) for row in self.scores(images)]

    def ranked(self, scores: np.ndarray, top_k: int = 0) -> list:
        """One row of scores as ``[(label, score), ...]``, best first (ties keep class order)."""
        if top_k < 0:
            raise CbrError(f"top-k must be 0 (all classes) or more, not {top_k}")
        order = np.argsort(-np.asarray(scores), kind="stable")
        if top_k:
            order = order[:top_k]
        return [(self.labels[i], float(scores[i])) for i in order]


def classify(model, images, top_k: int = 0) -> list:
    """Classify ``uint8`` RGB images with a classifier file (bytes or path); see :meth:`Classifier.predict`."""
    return Classifier(model).predict(images, top_k)


def read_model_file(path) -> bytes:
    """The bytes of a model file, or a :class:`CbrError` saying why it cannot be read."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CbrError(f"{path}: no such model file") from None
    except IsADirectoryError:
        raise CbrError(f"{path}: is a folder; give a .tflite model file") from None
    except OSError as error:
        raise CbrError(f"{path}: cannot read it ({error.strerror or error})") from None


def count_ops(data: bytes) -> list:
    """``[(op name, count), ...]`` of a .tflite model, in order of first use."""
    counts: dict = {}
    for op in LiteRTModel(data).ops():
        counts[op] = counts.get(op, 0) + 1
    return list(counts.items())


__all__ = [
    "Classifier", "ClassifierFile", "add_classes", "build_classifier_file", "check_class_names", "classify",
    "classifier_file_from_index", "count_ops", "embed_albums", "embed_paths", "load_index", "read_classifier_file",
    "read_model_file", "read_model_metadata", "remove_classes", "save_index",
]
