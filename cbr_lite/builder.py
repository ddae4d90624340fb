"""Building CbR classifier files: a folder of class folders in, one self-describing ``.tflite`` file out.

The file format (metadata, ``index.npz``, ``cbr.json``) is :mod:`cbr_lite.classifier_file`; running a
file is :mod:`cbr_lite.classifier`. This module embeds albums and assembles files, and adds or removes
classes of an existing file.

>>> data = build_classifier_file("albums/", embedder="glyph-cnn")          # doctest: +SKIP
>>> Classifier(data).predict([image], top_k=2)                              # doctest: +SKIP
[[('cat', 0.93), ('mug', 0.41)]]
>>> read_classifier_file(data).images_per_class()                           # doctest: +SKIP
{'cat': 5, 'mug': 4}

Every option is checked, and the album folders listed and their names checked as labels, before the
embedder is loaded or any image read, so a typo fails at once. The same inputs give byte-identical files:
no timestamps, sorted listings, fixed ZIP entry dates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from cbr_lite.albums import check_on_bad_image, found_albums, read_image_or_skip, warn_on_stderr
from cbr_lite.classifier import Classifier  # noqa: F401  (notebooks 06 and 10 use builder.Classifier)
from cbr_lite.classifier_file import ClassifierFile, read_classifier_file, write_classifier_file
from cbr_lite.errors import CbrError
from cbr_lite.export import LiteRTModel, check_quantize, to_tflite
from cbr_lite.images import resize
from cbr_lite.index_choice import IndexSpec, parse_index, resolve_spec
from cbr_lite.labels import check_labels, printable
from cbr_lite.similarity import check_index, parse_aggregation
from cbr_lite.tflite_graph import count_operators, embedder_part, join
from cbr_lite.version import VERSION

#: How int8 index rows are scaled (see cbr_lite.quantization): one scale per index image.
INT8_SCALE = "row"
#: The dtype the index matrix is stored in for each quantisation (cbr_lite.retrieval.INDEX_DTYPES).
INDEX_DTYPE = {"none": "float32", "float16": "float32", "int8": "int8", "int8-full": "float32"}
#: How many album images (evenly spread) calibrate a full-integer model's activations.
REPRESENTATIVE_IMAGES = 64
#: Images are read, shrunk to the embedder's input size and embedded this many at a time, so a folder
#: of full-size photos never has to fit in memory at once.
_BATCH = 32


# --------------------------------------------------------------------------------------------------
# Embedding albums
# --------------------------------------------------------------------------------------------------


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
    check_on_bad_image(on_bad_image)
    warn = warn or warn_on_stderr
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


def embed_albums(albums, embedder, on_bad_image: str = "error",
                 progress: Callable[[int], None] | None = None,
                 warn: Callable[[str], None] | None = None) -> tuple[np.ndarray, np.ndarray, list]:
    """Embed every image of a folder of class folders: ``(embeddings, image_labels, class_names)``.

    ``albums``: the folder, or what :func:`cbr_lite.albums.find_albums` returned for it (folder names
    are checked as labels there, before anything is read). A class left without readable images (with
    ``on_bad_image="skip"``) is an error naming its folder.
    """
    albums = found_albums(albums)
    class_names = [name for name, _ in albums]
    all_paths = [path for _, paths in albums for path in paths]
    labels = np.concatenate([np.full(len(paths), c, dtype=np.int32) for c, (_, paths) in enumerate(albums)])
    embeddings, kept = embed_paths(all_paths, embedder, on_bad_image, progress, warn)
    kept_set = set(kept)
    keep = np.array([Path(path) in kept_set for path in all_paths])
    labels = labels[keep]
    counts = np.bincount(labels, minlength=len(class_names))
    for (name, paths), count in zip(albums, counts):
        if count == 0:
            raise CbrError(f"{Path(paths[0]).parent}: no readable images left in this class folder")
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
                          warn: Callable[[str], None] | None = None, center: bool = False,
                          index="exact") -> bytes:
    """Build a classifier from a folder of class folders and return the ``.tflite`` file's bytes.

    ``albums``: the folder, or what :func:`cbr_lite.albums.find_albums` returned for it. ``embedder``: a
    registered name (stored in the file, so ``add`` can load it again), an
    :class:`~cbr_lite.embedders.Embedder`, or None for :data:`cbr_lite.embedders.DEFAULT_EMBEDDER`.
    ``aggregation``: ``max``, ``mean`` or ``topk:K``. ``quantize``: ``none`` (float32), ``float16``
    (half-size weights), ``int8`` (the index as int8 with a scale per image, :mod:`cbr_lite.quantization`;
    the embedder's weights dynamic-range int8) or ``int8-full`` (integers throughout, ``uint8`` input,
    calibrated on album images; see :func:`cbr_lite.export.to_tflite`). ``center=True`` centres index and
    queries on the index's mean embedding inside the model (one ``SUB`` op); ``add``/``remove`` recompute
    that mean from the new index. ``index``: ``"exact"`` (every index image compared with every query), or
    ``"ivf"``, ``"ivf:NLIST"``, ``"ivf:NLIST:NPROBE"`` (an IVF head, :mod:`cbr_lite.ivf`: for hundreds of
    thousands of classes and more; see :mod:`cbr_lite.index_choice`).
    """
    parse_aggregation(aggregation)
    check_quantize(quantize)
    check_on_bad_image(on_bad_image)
    spec = check_index_choice(index, aggregation, quantize)
    albums = found_albums(albums)
    embedder = resolve_embedder(embedder)
    embeddings, labels, class_names = embed_albums(albums, embedder, on_bad_image, progress, warn)
    representative = representative_images(albums, embedder) if quantize == "int8-full" else None
    return _assemble(embedder, embeddings, labels, class_names, aggregation, quantize, bool(center), representative,
                     spec)


def check_index_choice(index, aggregation: str, quantize: str) -> IndexSpec:
    """The :class:`IndexSpec` of ``index`` (``"exact"``, ``"ivf[:NLIST[:NPROBE]]"`` or a spec), checked against
    the other options: an IVF head aggregates by max and is not calibrated as one integer network."""
    spec = parse_index(index)
    if spec.kind == "ivf" and aggregation != "max":
        raise CbrError(f"an IVF index scores each class by its best image found: use aggregation max with it, "
                       f"not {aggregation!r} (or the exact index)")
    if spec.kind == "ivf" and quantize == "int8-full":
        raise CbrError("an IVF index keeps its rows as int8 already and is not calibrated as one integer network: "
                       "use quantisation none, float16 or int8 with it")
    return spec


def representative_images(albums, embedder, count: int = REPRESENTATIVE_IMAGES) -> list:
    """Up to ``count`` album images (evenly spread over the sorted paths), resized for ``embedder``:
    what a full-integer model is calibrated on. Unreadable images are left out. ``albums``: a folder of
    class folders or what :func:`cbr_lite.albums.find_albums` returned."""
    paths = [path for _, album in found_albums(albums) for path in album]
    chosen = [paths[i] for i in np.unique(np.linspace(0, len(paths) - 1, min(count, len(paths))).astype(int))]
    images = [read_image_or_skip(path, "skip", lambda message: None) for path in chosen]
    return [resize(image, tuple(embedder.input_size)) for image in images if image is not None]


def classifier_file_from_index(embedder, index_embeddings, image_labels, class_names: Sequence[str],
                               aggregation: str = "max", quantize: str = "none", center: bool = False,
                               representative=None, index="exact") -> bytes:
    """Assemble, convert and label a classifier from an index that is already embedded.

    ``representative``: ``uint8`` images (any size) to calibrate an ``int8-full`` model on; required for it.
    ``index``: as for :func:`build_classifier_file`.
    """
    parse_aggregation(aggregation)
    check_quantize(quantize)
    spec = check_index_choice(index, aggregation, quantize)
    class_names = check_labels(class_names)
    embedder = resolve_embedder(embedder)
    index_embeddings, image_labels, _ = check_index(index_embeddings, image_labels, len(class_names))
    return _assemble(embedder, index_embeddings, image_labels, class_names, aggregation, quantize, bool(center),
                     representative, spec)


def _assemble(embedder, index_embeddings, image_labels, class_names, aggregation, quantize, center=False,
              representative=None, spec: IndexSpec = IndexSpec()) -> bytes:
    """The classifier file of a checked index (the entries above check it, once)."""
    if index_embeddings.shape[1] != embedder.dim:
        raise CbrError(
            f"the index embeddings have {index_embeddings.shape[1]} dimensions but {embedder.name} gives {embedder.dim}"
        )
    described = {
        "embedder": embedder.name,
        "embedding_dim": int(embedder.dim),
        "input_size": [int(v) for v in embedder.input_size],
        "mean": [float(v) for v in embedder.mean],
        "std": [float(v) for v in embedder.std],
    }
    if quantize == "int8-full":
        # Calibrated as one network (integers across the embedder/head boundary), so it is not joined from
        # two and cannot be cut again: remove refuses it, add recalibrates.
        if not representative:
            raise CbrError("an int8-full model is calibrated on images: build it from albums (cbr-lite build), "
                           "or give representative images")
        from cbr_lite.retrieval import build_classifier

        model = build_classifier(embedder, index_embeddings, image_labels, len(class_names), aggregation,
                                 index_dtype=INDEX_DTYPE[quantize], int8_scale=INT8_SCALE, center=center)
        # Plus a black and a white image, so the uint8 input's range covers every pixel value.
        extremes = [np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)]
        tflite = to_tflite(model, quantize, embedder.preprocess(list(representative) + extremes))
        return write_classifier_file(tflite, class_names, index_embeddings, image_labels,
                                     _info(described, aggregation, quantize, center))
    network = to_tflite(_image_model(embedder), quantize)  # quiet: to_tflite hides the converter's chatter
    described["embedder_ops"] = count_operators(network)
    return _with_head(network, described, index_embeddings, image_labels, class_names, aggregation, quantize,
                      center, spec)


def _with_head(network: bytes, described: dict, index_embeddings, image_labels, class_names, aggregation,
               quantize, center, spec: IndexSpec = IndexSpec()) -> bytes:
    """The classifier file: the embedder ``network`` (TFLite) joined to a head converted for the index.

    The two are converted separately and joined (:mod:`cbr_lite.tflite_graph`), the embedder's
    ``embedder_ops`` operators first, so ``remove`` can cut the file there again without any embedder.
    """
    head, index_info = _head(index_embeddings, image_labels, len(class_names), aggregation, quantize, center, spec)
    return write_classifier_file(join(network, to_tflite(head, quantize)), class_names, index_embeddings, image_labels,
                                 _info(described, aggregation, quantize, center, index_info))


def _info(described: dict, aggregation: str, quantize: str, center: bool, index_info: dict | None = None) -> dict:
    """``cbr.json``'s fields: the embedder as ``described``, then how the head was built (``index``: an IVF
    head's lists and probes; exact heads, the default, have no such field)."""
    return {
        "cbr_lite_version": VERSION,
        **described,
        "aggregation": aggregation,
        "quantize": quantize,
        **({"int8_scale": INT8_SCALE} if quantize == "int8" else {}),
        **({"center": "index-mean"} if center else {}),
        **({"index": index_info} if index_info else {}),
    }


def _image_model(embedder):
    """The embedder as the classifier's first half: one RGB image (normalised) in, its embedding out."""
    import keras

    height, width = embedder.input_size
    image = keras.Input(shape=(height, width, 3), name="image")
    return keras.Model(image, embedder.model(image), name="cbr_embedder")


def _head(index_embeddings, image_labels, num_classes, aggregation, quantize, center, spec: IndexSpec = IndexSpec()):
    """``(the retrieval head, its cbr.json "index" record or None)``: raw embedding in, class scores out.

    The exact head stores its index as int8 for ``quantize="int8"``; an IVF head (``spec``) always does. Either is
    centred on the index's mean embedding for ``center=True``."""
    if spec.kind == "ivf":
        return _ivf_head(index_embeddings, image_labels, num_classes, center, spec)
    from cbr_lite.retrieval import build_retrieval_head

    # With quantize="int8" the index is stored as int8 with one scale per image (cbr_lite.quantization); the
    # converter's dynamic-range quantisation then keeps those same integers.
    return build_retrieval_head(index_embeddings, image_labels, num_classes, aggregation,
                                index_dtype=INDEX_DTYPE[quantize], int8_scale=INT8_SCALE, center=center), None


def _ivf_head(index_embeddings, image_labels, num_classes, center, spec: IndexSpec):
    """The IVF head and its record: lists by k-means on the (centred) index, ``spec``'s lists and probes."""
    from cbr_lite import ivf
    from cbr_lite.retrieval import centring_mean

    nlist, nprobe = resolve_spec(spec, len(index_embeddings))
    mean = centring_mean(index_embeddings, center)
    lists = ivf.build_inverted_lists(index_embeddings if mean is None else index_embeddings - mean, image_labels,
                                     num_classes, nlist)
    full_scores = num_classes <= ivf.FULL_SCORES_LIMIT
    record = {"kind": "ivf", "spec": str(spec), **lists.summary(nprobe), "top_k": min(ivf.TOP_K, num_classes),
              "full_scores": full_scores}
    return ivf.build_ivf_head(lists, nprobe, full_scores=full_scores, mean=mean), record


# --------------------------------------------------------------------------------------------------
# Editing classifier files
# --------------------------------------------------------------------------------------------------


def load_file_embedder(model: ClassifierFile, source: str, embedder=None):
    """The embedder to embed more images for a model file with, checked to preprocess as it was built.

    ``embedder`` (a name or an :class:`Embedder`) is the caller's choice, e.g. ``--embedder`` on the
    command line. Without one, the embedder the file names is used only if it is built in and offline
    (:func:`cbr_lite.embedders.offline_embedders`): a model file is data, and a ``hub:`` handle or a
    downloadable name in it would make cbr-lite run code from a path or reach the network because a
    file said so.
    """
    from cbr_lite.embedders import offline_embedders

    if embedder is None:
        if model.embedder not in offline_embedders():
            name = printable(repr(model.embedder))
            raise CbrError(
                f"{source} names the embedder {name}, which is not one of cbr-lite's built-in offline "
                f"embedders ({', '.join(offline_embedders())}); cbr-lite does not load embedders a model "
                f"file names (they could run code or reach the network): if you trust it, name it yourself "
                f"(--embedder {name})"
            )
        embedder = model.embedder
    embedder = resolve_embedder(embedder)
    same = (tuple(embedder.input_size) == model.input_size and embedder.dim == model.index_embeddings.shape[1]
            and np.allclose(embedder.mean, model.mean) and np.allclose(embedder.std, model.std))
    if not same:
        raise CbrError(
            f"{source} was built with a different embedder than {printable(embedder.name)!r} (input size, "
            "normalisation or dimension differ); build it again from its albums"
        )
    return embedder


def add_classes(data: bytes, albums, on_bad_image: str = "error", progress: Callable[[int], None] | None = None,
                warn: Callable[[str], None] | None = None, source: str = "the model", embedder=None) -> bytes:
    """A new classifier file: the classes of ``data`` plus those of the folder of class folders ``albums``.

    Only the new images are embedded, with ``embedder`` if given, else with the embedder the file
    names if that is a built-in offline one (:func:`load_file_embedder`). A class folder whose name is
    already a class adds its images to that class. Classes stay in sorted order, so adding albums with
    new classes to a model gives the classifier that building from all the albums at once gives (up to
    float rounding: an embedder's result can differ in the last bits with its batch).
    """
    check_on_bad_image(on_bad_image)
    model = read_classifier_file(data, source)
    albums = found_albums(albums)
    embedder = load_file_embedder(model, source, embedder)
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
    return _assemble(embedder, embeddings[order], labels[order], names, model.aggregation,
                     check_quantize(model.quantize), model.center, representative, model.index_spec())


def remove_classes(data: bytes, labels: Iterable[str], source: str = "the model") -> bytes:
    """A new classifier file without the classes named in ``labels`` (and their index images).

    No embedder is loaded: the file's own embedder network is kept as it is and joined to a new
    retrieval head. Raises :class:`CbrError` for a label the model does not have or if fewer than two
    classes would remain.
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
    if model.embedder_ops is None:
        raise CbrError(f"{source} was made by an earlier cbr-lite, whose files do not say where the embedder's "
                       "network ends; build it again from its albums (or add to it) with this version first")
    # The file's own network: no embedder is loaded.
    network = embedder_part(data, model.embedder_ops, int(model.index_embeddings.shape[1]), source)
    remap = np.array([keep_names.index(n) if n in keep_names else -1 for n in model.class_names], dtype=np.int32)
    new_labels = remap[model.image_labels]
    keep = new_labels >= 0
    described = {"embedder": model.embedder, "embedding_dim": int(model.index_embeddings.shape[1]),
                 "input_size": list(model.input_size), "mean": list(model.mean), "std": list(model.std),
                 "embedder_ops": model.embedder_ops}
    new = _with_head(network, described, model.index_embeddings[keep], new_labels[keep], keep_names,
                     model.aggregation, check_quantize(model.quantize), model.center, model.index_spec())
    LiteRTModel(new, source=source)  # a network from someone else's file: check it still runs before it is written
    return new


__all__ = [
    "INT8_SCALE", "REPRESENTATIVE_IMAGES", "add_classes", "build_classifier_file", "check_index_choice",
    "classifier_file_from_index", "embed_albums", "embed_paths",
    "load_file_embedder", "remove_classes", "representative_images", "resolve_embedder",
]
