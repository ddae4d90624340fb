"""Writing and reading TFLite model metadata (labels, normalisation) with `flatbuffers`.

A ``.tflite`` file is a FlatBuffer. The TFLite *metadata* that MediaPipe's ``ImageClassifier`` and the
TFLite Task Library read is a second, smaller FlatBuffer (schema ``metadata_schema.fbs`` from
tensorflow/tflite-support, file identifier ``M001``) stored in one of the model's buffers; the model's
``metadata`` list names that buffer ``TFLITE_METADATA``. Files the metadata mentions (here
``labels.txt``) are appended to the model file as an uncompressed ZIP archive, so one file holds the
model, its labels and anything else we want to ship with it::

    [ TFLite flatbuffer (with TFLITE_METADATA buffer) ][ ZIP: cbr.json, index.npz, labels.txt ]

LiteRT ignores both the metadata buffer and the trailing ZIP, so the model runs unchanged.

The metadata FlatBuffer is written and read with the classes the FlatBuffers compiler generates from the
public schema (``cbr_lite/third_party/metadata_schema_py_generated.py``, vendored from the mediapipe
wheel with its licence), so no field slot is numbered by hand. The official *writers* do not fit our
environment: MediaPipe 1.2's fails to import (it needs ``mediapipe.tasks.cc``, a compiled package the
wheel does not ship) and ``tflite-support`` 0.4.4, the last release, pins ``protobuf<4``, which
TensorFlow 2.21 cannot use. Only the public ``flatbuffers`` API that generated code itself uses is
called, so any ``flatbuffers`` release that runs generated code will do.

What we write (the layout of the official image-classifier writers, minus score thresholds):

- ``ModelMetadata``: name, description, ``min_parser_version`` "1.0.0" (no field newer than 1.0.0 is
  used), one ``SubGraphMetadata``, and the extra files (``cbr.json``, ``index.npz``, ...) as model-level
  associated files.
- input ``TensorMetadata`` "image": ``ImageProperties`` (RGB), a ``NormalizationOptions`` process unit
  with ``mean`` and ``std`` (the reader computes ``(pixel - mean) / std``), and ``Stats`` with the
  range the normalised pixels take (``0..255`` for a uint8 input).
- output ``TensorMetadata`` "scores": ``FeatureProperties`` and ``labels.txt`` as a
  ``TENSOR_AXIS_LABELS`` associated file (one label per line, UTF-8, in class order).

Labels must be non-empty and on one line: a label with a line break (or empty) is rejected with a
`CbrError` rather than escaped, because MediaPipe and the Task Library read ``labels.txt`` line by line
and would show an escaped label verbatim. Spaces, commas and any other Unicode are kept as they are.

Who reads what we write (MediaPipe is checked by ``tests/test_metadata.py``, the Task Library by hand):

- MediaPipe Tasks' ``ImageClassifier`` (``mediapipe`` 1.2.2) loads the file unchanged and labels its
  scores with our class names, but only if ``mean`` and ``std`` are the same for all three channels:
  per-channel values make it fail with ``NotImplementedError: Per-channel image normalization is not
  available`` (a TODO in MediaPipe's C++ image preprocessing). Every cbr-lite embedder uses one value.
- The TFLite Task Library (``tflite-support`` 0.4.4) accepts per-channel values too.
- A ``uint8``-input model gets raw pixels from both: its input quantisation must do the normalising.

Example::

    tflite = add_metadata(tflite, labels=["cat", "dog"], mean=[127.5] * 3, std=[127.5] * 3,
                          name="pets", description="Cats vs dogs by retrieval.")
    read_metadata(tflite)["labels"]        # ['cat', 'dog']
"""

import copy
import io
import json
import math
import re
import struct
import zipfile
import zlib

import flatbuffers
from ai_edge_litert import schema_py_generated as tfl

from cbr_lite.errors import CbrError
from cbr_lite.labels import check_labels, printable
from cbr_lite.third_party import metadata_schema_py_generated as schema

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
MODEL_IDENTIFIER = b"TFL3"
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"
CBR_INFO_FILE = "cbr.json"
#: The outputs of a classifier with a small top-K output (the IVF head, cbr_lite.ivf), by their signature
#: names, in file order: the full score vector (only in models of up to cbr_lite.ivf.FULL_SCORES_LIMIT
#: classes), then the K best class numbers (float32) and their scores.
CLASS_SCORES, TOP_CLASSES, TOP_SCORES = "class_scores", "top_classes", "top_scores"
TOP_K_LAYOUTS = ([CLASS_SCORES, TOP_CLASSES, TOP_SCORES], [TOP_CLASSES, TOP_SCORES])
#: The largest input image side a classifier may ask for (a damaged file could ask for any).
MAX_INPUT_SIDE = 4096
#: The most bytes read for a packed file (others: at most the model file's own size). A model with a
#: 600 MB compressed labels.txt is refused instead of costing gigabytes of memory.
MAX_PACKED_BYTES = {LABELS_FILE: 16 * 2**20, CBR_INFO_FILE: 64 * 2**10}

# Fixed ZIP entry attributes (zip_bytes), so the same inputs give byte-identical files on every OS and day.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_ZIP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_BUFFER_ALIGN = 16  # TFLite wants tensor data 16-byte aligned; the object API's Pack does not ensure it.


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def add_metadata(
    tflite_bytes,
    *,
    labels,
    mean,
    std,
    name,
    description,
    extra_files=None,
    cbr_info=None,
    source="the model",
):
    """Return a copy of a ``.tflite`` image classifier with TFLite metadata and associated files.

    The model must have one input, an RGB image tensor ``(1, H, W, 3)`` of float32 or uint8, and one
    output, a float32 score tensor ``(1, len(labels))``, or the outputs of :data:`TOP_K_LAYOUTS` (float32
    ``class_scores (1, len(labels))`` if there, then ``top_classes`` and ``top_scores``, ``(1, K)`` each).
    ``labels.txt`` labels the score vector's axis (``TENSOR_AXIS_LABELS``, what MediaPipe's
    ``ImageClassifier`` reads) and the values of ``top_classes`` (``TENSOR_VALUE_LABELS``, as TFLite's object
    detectors label their class outputs). Any metadata and associated files the model already has are replaced.

    Args:
        tflite_bytes: the model file's bytes.
        labels: one class name per output score, in order; each non-empty and on one line.
        mean, std: per-channel (3 values, or 1 for all channels) normalisation, ``(x - mean) / std``.
        name, description: shown by metadata viewers (Netron, MediaPipe's displayer).
        extra_files: more files to pack, ``{file name: bytes}`` (e.g. ``{"index.npz": ...}``).
        cbr_info: JSON-serialisable dict stored as ``cbr.json`` (how the model was built).
        source: how to name the model in error messages (e.g. its path).

    Returns:
        The new model's bytes. The same inputs always give the same bytes.

    Raises:
        CbrError: the model is not such a classifier, or an argument is invalid.
    """
    extra_files = dict(extra_files or {})
    labels = check_labels(labels)
    model = _parse_model(tflite_bytes, source)
    try:
        input_type, outputs = _check_classifier(model, len(labels), source, tflite_bytes)
    except _DAMAGE:
        raise CbrError(f"{source} is not a cbr-lite model: the TFLite file is damaged") from None
    mean = _check_floats(mean, "mean")
    std = _check_floats(std, "std")
    if len(mean) != len(std):
        raise CbrError(f"mean has {len(mean)} value(s) but std has {len(std)}: give 3 of each (or 1 of each)")
    if any(s <= 0 for s in std):
        raise CbrError(f"std must be positive, got {std}")

    files = {LABELS_FILE: ("\n".join(labels) + "\n").encode("utf-8")}
    if cbr_info is not None:
        try:
            text = json.dumps(cbr_info, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise CbrError(f"cbr_info cannot be stored as JSON: {error}") from None
        files[CBR_INFO_FILE] = (text + "\n").encode("utf-8")
    for file_name, data in sorted(extra_files.items()):
        if not isinstance(file_name, str) or not _ZIP_NAME.match(file_name):
            raise CbrError(
                f"associated file name {file_name!r} is not allowed: use letters, digits, '.', '_', '-'"
            )
        if file_name in files:
            raise CbrError(f"associated file name {file_name!r} is reserved by cbr-lite: rename it")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise CbrError(f"associated file {file_name!r} must be bytes, got {type(data).__name__}")
        files[file_name] = bytes(data)

    metadata = _build_metadata(
        name=str(name),
        description=str(description),
        mean=mean,
        std=std,
        uint8_input=input_type == tfl.TensorType.UINT8,
        extra_names=sorted(n for n in files if n != LABELS_FILE),
        outputs=outputs,
    )
    try:
        model_bytes = _pack_model_with_metadata(model, metadata)
    except _DAMAGE:
        raise CbrError(f"{source} is not a cbr-lite model: the TFLite file is damaged") from None
    return _append_zip(model_bytes, files)


def _check_floats(values, what):
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        raise CbrError(f"{what} must be 1 or 3 numbers, got {values!r}") from None
    if len(values) not in (1, 3) or not all(math.isfinite(v) for v in values):
        raise CbrError(f"{what} must be 1 or 3 finite numbers, got {values}")
    return values


def output_names(tflite_bytes) -> list[str]:
    """The names of a .tflite model's outputs (from its signature), in the order of its output tensors."""
    model = tfl.Model.GetRootAs(tflite_bytes, 0)
    graph = model.Subgraphs(0)
    if not model.SignatureDefsLength():
        return [f"output_{i}" for i in range(graph.OutputsLength())]
    signature = model.SignatureDefs(0)
    by_tensor = {signature.Outputs(i).TensorIndex(): signature.Outputs(i).Name().decode()
                 for i in range(signature.OutputsLength())}
    return [by_tensor.get(graph.Outputs(i), f"output_{i}") for i in range(graph.OutputsLength())]


def _check_classifier(model, num_labels, source, tflite_bytes):
    """Checks the model is one image in and class scores out; returns (input type, output names).

    The output names are ``["scores"]`` for one score vector, else one of :data:`TOP_K_LAYOUTS`."""
    if model.SubgraphsLength() < 1:
        raise CbrError(f"{source} is not a cbr-lite model: it has no subgraph")
    graph = model.Subgraphs(0)
    names = output_names(tflite_bytes) if graph.OutputsLength() > 1 else ["scores"]
    if graph.InputsLength() != 1 or (graph.OutputsLength() != 1 and names not in TOP_K_LAYOUTS):
        raise CbrError(
            f"{source} has {graph.InputsLength()} inputs and {graph.OutputsLength()} outputs: an image classifier "
            f"needs one input and one output (or the outputs {', '.join(TOP_K_LAYOUTS[0])})"
        )
    image = graph.Tensors(graph.Inputs(0))
    shape = _shape(image)
    if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or min(shape[1:3]) < 1:
        raise CbrError(f"{source} takes input of shape {shape}: expected one RGB image (1, H, W, 3)")
    if image.Type() not in (tfl.TensorType.FLOAT32, tfl.TensorType.UINT8):
        raise CbrError(f"{source} takes {_type_name(image.Type())} images: expected float32 or uint8")
    for index, name in enumerate(names):
        tensor = graph.Tensors(graph.Outputs(index))
        out_shape = _shape(tensor)
        if len(out_shape) != 2 or out_shape[0] != 1:
            raise CbrError(f"{source} outputs shape {out_shape}: expected scores (1, num_classes)")
        if tensor.Type() != tfl.TensorType.FLOAT32:
            raise CbrError(f"{source} outputs {_type_name(tensor.Type())} scores: expected float32")
        wanted = num_labels if name in ("scores", CLASS_SCORES) else min(out_shape[1], num_labels)
        if out_shape[1] != wanted:
            raise CbrError(f"{source} outputs {out_shape[1]} {'scores' if wanted == num_labels else name} but "
                           f"{num_labels} labels were given")
    return image.Type(), names


def _build_metadata(*, name, description, mean, std, uint8_input, extra_names, outputs=("scores",)):
    """The ``ModelMetadata`` FlatBuffer (identifier M001), built with the generated object API."""
    if uint8_input:
        low, high = [0.0], [255.0]
    else:
        low = [(0.0 - m) / s for m, s in zip(mean * (3 // len(mean)), std * (3 // len(std)))]
        high = [(255.0 - m) / s for m, s in zip(mean * (3 // len(mean)), std * (3 // len(std)))]
    image = schema.TensorMetadataT(
        name="image", description="RGB image, normalised as (pixel - mean) / std.",
        content=schema.ContentT(contentPropertiesType=schema.ContentProperties.ImageProperties,
                                contentProperties=schema.ImagePropertiesT(colorSpace=schema.ColorSpaceType.RGB)),
        processUnits=[schema.ProcessUnitT(optionsType=schema.ProcessUnitOptions.NormalizationOptions,
                                          options=schema.NormalizationOptionsT(mean=mean, std=std))],
        stats=schema.StatsT(max=high, min=low),
    )
    described = {
        "scores": ("scores", "One score per class; the highest is the prediction."),
        CLASS_SCORES: ("scores", "One score per class; the highest is the prediction (classes the search did not "
                                 "reach have the lowest float)."),
        TOP_CLASSES: (TOP_CLASSES, "The best classes' numbers (float32), best first; -1 where fewer were found."),
        TOP_SCORES: (TOP_SCORES, "The scores of top_classes, in the same order."),
    }
    axis = ("Class names, one per score.", schema.AssociatedFileType.TENSOR_AXIS_LABELS)
    labels_for = {"scores": axis, CLASS_SCORES: axis,
                  TOP_CLASSES: ("Class names, one per class number.", schema.AssociatedFileType.TENSOR_VALUE_LABELS)}
    results = [
        schema.TensorMetadataT(
            name=described[output][0], description=described[output][1],
            content=schema.ContentT(contentPropertiesType=schema.ContentProperties.FeatureProperties,
                                    contentProperties=schema.FeaturePropertiesT()),
            associatedFiles=[_associated_file(LABELS_FILE, *labels_for[output])] if output in labels_for else None,
        )
        for output in outputs
    ]
    root = schema.ModelMetadataT(
        name=name, description=description, minParserVersion=MIN_PARSER_VERSION,
        subgraphMetadata=[schema.SubGraphMetadataT(inputTensorMetadata=[image], outputTensorMetadata=results)],
        associatedFiles=[_associated_file(n, "cbr-lite data", schema.AssociatedFileType.UNKNOWN)
                         for n in extra_names] or None,
    )
    b = flatbuffers.Builder(1024)
    b.Finish(root.Pack(b), file_identifier=METADATA_IDENTIFIER)
    return bytes(b.Output())


def _associated_file(file_name, description, file_type):
    return schema.AssociatedFileT(name=file_name, description=description, type=file_type)


class _AlignedBuffer:
    """A model buffer that packs its bytes 16-byte aligned, as the TFLite converter writes them."""

    def __init__(self, data):
        self.data = data

    def Pack(self, builder):  # noqa: N802 - the name the generated ModelT.Pack calls
        data_offset = None
        if self.data is not None:
            payload = bytes(self.data)
            # Public Builder calls only (the ones generated code makes): pad so that the bytes about to be
            # written start 16-byte aligned, then write them as one byte vector (which needs only 4).
            builder.Prep(_BUFFER_ALIGN, len(payload))
            data_offset = builder.CreateByteVector(payload)
        tfl.BufferStart(builder)
        if data_offset is not None:
            tfl.BufferAddData(builder, data_offset)
        return tfl.BufferEnd(builder)


def _pack_model_with_metadata(model, metadata):
    """Rebuilds the model FlatBuffer with `metadata` in its TFLITE_METADATA buffer."""
    model_t = tfl.ModelT.InitFromObj(model)
    buffers = model_t.buffers or []
    if any((buf.offset or 0) > 1 for buf in buffers):
        raise CbrError("models that keep weights outside the FlatBuffer (over 2 GB) are not supported")
    model_t.metadata = model_t.metadata or []
    entry = next((m for m in model_t.metadata if m.name == METADATA_NAME.encode()), None)
    if entry is None:
        entry = tfl.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(buffers)
        buffers.append(tfl.BufferT())
        model_t.metadata.append(entry)
    buffers[entry.buffer].data = metadata
    model_t.buffers = buffers
    return pack_model(model_t)


def pack_model(model_t):
    """The bytes of a TFLite model (object API ``ModelT``), buffers 16-byte aligned as the converter writes
    them. ``model_t`` is not changed."""
    buffers = model_t.buffers or []
    aligned = copy.copy(model_t)
    aligned.buffers = [_AlignedBuffer(buf.data) for buf in buffers]
    size = sum(len(buf.data) for buf in buffers if buf.data is not None)
    b = flatbuffers.Builder(size + 65536)
    b.Finish(aligned.Pack(b), file_identifier=MODEL_IDENTIFIER)
    return bytes(b.Output())


def _append_zip(model_bytes, files):
    """Appends `files` as an uncompressed ZIP; offsets count from the start of the whole file."""
    return zip_bytes(files, prefix=model_bytes)


def zip_bytes(files, prefix=b""):
    """``prefix`` followed by an uncompressed ZIP archive of ``files`` (``{name: bytes}``, sorted by name),
    with fixed dates and attributes so the same files always give the same bytes on every OS.

    Offsets in the archive count from the start of ``prefix``, as the TFLite metadata populator writes
    them (the model comes first, its packed files after it).
    """
    stream = io.BytesIO()
    stream.write(prefix)
    # Mode "w" on a stream positioned at the end writes there with offsets from the start of the file,
    # as the official populator's mode "a" does; "a" would also search the weights for a ZIP end record.
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_STORED) as archive:
        for file_name in sorted(files):
            info = zipfile.ZipInfo(file_name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3  # Unix, whatever OS writes it
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[file_name])
    return stream.getvalue()


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def read_metadata(tflite_bytes, *, source="the model"):
    """Read a cbr-lite model's metadata back (or any TFLite image classifier's, e.g. from Model Maker).

    Returns:
        A dict with ``name``, ``description``, ``labels`` (list of str), ``mean`` and ``std`` (lists of
        float), ``input_size`` ``(height, width)``, ``input_dtype`` ("float32" or "uint8"),
        ``num_classes``, ``min_parser_version``, ``outputs`` (the output tensors' metadata names: ``["scores"]``,
        or with a top-K output ``["scores", "top_classes", "top_scores"]`` / ``["top_classes", "top_scores"]``),
        ``associated_files`` (sorted names packed in the model) and ``cbr_info`` (the parsed ``cbr.json``, or None).

    Raises:
        CbrError: not a TFLite model, no image-classifier metadata, or a damaged file.

    Example::

        info = read_metadata(Path("pets.tflite").read_bytes(), source="pets.tflite")
        info["labels"], info["mean"], info["std"], info["input_size"]   # (['cat', 'dog'], ...)
    """
    try:
        return _read_metadata(tflite_bytes, source)
    except _DAMAGE:
        raise CbrError(f"{source} is damaged: its TFLite metadata or packed files cannot be read") from None


def read_associated_file(tflite_bytes, name, *, source="the model"):
    """Return the bytes of file `name` packed in the model (e.g. ``"labels.txt"``, ``"index.npz"``).

    Raises:
        CbrError: not a TFLite model, no packed files, no file of that name, or a damaged file.
    """
    _parse_model(tflite_bytes, source)
    archive = _open_zip(tflite_bytes, source)
    limit = min(MAX_PACKED_BYTES.get(name, len(tflite_bytes)), len(tflite_bytes))
    try:
        with archive:
            if name not in archive.namelist():
                names = ", ".join(printable(repr(n)) for n in sorted(archive.namelist())[:20])
                raise CbrError(f"{source} has no packed file {name!r}; it has {names}")
            member = archive.getinfo(name)
            if member.file_size > limit:
                raise CbrError(f"{source}: its packed file {name!r} is {member.file_size:,} bytes, more than the "
                               f"{limit:,} bytes cbr-lite reads for it; the file is damaged or not a cbr-lite model")
            with archive.open(member) as file:
                data = file.read(limit + 1)  # the header's size is the archive's word: read no more than the limit
            if len(data) > limit:
                raise CbrError(f"{source}: its packed file {name!r} is larger than the {limit:,} bytes cbr-lite "
                               "reads for it; the file is damaged or not a cbr-lite model")
            return data
    except _DAMAGE:
        raise CbrError(f"{source} is damaged: its packed file {name!r} cannot be read") from None


# Errors that reading a damaged FlatBuffer or ZIP raises: the Python FlatBuffers code has no verifier,
# so a flipped byte shows up as a bad offset, a short buffer or an impossible value.
# RecursionError: json.loads of a cbr.json nested 100,000 lists deep.
_DAMAGE = (
    AttributeError, EOFError, IndexError, KeyError, NotImplementedError, OverflowError, RecursionError,
    TypeError, ValueError, struct.error, zipfile.BadZipFile, zlib.error,
)


def _read_metadata(tflite_bytes, source):
    model = _parse_model(tflite_bytes, source)
    root, size = _metadata_root(model, source)
    subgraphs = _items(root, "SubgraphMetadata", size)
    inputs = _items(subgraphs[0], "InputTensorMetadata", size) if subgraphs else []
    outputs = _items(subgraphs[0], "OutputTensorMetadata", size) if subgraphs else []
    mean = std = None
    for unit in _items(inputs[0], "ProcessUnits", size) if inputs else []:
        if unit.OptionsType() == schema.ProcessUnitOptions.NormalizationOptions and unit.Options() is not None:
            norm = schema.NormalizationOptions()
            norm.Init(unit.Options().Bytes, unit.Options().Pos)
            mean, std = _floats(norm.MeanAsNumpy()), _floats(norm.StdAsNumpy())
    # The labels: those of a score vector's axis (in image classifiers, output 0), else those of a class-number
    # output's values (a top-K output only); which output the axis labels belong to is kept for the check below.
    label_files = [
        (f.Type(), index, _text(f.Name()))
        for index, output in enumerate(outputs)
        for f in _items(output, "AssociatedFiles", size)
        if f.Type() in (schema.AssociatedFileType.TENSOR_AXIS_LABELS, schema.AssociatedFileType.TENSOR_VALUE_LABELS)
    ]
    label_files.sort(key=lambda entry: entry[0] != schema.AssociatedFileType.TENSOR_AXIS_LABELS)
    label_names = [name for _, _, name in label_files]
    if not mean or not std or not label_names:
        raise CbrError(
            f"{source} has TFLite metadata but not an image classifier's (normalisation and labels.txt)"
        )

    packed = _zip_names(tflite_bytes, source)
    labels_text = read_associated_file(tflite_bytes, label_names[0], source=source).decode("utf-8")
    # One label per line; a final newline ends the last line (MediaPipe reads it the same way), and a
    # "\r" before it comes from files written on Windows.
    labels = [line.removesuffix("\r") for line in labels_text.split("\n")]
    if labels[-1] == "":
        labels.pop()
    graph = model.Subgraphs(0)
    image = graph.Tensors(graph.Inputs(0))
    shape = _shape(image)
    if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or not 1 <= min(shape[1:3]) <= max(shape[1:3]) <= MAX_INPUT_SIDE:
        raise CbrError(f"{source} takes input of shape {shape}: not one RGB image (1, H, W, 3) with sides of at "
                       f"most {MAX_INPUT_SIDE} pixels")
    kind, labelled, _ = label_files[0]
    if kind == schema.AssociatedFileType.TENSOR_AXIS_LABELS:  # one label per score (class numbers need no check)
        scores_shape = _shape(graph.Tensors(graph.Outputs(labelled))) if labelled < graph.OutputsLength() else []
        if not scores_shape or scores_shape[-1] != len(labels):
            raise CbrError(
                f"{source} has {len(labels)} labels in {label_names[0]} but its output has shape {scores_shape}: "
                "the labels do not fit the model"
            )
    cbr_info = None
    if CBR_INFO_FILE in packed:
        cbr_info = json.loads(read_associated_file(tflite_bytes, CBR_INFO_FILE, source=source))
    return {
        "name": _text(root.Name()),
        "description": _text(root.Description()),
        "min_parser_version": _text(root.MinParserVersion()),
        "labels": labels,
        "mean": mean,
        "std": std,
        "input_size": (shape[1], shape[2]),
        "input_dtype": _type_name(image.Type()),
        "num_classes": len(labels),
        "outputs": [_text(output.Name()) for output in outputs],
        "associated_files": packed,
        "cbr_info": cbr_info,
    }


def _open_zip(tflite_bytes, source):
    try:
        return zipfile.ZipFile(io.BytesIO(tflite_bytes))
    except zipfile.BadZipFile:
        raise CbrError(f"{source} has no packed files (labels.txt, ...): add metadata with cbr-lite") from None


def _zip_names(tflite_bytes, source):
    with _open_zip(tflite_bytes, source) as archive:
        return sorted(archive.namelist())


def _parse_model(tflite_bytes, source):
    """Returns the root ``Model`` table, or raises CbrError for anything that is not a TFLite file."""
    if not isinstance(tflite_bytes, (bytes, bytearray)):
        raise CbrError(f"{source} must be given as bytes, got {type(tflite_bytes).__name__}")
    data = bytes(tflite_bytes)
    if len(data) < 16 or data[4:8] != MODEL_IDENTIFIER:
        raise CbrError(f"{source} is not a cbr-lite model: not a TFLite file (no 'TFL3' identifier)")
    try:
        model = tfl.Model.GetRootAs(data, 0)
        model.SubgraphsLength()
        model.BuffersLength()
    except (IndexError, struct.error):
        raise CbrError(f"{source} is not a cbr-lite model: the TFLite file is damaged") from None
    return model


def _metadata_root(model, source):
    """Returns the ModelMetadata table stored in the model's TFLITE_METADATA buffer, and that buffer's size."""
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_NAME.encode():
            data = model.Buffers(entry.Buffer()).DataAsNumpy()
            if isinstance(data, int):  # the generated code returns 0 for an empty buffer
                break
            data = data.tobytes()
            if len(data) < 8 or data[4:8] != METADATA_IDENTIFIER:
                break
            return schema.ModelMetadata.GetRootAs(data, 0), len(data)
    raise CbrError(f"{source} is not a cbr-lite model: it has no TFLite metadata (make it with cbr-lite)")


def _items(table, field, size):
    """The tables of a vector field (``table.Field(i)`` for ``i < table.FieldLength()``); a length that
    would run past the end of the ``size``-byte buffer is damage, not a reason to loop a billion times."""
    length = getattr(table, f"{field}Length")()
    if 4 * length > size:
        raise IndexError(f"the {field} vector runs past the end of the metadata")
    return [getattr(table, field)(i) for i in range(length)]


def _floats(values):
    """A float vector's values as Python floats (the generated code gives 0 for a missing vector)."""
    return [] if isinstance(values, int) else [float(v) for v in values]


def _text(value):
    return value.decode("utf-8") if value else ""


def _shape(tensor):
    return [int(d) for d in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []


def _type_name(tensor_type):
    names = {v: k.lower() for k, v in vars(tfl.TensorType).items() if not k.startswith("_")}
    return names.get(tensor_type, f"type {tensor_type}")
