"""Tests for cbr_lite.metadata: TFLite metadata written by hand must run in LiteRT and load in MediaPipe."""

import importlib
import io
import json
import os
import sys
import types
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as tfl
from ai_edge_litert.interpreter import Interpreter

from cbr_lite.errors import CbrError
from cbr_lite.images import resize
from cbr_lite.metadata import add_metadata, read_associated_file, read_metadata

# Spaces (even a trailing one), commas and any Unicode are kept verbatim by every reader.
LABELS = ["red thing ", "green, leafy", "blåbær 🫐 (blue)"]
MEAN = [127.5, 120.0, 110.0]
STD = [127.5, 60.0, 64.0]
SIZE = 32


def _convert(model, mode):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "uint8_input":
        rng = np.random.default_rng(0)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [rng.uniform(-2, 2, (1, SIZE, SIZE, 3)).astype(np.float32)] for _ in range(8)
        )
        converter.inference_input_type = tf.uint8
    return converter.convert()


@pytest.fixture(scope="module")
def keras_model():
    """Mean colour -> one score per colour: the class is the dominant normalised channel."""
    import keras

    image = keras.Input((SIZE, SIZE, 3), batch_size=1)
    pooled = keras.layers.GlobalAveragePooling2D()(image)
    # A dense layer big enough that dynamic-range quantisation (>= 1024 weights) applies to it.
    hidden = keras.layers.Dense(
        512, use_bias=False, kernel_initializer=keras.initializers.Constant(np.tile(np.eye(3), (1, 171))[:, :512])
    )(pooled)
    kernel = np.zeros((512, 3), np.float32)
    kernel[np.arange(512), np.arange(512) % 3] = 1.0 / 171
    scores = keras.layers.Dense(3, use_bias=False, kernel_initializer=keras.initializers.Constant(kernel))(hidden)
    return keras.Model(image, scores)


@pytest.fixture(scope="module")
def float_model(keras_model):
    return _convert(keras_model, "float32")


@pytest.fixture(scope="module")
def with_metadata(float_model):
    return add_metadata(
        float_model,
        labels=LABELS,
        mean=MEAN,
        std=STD,
        name="tiny colours",
        description="Mean colour classifier for tests.",
        extra_files={"index.npz": b"\x00\x01binary", "notes.txt": "ünïcode".encode()},
        cbr_info={"embedder": "glyph-cnn", "aggregation": "max", "k": [1, 2]},
    )


def _run(model_bytes, batch):
    interpreter = Interpreter(model_content=model_bytes)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def test_runs_unchanged_in_litert(float_model, with_metadata):
    batch = np.random.default_rng(1).normal(size=(1, SIZE, SIZE, 3)).astype(np.float32)
    assert len(with_metadata) > len(float_model)
    np.testing.assert_array_equal(_run(with_metadata, batch), _run(float_model, batch))


def test_round_trip(with_metadata):
    info = read_metadata(with_metadata)
    assert info["labels"] == LABELS
    np.testing.assert_allclose(info["mean"], MEAN)
    np.testing.assert_allclose(info["std"], STD)
    assert info["input_size"] == (SIZE, SIZE)
    assert info["input_dtype"] == "float32"
    assert info["num_classes"] == 3
    assert info["name"] == "tiny colours"
    assert info["description"] == "Mean colour classifier for tests."
    assert info["min_parser_version"] == "1.0.0"
    assert info["associated_files"] == ["cbr.json", "index.npz", "labels.txt", "notes.txt"]
    assert info["cbr_info"] == {"embedder": "glyph-cnn", "aggregation": "max", "k": [1, 2]}
    assert read_associated_file(with_metadata, "index.npz") == b"\x00\x01binary"
    assert read_associated_file(with_metadata, "notes.txt").decode() == "ünïcode"
    labels_txt = read_associated_file(with_metadata, "labels.txt").decode("utf-8")
    assert labels_txt == "\n".join(LABELS) + "\n"


def test_deterministic_and_replaces_old_metadata(float_model, with_metadata):
    again = add_metadata(
        float_model,
        labels=LABELS,
        mean=MEAN,
        std=STD,
        name="tiny colours",
        description="Mean colour classifier for tests.",
        extra_files={"notes.txt": "ünïcode".encode(), "index.npz": b"\x00\x01binary"},
        cbr_info={"k": [1, 2], "aggregation": "max", "embedder": "glyph-cnn"},
    )
    assert again == with_metadata
    relabelled = add_metadata(with_metadata, labels=["a", "b", "c"], mean=[0.0], std=[1.0], name="n", description="")
    fresh = add_metadata(float_model, labels=["a", "b", "c"], mean=[0.0], std=[1.0], name="n", description="")
    assert relabelled == fresh
    info = read_metadata(relabelled)
    assert info["labels"] == ["a", "b", "c"] and info["associated_files"] == ["labels.txt"]
    assert info["cbr_info"] is None and info["mean"] == [0.0]


def test_zip_entries_are_stored_with_fixed_dates(with_metadata):
    with zipfile.ZipFile(io.BytesIO(with_metadata)) as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.compress_type for i in infos} == {zipfile.ZIP_STORED}
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    # Offsets count from the start of the model file, as MediaPipe's zip reader expects.
    assert all(with_metadata[i.header_offset : i.header_offset + 4] == b"PK\x03\x04" for i in infos)


def test_weight_buffers_stay_16_byte_aligned(with_metadata):
    model = tfl.Model.GetRootAs(with_metadata, 0)
    starts = []
    for i in range(model.BuffersLength()):
        table = model.Buffers(i)._tab
        if model.Buffers(i).DataLength():
            starts.append(table.Vector(table.Offset(4)))
    assert len(starts) >= 3  # two kernels and the metadata
    assert all(start % 16 == 0 for start in starts)


@pytest.mark.parametrize("mode", ["float16", "dynamic", "uint8_input"])
def test_quantised_models_get_metadata(keras_model, float_model, mode):
    quantised = _convert(keras_model, mode)
    assert quantised != float_model
    labelled = add_metadata(quantised, labels=LABELS, mean=MEAN, std=STD, name="q", description=mode)
    info = read_metadata(labelled)
    assert info["labels"] == LABELS
    assert info["input_dtype"] == ("uint8" if mode == "uint8_input" else "float32")
    rng = np.random.default_rng(2)
    if mode == "uint8_input":
        batch = rng.integers(0, 256, (1, SIZE, SIZE, 3), dtype=np.uint8)
    else:
        batch = rng.normal(size=(1, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_array_equal(_run(labelled, batch), _run(quantised, batch))


@pytest.mark.parametrize(
    "labels, message",
    [
        (["a", "two\nlines", "c"], "line break"),
        (["a", "cr\r", "c"], "line break"),
        (["a", "line\u2028separator", "c"], "line break"),
        (["a", "next\x85line", "c"], "line break"),
        (["a", "", "c"], "empty"),
        (["a", "   ", "c"], "empty"),
        (["a", "b"], "3 scores but 2 labels"),
        ("abc", "not one string"),
    ],
)
def test_bad_labels_are_rejected(float_model, labels, message):
    with pytest.raises(CbrError, match=message) as caught:
        add_metadata(float_model, labels=labels, mean=MEAN, std=STD, name="n", description="d")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"std": [1.0, 0.0, 1.0]}, "positive"),
        ({"mean": [1.0, 2.0]}, "1 or 3"),
        ({"mean": [0.0], "std": [1.0, 1.0, 1.0]}, r"mean has 1 value\(s\) but std has 3"),
        ({"extra_files": {"labels.txt": b"x"}}, "reserved"),
        ({"extra_files": {"../evil": b"x"}}, "not allowed"),
        ({"extra_files": {"notes.txt": "text, not bytes"}}, "must be bytes, got str"),
        ({"cbr_info": {"bad": float("nan")}}, "JSON"),
    ],
)
def test_bad_arguments_are_rejected(float_model, kwargs, message):
    arguments = dict(labels=LABELS, mean=MEAN, std=STD, name="n", description="d") | kwargs
    with pytest.raises(CbrError, match=message):
        add_metadata(float_model, **arguments)


def test_non_models_are_rejected(float_model):
    for junk in [b"", b"not a model at all, just some text", b"\x89PNG\r\n\x1a\n" + bytes(100)]:
        with pytest.raises(CbrError, match="photo.png is not a cbr-lite model"):
            read_metadata(junk, source="photo.png")
        with pytest.raises(CbrError, match="is not a cbr-lite model"):
            add_metadata(junk, labels=LABELS, mean=MEAN, std=STD, name="n", description="d")
    with pytest.raises(CbrError, match="model.tflite is not a cbr-lite model: it has no TFLite metadata"):
        read_metadata(float_model, source="model.tflite")
    with pytest.raises(CbrError, match="model.tflite has no packed files"):
        read_associated_file(float_model, "labels.txt", source="model.tflite")


def test_missing_associated_file(with_metadata):
    with pytest.raises(CbrError, match="no packed file 'index.json'"):
        read_associated_file(with_metadata, "index.json")


def test_damaged_files_give_one_line_cbr_errors(with_metadata):
    """Flipped bytes and cut-off files: a CbrError naming the file, or (in the weights) a clean read."""
    rng = np.random.default_rng(3)
    errors = 0
    for trial in range(300):
        data = bytearray(with_metadata)
        if trial % 3 == 0:
            data = data[: rng.integers(0, len(data))]
        else:
            for position in rng.integers(0, len(data), size=trial % 5 + 1):
                data[position] = rng.integers(0, 256)
        try:
            info = read_metadata(bytes(data), source="broken.tflite")
        except CbrError as error:
            errors += 1
            assert str(error).startswith("broken.tflite") and "\n" not in str(error)
        else:
            assert len(info["labels"]) == info["num_classes"]
    assert errors > 100  # every cut-off file at least


def _repack(model_bytes, files):
    """The model with its packed files replaced, zipped by the standard library (as another tool would)."""
    with zipfile.ZipFile(io.BytesIO(model_bytes)) as archive:
        network_end = min(info.header_offset for info in archive.infolist())
    stream = io.BytesIO(model_bytes[:network_end])
    stream.seek(network_end)
    with zipfile.ZipFile(stream, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return stream.getvalue()


def test_labels_that_do_not_fit_the_model_are_refused(float_model):
    """A labels.txt edited by hand (a line more than the model has scores) is caught when reading."""
    labelled = add_metadata(float_model, labels=["a", "b", "c"], mean=[0.0], std=[1.0], name="n", description="")
    assert read_metadata(_repack(labelled, {"labels.txt": b"a\nb\nc\n"}))["labels"] == ["a", "b", "c"]
    with pytest.raises(CbrError, match="m.tflite has 4 labels in labels.txt but its output has shape \\[1, 3\\]"):
        read_metadata(_repack(labelled, {"labels.txt": b"a\nb\nc\nd"}), source="m.tflite")
    # Written on Windows, and without a final newline: still three labels, as MediaPipe reads them.
    assert read_metadata(_repack(labelled, {"labels.txt": b"a\r\nb \r\nc"}))["labels"] == ["a", "b ", "c"]
    with pytest.raises(CbrError, match="has no packed file 'labels.txt'"):
        read_metadata(_repack(labelled, {"other.txt": b"a\nb\nc\n"}))


# --------------------------------------------------------------------------------------------------
# Independent readers: MediaPipe's schema code, its C++ FlatBuffers parser, and its ImageClassifier.
# mediapipe is an optional test dependency (its wheels are not made for every platform).
# --------------------------------------------------------------------------------------------------

# The normalisation every cbr-lite embedder uses has one value for all channels, as MediaPipe needs.
MP_MEAN, MP_STD = [127.5] * 3, [127.5] * 3


def _metadata_buffer(model_bytes):
    model = tfl.Model.GetRootAs(model_bytes, 0)
    entries = [model.Metadata(i) for i in range(model.MetadataLength())]
    entry = next(e for e in entries if e.Name() == b"TFLITE_METADATA")
    return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()


def test_mediapipe_schema_code_reads_it(with_metadata):
    """MediaPipe's generated schema code (its object API) sees what we meant to write."""
    schema = pytest.importorskip("mediapipe.tasks.metadata.metadata_schema_py_generated")
    buffer = _metadata_buffer(with_metadata)
    assert schema.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0)
    meta = schema.ModelMetadataT.InitFromObj(schema.ModelMetadata.GetRootAs(buffer, 0))
    assert meta.minParserVersion == b"1.0.0"
    image = meta.subgraphMetadata[0].inputTensorMetadata[0]
    assert image.content.contentPropertiesType == schema.ContentProperties.ImageProperties
    assert image.content.contentProperties.colorSpace == schema.ColorSpaceType.RGB
    assert image.processUnits[0].optionsType == schema.ProcessUnitOptions.NormalizationOptions
    np.testing.assert_allclose(image.processUnits[0].options.mean, MEAN)
    np.testing.assert_allclose(image.processUnits[0].options.std, STD)
    np.testing.assert_allclose(image.stats.min, [(0 - m) / s for m, s in zip(MEAN, STD)], rtol=1e-6)
    np.testing.assert_allclose(image.stats.max, [(255 - m) / s for m, s in zip(MEAN, STD)], rtol=1e-6)
    scores = meta.subgraphMetadata[0].outputTensorMetadata[0]
    assert scores.content.contentPropertiesType == schema.ContentProperties.FeatureProperties
    assert [(f.name, f.type) for f in scores.associatedFiles] == [
        (b"labels.txt", schema.AssociatedFileType.TENSOR_AXIS_LABELS)
    ]
    assert sorted(f.name for f in meta.associatedFiles) == [b"cbr.json", b"index.npz", b"notes.txt"]


def _import_mediapipe_metadata(monkeypatch):
    """``mediapipe.tasks.python.metadata.metadata``, the module with MediaPipe's metadata displayer.

    In mediapipe 1.2.2 it imports ``mediapipe.tasks.cc.metadata.python._pywrap_metadata_version``, a
    compiled module the wheel does not ship (the whole ``mediapipe.tasks.cc`` package is missing), so the
    import fails. Only the metadata *populator* calls it; the displayer parses with ``libmediapipe.so``.
    If that exact module is missing we stand in an empty one for the import and nothing else.
    """
    pytest.importorskip("mediapipe")
    name = "mediapipe.tasks.python.metadata.metadata"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith("mediapipe.tasks.cc"):
            raise
    monkeypatch.delitem(sys.modules, name, raising=False)
    for package in ["mediapipe.tasks.cc", "mediapipe.tasks.cc.metadata", "mediapipe.tasks.cc.metadata.python",
                    "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"]:
        monkeypatch.setitem(sys.modules, package, types.ModuleType(package))
    module = importlib.import_module(name)
    monkeypatch.delitem(sys.modules, name)  # don't leave the stand-in's module behind for other tests
    return module


def test_mediapipe_displayer_reads_it(with_metadata, monkeypatch):
    """MediaPipe's displayer turns the metadata into JSON with FlatBuffers' C++ parser and the .fbs schema:
    a reader that shares none of our hand-written offsets."""
    metadata = _import_mediapipe_metadata(monkeypatch)
    displayer = metadata.MetadataDisplayer.with_model_buffer(with_metadata)
    assert sorted(displayer.get_packed_associated_file_list()) == ["cbr.json", "index.npz", "labels.txt", "notes.txt"]
    assert displayer.get_associated_file_buffer("labels.txt").decode() == "\n".join(LABELS) + "\n"
    meta = json.loads(displayer.get_metadata_json())
    assert meta["name"] == "tiny colours" and meta["min_parser_version"] == "1.0.0"
    assert sorted(f["name"] for f in meta["associated_files"]) == ["cbr.json", "index.npz", "notes.txt"]
    image = meta["subgraph_metadata"][0]["input_tensor_metadata"][0]
    assert image["content"] == {
        "content_properties_type": "ImageProperties", "content_properties": {"color_space": "RGB"}
    }
    (unit,) = image["process_units"]
    assert unit["options_type"] == "NormalizationOptions"
    np.testing.assert_allclose(unit["options"]["mean"], MEAN)
    np.testing.assert_allclose(unit["options"]["std"], STD)
    scores = meta["subgraph_metadata"][0]["output_tensor_metadata"][0]
    assert scores["content"]["content_properties_type"] == "FeatureProperties"
    assert scores["associated_files"] == [
        {"name": "labels.txt", "description": "Class names, one per score.", "type": "TENSOR_AXIS_LABELS"}
    ]


def _mediapipe_classifier(model_bytes):
    pytest.importorskip("mediapipe")
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_buffer=model_bytes), max_results=-1)
    return vision.ImageClassifier.create_from_options(options)


def _colour_images():
    """Noisy images of three sizes, each with one channel raised: the top class is clear."""
    rng = np.random.default_rng(4)
    images = []
    for channel, (height, width) in enumerate([(45, 70), (SIZE, SIZE), (100, 20)]):
        image = rng.integers(0, 256, (height, width, 3))
        image[..., channel] += 120
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return images


@pytest.mark.parametrize("mode", ["float32", "dynamic"])
def test_mediapipe_image_classifier_agrees_with_litert(keras_model, float_model, mode, tmp_path):
    """MediaPipe loads the file as written, normalises with our mean/std and names the classes as we do."""
    mp = pytest.importorskip("mediapipe")

    network = float_model if mode == "float32" else _convert(keras_model, mode)
    labelled = add_metadata(network, labels=LABELS, mean=MP_MEAN, std=MP_STD, name="n", description=mode)
    path = tmp_path / "tiny.tflite"
    path.write_bytes(labelled)
    with _mediapipe_classifier(path.read_bytes()) as classifier:
        for image in _colour_images():
            pixels = resize(image, (SIZE, SIZE)).astype(np.float32)
            expected = _run(labelled, ((pixels - MP_MEAN) / MP_STD)[None].astype(np.float32))[0]
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=image))
            categories = result.classifications[0].categories
            assert categories[0].category_name == LABELS[int(np.argmax(expected))]
            by_index = {c.index: c for c in categories}
            assert [by_index[i].category_name for i in range(3)] == LABELS
            scores = [by_index[i].score for i in range(3)]
            # cbr_lite.images.resize reproduces MediaPipe's resampling (tests/test_mediapipe_parity.py), so
            # resized or not, only float round-off differs.
            np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert path.read_bytes() == labelled


def test_mediapipe_needs_one_mean_and_std_for_all_channels(with_metadata):
    """Per-channel normalisation is valid metadata (the Task Library uses it) but mediapipe 1.2.2 refuses it:
    its C++ image preprocessing has a TODO there. If a newer MediaPipe accepts it, it must agree with us."""
    mp = pytest.importorskip("mediapipe")

    try:
        classifier = _mediapipe_classifier(with_metadata)
    except NotImplementedError as error:
        assert str(error) == "Per-channel image normalization is not available."
        return
    image = _colour_images()[1]
    expected = _run(with_metadata, ((image.astype(np.float32) - MEAN) / STD)[None].astype(np.float32))[0]
    with classifier:
        result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=image))
    scores = sorted(result.classifications[0].categories, key=lambda c: c.index)
    np.testing.assert_allclose([c.score for c in scores], expected, atol=1e-5)


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_mediapipe_classifies_a_cbr_lite_model_as_litert_does(quantize):
    """A whole cbr-lite classifier file (retrieval layers, cbr.json, index.npz) from the builder, unchanged."""
    mp = pytest.importorskip("mediapipe")
    import tiny_embedder

    from cbr_lite.builder import classifier_file_from_index
    from cbr_lite.classifier import Classifier

    embedder = tiny_embedder.load_tiny_embedder()
    names = sorted(tiny_embedder.COLOURS)
    index = [tiny_embedder.colour_image(tiny_embedder.COLOURS[n], seed=10 * c + s) for c, n in enumerate(names)
             for s in range(3)]
    embeddings = embedder.model.predict_on_batch(embedder.preprocess(index))
    data = classifier_file_from_index(embedder, embeddings, np.repeat(np.arange(3), 3), names, quantize=quantize)
    # One query at the embedder's own input size (no resampling), one resampled: the same pixels either way.
    queries = [tiny_embedder.colour_image(tiny_embedder.COLOURS[n], seed=100 + c, size=size)
               for c, n in enumerate(names) for size in [tiny_embedder.SIZE, (50, 31)]]
    expected = Classifier(data).scores(queries)
    with _mediapipe_classifier(data) as classifier:
        for query, want in zip(queries, expected):
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=query))
            categories = sorted(result.classifications[0].categories, key=lambda c: c.index)
            assert [c.category_name for c in categories] == names
            got = np.array([c.score for c in categories])
            assert np.argmax(got) == np.argmax(want)
            np.testing.assert_allclose(got, want, atol=1e-5)
