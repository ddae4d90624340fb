"""The cbr-lite classifier file format: one ``.tflite`` file that describes itself.

The file is an ordinary TFLite image classifier (one RGB image in, one score per class out) with TFLite
metadata (labels, normalisation; see :mod:`cbr_lite.metadata`) and two more files packed inside it:

- ``index.npz``: the raw index embeddings ``(images, dim)`` and their class ids ``(images,)``, so classes
  can be added or removed later without embedding the old images again (``np.load(allow_pickle=False)``);
- ``cbr.json``: how it was built (embedder name, aggregation, quantisation, input size, mean, std,
  cbr-lite version).

A model file is data, whoever made it. Reading one never runs code it names or reaches the network, and
never reads more than the limits below: only regular files of at most :data:`MAX_MODEL_BYTES`, checked
to be TFLite before they are read whole; the packed files' sizes (:mod:`cbr_lite.metadata`); and
``index.npz`` arrays whose headers agree with the bytes that hold them and with the model's classes.

>>> model = read_classifier_file(read_model_file("pets.tflite"), "pets.tflite")   # doctest: +SKIP
>>> model.images_per_class()                                                       # doctest: +SKIP
{'cat': 5, 'mug': 4}
"""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cbr_lite.errors import CbrError
from cbr_lite.files import open_regular_file
from cbr_lite.index_choice import IndexSpec, parse_index
from cbr_lite.labels import printable

INDEX_FILE = "index.npz"
#: Bumped when the layout of ``index.npz`` or ``cbr.json`` changes incompatibly.
FORMAT_VERSION = 1
#: The largest model file cbr-lite reads: a TFLite FlatBuffer cannot be larger than 2 GiB.
MAX_MODEL_BYTES = 2**31
_NPY_ARRAYS = {"embeddings": np.float32, "labels": np.integer}


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
    #: How many of the network's first operators are the embedder's (None in files of cbr-lite 0.1.0 and
    #: in int8-full files, which are converted as one network).
    embedder_ops: int | None = None
    #: Centred on the index's mean embedding (SimpleShot's CL2N; see cbr_lite.retrieval.centring_mean).
    center: bool = False
    #: None for the exact head; for an IVF head (cbr_lite.ivf) its record in cbr.json: ``spec`` (as given to
    #: ``--index``), ``nlist``, ``nprobe``, ``list_length`` (the longest list), ``smallest_list``, ``rows_read``
    #: (index rows a query reads), ``index_bytes`` (the head's arrays), ``top_k`` and ``full_scores``.
    index: dict | None = None

    def index_spec(self):
        """The :class:`cbr_lite.index_choice.IndexSpec` the file was built with (what ``add``/``remove`` keep)."""
        return parse_index(self.index["spec"]) if self.index else IndexSpec()

    def images_per_class(self) -> dict:
        """``{class name: number of index images}``, in class order."""
        counts = np.bincount(self.image_labels, minlength=len(self.class_names))
        return {name: int(count) for name, count in zip(self.class_names, counts)}


def read_model_file(path) -> bytes:
    """The bytes of a model file, or a :class:`CbrError` saying why it cannot be read.

    Only a regular file of at most :data:`MAX_MODEL_BYTES` whose header says TFLite is read whole; a
    FIFO, a device, a folder or another kind of file is refused before that.
    """
    path = Path(path)
    with open_regular_file(path, "model file", MAX_MODEL_BYTES) as file:
        try:
            head = file.read(8)
            if not head:
                raise CbrError(f"{path}: the file is empty (0 bytes), not a TensorFlow Lite model")
            if len(head) < 8 or head[4:8] != b"TFL3":
                raise CbrError(f"{path}: not a TensorFlow Lite model (no 'TFL3' identifier); give a .tflite model file")
            return head + file.read()
        except OSError as error:
            raise CbrError(f"{path}: cannot read it ({error.strerror or type(error).__name__})") from None


def write_classifier_file(tflite: bytes, class_names, index_embeddings: np.ndarray, image_labels: np.ndarray,
                          info: dict) -> bytes:
    """The classifier file: the network ``tflite`` with metadata for ``class_names``, ``index.npz`` and
    ``cbr.json`` (``info``: embedder, embedding_dim, embedder_ops, aggregation, quantize, input_size, mean,
    std, cbr_lite_version; ``format`` is added). Checked input only: :mod:`cbr_lite.builder` calls it."""
    from cbr_lite.metadata import add_metadata

    info = {"format": FORMAT_VERSION, **info}
    counts = np.bincount(image_labels, minlength=len(class_names))
    description = (
        f"Classification by retrieval: {info['embedder']} embeddings, {info['aggregation']} cosine similarity "
        f"over {len(image_labels)} index images of {len(class_names)} classes ({', '.join(map(str, counts))} "
        f"per class). Made with cbr-lite {info['cbr_lite_version']}."
    )
    return add_metadata(
        tflite, labels=class_names, mean=list(info["mean"]), std=list(info["std"]),
        name="cbr-lite classifier", description=description,
        extra_files={INDEX_FILE: save_index(index_embeddings, image_labels)}, cbr_info=info,
    )


def save_index(index_embeddings: np.ndarray, image_labels: np.ndarray) -> bytes:
    """The bytes of ``index.npz`` (``embeddings``, ``labels``): like ``np.savez`` without pickle, but
    with fixed ZIP dates, so the same index always gives the same bytes."""
    from cbr_lite.metadata import zip_bytes

    arrays = {
        "embeddings": np.ascontiguousarray(index_embeddings, dtype=np.float32),
        "labels": np.ascontiguousarray(image_labels, dtype=np.int32),
    }
    files = {}
    for name, array in arrays.items():
        stream = io.BytesIO()
        np.lib.format.write_array(stream, array, allow_pickle=False)
        files[f"{name}.npy"] = stream.getvalue()
    return zip_bytes(files)


def load_index(data: bytes, source: str = "the model", num_classes: int | None = None,
               dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read ``index.npz`` bytes back as ``(embeddings float32 (n, dim), labels int32 (n,))``, no pickle.

    Each array's header is checked before the array is read: its shape must fit the bytes that hold it
    (a few bytes cannot claim a 47 GiB array), the embeddings must be ``(n, dim)`` float32 (``dim`` as
    given) and the labels ``(n,)`` integers in ``[0, num_classes)``.
    """
    damaged = CbrError(f"{source}: its {INDEX_FILE} is damaged; build the model again")
    unexpected = CbrError(f"{source}: its {INDEX_FILE} has unexpected arrays; build the model again")
    arrays = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for name, kind in _NPY_ARRAYS.items():
                member = archive.getinfo(f"{name}.npy")
                if member.file_size > len(data) or member.compress_type != zipfile.ZIP_STORED:
                    raise unexpected
                with archive.open(member) as file:
                    shape, dtype = _npy_header(file)
                    if (dtype.hasobject or not np.issubdtype(dtype, kind)
                            or math.prod(shape) * dtype.itemsize > member.file_size):
                        raise unexpected
                    arrays[name] = np.lib.format.read_array(file, allow_pickle=False)
    except CbrError:
        raise
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile, OverflowError, TypeError):
        raise damaged from None
    embeddings, labels = arrays["embeddings"], arrays["labels"]
    if (embeddings.ndim != 2 or labels.shape != (len(embeddings),) or (dim is not None and embeddings.shape[1] != dim)):
        raise unexpected
    top = num_classes if num_classes is not None else 2**31
    if labels.size and (labels.min() < 0 or labels.max() >= top):
        raise CbrError(f"{source}: its {INDEX_FILE} refers to classes the model does not have; build it again")
    return embeddings, labels.astype(np.int32)


def _npy_header(file) -> tuple[tuple, np.dtype]:
    version = np.lib.format.read_magic(file)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(file)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(file)
    else:
        raise ValueError(f"unknown .npy version {version}")
    file.seek(0)
    return tuple(shape), dtype


def read_classifier_file(data: bytes, source: str = "the model") -> ClassifierFile:
    """Read what a cbr-lite classifier file holds: labels, index, and how it was built.

    Raises :class:`CbrError` if ``data`` is not a cbr-lite classifier (a TFLite model without our
    ``cbr.json``/``index.npz``, or any other file) or if its packed files are damaged or out of bounds.
    """
    from cbr_lite.metadata import read_associated_file, read_metadata

    data = bytes(data)
    metadata = read_metadata(data, source=source)
    info = metadata.get("cbr_info")
    if not isinstance(info, dict) or INDEX_FILE not in metadata["associated_files"]:
        raise CbrError(f"{source} is a TFLite classifier but not one made by cbr-lite (no cbr.json or index.npz)")
    if info.get("format") != FORMAT_VERSION:
        raise CbrError(
            f"{source} was written in cbr-lite file format {_shown(info.get('format'))}; this cbr-lite reads "
            f"format {FORMAT_VERSION}: use the cbr-lite version that made it ({_shown(info.get('cbr_lite_version'))})"
        )
    info = _checked_info(info, source)
    class_names = list(metadata["labels"])
    embeddings, labels = load_index(read_associated_file(data, INDEX_FILE, source=source), source,
                                    num_classes=len(class_names), dim=info["embedding_dim"])
    return ClassifierFile(
        class_names=class_names, index_embeddings=embeddings, image_labels=labels,
        embedder=info["embedder"], aggregation=info["aggregation"], quantize=info["quantize"],
        input_size=info["input_size"], mean=info["mean"], std=info["std"], version=info["cbr_lite_version"],
        size=len(data), embedder_ops=info["embedder_ops"], center=info["center"], index=info["index"],
    )


def _checked_info(info: dict, source: str) -> dict:
    """``cbr.json``'s fields with the types cbr-lite wrote, or a :class:`CbrError`: a file someone sent
    may hold anything there (a 100,000-deep list, a number where a name goes)."""
    def numbers(value, lengths):
        if (not isinstance(value, list) or len(value) not in lengths
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
            raise ValueError
        return value

    try:
        checked = {key: info[key] for key in ("embedder", "aggregation", "quantize")}
        if not all(isinstance(value, str) and len(value) <= 1000 for value in checked.values()):
            raise ValueError
        checked["input_size"] = tuple(int(v) for v in numbers(info["input_size"], (2,)))
        checked["mean"] = tuple(float(v) for v in numbers(info["mean"], (1, 3)))
        checked["std"] = tuple(float(v) for v in numbers(info["std"], (1, 3)))
        for key in ("embedding_dim", "embedder_ops"):
            value = info.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError
            checked[key] = value
        checked["center"] = bool(info.get("center"))
        checked["index"] = _checked_index(info.get("index"))
        version = info.get("cbr_lite_version", "?")
        checked["cbr_lite_version"] = version if isinstance(version, str) and len(version) <= 100 else "?"
    except (KeyError, TypeError, ValueError, OverflowError):
        raise CbrError(f"{source}: its cbr.json is incomplete or has values of the wrong type; build the model again") from None
    if min(checked["input_size"]) < 1:
        raise CbrError(f"{source}: its cbr.json is incomplete or has values of the wrong type; build the model again")
    return checked


#: The whole-number fields of an IVF head's record in cbr.json (see ClassifierFile.index).
_IVF_NUMBERS = ("nlist", "nprobe", "list_length", "smallest_list", "rows_read", "index_bytes", "top_k")


def _checked_index(record):
    """An IVF head's ``index`` record from ``cbr.json`` as cbr-lite wrote it (None: the exact head), else ValueError."""
    if record is None:
        return None
    if (not isinstance(record, dict) or record.get("kind") != "ivf" or not isinstance(record.get("spec"), str)
            or len(record["spec"]) > 100 or not isinstance(record.get("full_scores"), bool)):
        raise ValueError
    try:
        spec = parse_index(record["spec"])
    except CbrError:
        raise ValueError from None
    numbers = {key: record.get(key) for key in _IVF_NUMBERS}
    if spec.kind != "ivf" or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in numbers.values()):
        raise ValueError
    return {"kind": "ivf", "spec": record["spec"], **numbers, "full_scores": record["full_scores"]}


def _shown(value) -> str:
    """A value from ``cbr.json`` quoted for a message: short, on one line, control characters escaped."""
    text = repr(value) if isinstance(value, (str, int, float)) or value is None else type(value).__name__
    return printable(text[:60])


__all__ = [
    "ClassifierFile", "FORMAT_VERSION", "INDEX_FILE", "MAX_MODEL_BYTES", "load_index", "read_classifier_file",
    "read_model_file", "save_index", "write_classifier_file",
]
