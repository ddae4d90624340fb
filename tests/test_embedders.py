"""Embedders by name: the registry, preprocessing, determinism, and every loading path offline."""

import json
import sys
import warnings

import keras
import numpy as np
import pytest

import cbr_lite.embedders as embedders
from cbr_lite.embedders import (DEFAULT_EMBEDDER, Embedder, _import_tensorflow_hub, available_embedders, load_embedder,
                                load_glyph_cnn, load_mobilenet_v3_small, register_embedder)
from cbr_lite.errors import CbrError
from cbr_lite.images import resize

COMMITTED_GLYPH_CNN = embedders.DATA_DIR / "embedders" / "glyph_cnn.keras"


def random_images(count, seed=0):
    """uint8 RGB images of different sizes."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(12 + 3 * i, 20 - i, 3), dtype=np.uint8) for i in range(count)]


def test_registry_lists_every_name_with_a_description():
    names = available_embedders()
    assert {"glyph-cnn", "default", "mobilenet-v3-small", "hub:HANDLE"} <= set(names)
    assert DEFAULT_EMBEDDER in names and all(isinstance(text, str) and text for text in names.values())
    registered = [name for name in names if name != "hub:HANDLE"]
    assert registered == sorted(registered)


def test_registered_factories_get_the_options(monkeypatch):
    monkeypatch.setattr(embedders, "_REGISTRY", dict(embedders._REGISTRY))
    calls = []
    register_embedder("recorder", lambda **options: calls.append(options) or "made", "tests only")
    assert load_embedder("recorder", size=3) == "made" and calls == [{"size": 3}]
    assert available_embedders()["recorder"] == "tests only"


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(CbrError, match="unknown embedder 'resnet'; choose one of: ") as error:
        load_embedder("resnet")
    for name in ["glyph-cnn", "mobilenet-v3-small", "hub:HANDLE"]:
        assert name in str(error.value)


def test_preprocess_resizes_and_normalises(tiny_test_embedder):
    images = random_images(3)
    batch = tiny_test_embedder.preprocess(images)
    assert batch.shape == (3, 16, 16, 3) and batch.dtype == np.float32
    expected = (resize(images[1], (16, 16)).astype(np.float64) - 127.5) / 127.5
    np.testing.assert_allclose(batch[1], expected, atol=1e-6)


def test_embed_gives_raw_float32_rows_in_the_given_order(tiny_test_embedder):
    images = random_images(5)
    embeddings = tiny_test_embedder.embed(images)
    assert embeddings.shape == (5, tiny_test_embedder.dim) == (5, 16) and embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, tiny_test_embedder.model.predict_on_batch(
        tiny_test_embedder.preprocess(images)), atol=1e-6)
    # Raw, not normalised.
    assert not np.allclose(np.linalg.norm(embeddings, axis=1), 1.0)
    np.testing.assert_array_equal(tiny_test_embedder.embed(images[::-1]), embeddings[::-1])
    np.testing.assert_array_equal(tiny_test_embedder.embed(images), embeddings)


def test_batch_size_does_not_change_embeddings_and_progress_counts_images(tiny_test_embedder):
    images = random_images(5, seed=1)
    done = []
    in_twos = tiny_test_embedder.embed(images, batch_size=2, progress=done.append)
    assert done == [2, 2, 1]
    np.testing.assert_allclose(in_twos, tiny_test_embedder.embed(images), atol=1e-6)


def test_embedding_nothing_gives_an_empty_matrix(tiny_test_embedder):
    empty = tiny_test_embedder.embed([])
    assert empty.shape == (0, 16) and empty.dtype == np.float32


def write_glyph_files(folder, model, info):
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "glyph_cnn.keras")
    (folder / "glyph_cnn.json").write_text(json.dumps(info))


@pytest.fixture(scope="module")
def saved_glyph_cnn(tmp_path_factory):
    """A small CNN saved in the glyph-cnn file format, and the model it came from."""
    keras.utils.set_random_seed(0)
    image = keras.Input((24, 20, 3))
    features = keras.layers.Conv2D(4, 3, activation="relu")(image)
    embedding = keras.layers.Dense(8)(keras.layers.GlobalAveragePooling2D()(features))
    model = keras.Model(image, embedding)
    data = tmp_path_factory.mktemp("data")
    write_glyph_files(data / "embedders", model, {"input_size": [24, 20], "mean": [10.0, 20.0, 30.0],
                                                  "std": [50.0, 60.0, 70.0]})
    return data, model


def test_glyph_cnn_loads_from_its_two_files(saved_glyph_cnn):
    data, model = saved_glyph_cnn
    embedder = load_glyph_cnn(data)
    assert embedder.name == "glyph-cnn" and embedder.input_size == (24, 20) and embedder.dim == 8
    assert embedder.mean == (10.0, 20.0, 30.0) and embedder.std == (50.0, 60.0, 70.0)
    images = random_images(3)
    batch = embedder.preprocess(images)
    expected = (np.stack([resize(i, (24, 20)) for i in images]) - [10.0, 20.0, 30.0]) / [50.0, 60.0, 70.0]
    np.testing.assert_allclose(batch, expected, atol=1e-5)
    np.testing.assert_allclose(embedder.embed(images), model.predict_on_batch(batch), atol=1e-6)


def test_glyph_cnn_and_default_load_from_the_data_folder(saved_glyph_cnn, monkeypatch):
    data, model = saved_glyph_cnn
    monkeypatch.setattr(embedders, "DATA_DIR", data)
    images = random_images(2)
    by_name, by_alias = load_embedder("glyph-cnn"), load_embedder("default")
    np.testing.assert_array_equal(by_name.embed(images), by_alias.embed(images))


def test_missing_glyph_cnn_files_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(CbrError, match="glyph_cnn.keras: the glyph-cnn weights are missing; run scripts/"):
        load_glyph_cnn(tmp_path)


@pytest.mark.parametrize("damage", ["lfs pointer", "bad json", "missing key"])
def test_damaged_glyph_cnn_files_are_a_one_line_error(tmp_path, saved_glyph_cnn, damage):
    data, model = saved_glyph_cnn
    folder = tmp_path / "embedders"
    write_glyph_files(folder, model, {"input_size": [24, 20], "mean": [0, 0, 0], "std": [1, 1, 1]})
    if damage == "lfs pointer":
        (folder / "glyph_cnn.keras").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\n")
    elif damage == "bad json":
        (folder / "glyph_cnn.json").write_text("{input_size: 64")
    else:
        (folder / "glyph_cnn.json").write_text(json.dumps({"input_size": [24, 20]}))
    with pytest.raises(CbrError, match="glyph-cnn files are damaged") as error:
        load_glyph_cnn(tmp_path)
    assert "\n" not in str(error.value)


@pytest.mark.skipif(not COMMITTED_GLYPH_CNN.exists(), reason="data/embedders/glyph_cnn.keras not committed yet")
def test_committed_glyph_cnn_embeds_deterministically():
    embedder = load_embedder(DEFAULT_EMBEDDER)
    info = json.loads(COMMITTED_GLYPH_CNN.with_suffix(".json").read_text())
    assert embedder.input_size == tuple(info["input_size"]) and embedder.model.input_shape[1:3] == embedder.input_size
    images = random_images(3)
    first = embedder.embed(images)
    assert first.shape == (3, embedder.dim) and first.dtype == np.float32 and np.all(np.isfinite(first))
    np.testing.assert_array_equal(load_embedder(DEFAULT_EMBEDDER).embed(images), first)
    assert np.linalg.norm(first, axis=1).min() > 0
    assert not np.allclose(first[0], first[1]), "different images must not collapse to one embedding"
    assert embedder.dim == info.get("embedding_dim", embedder.dim)


def test_mobilenet_v3_small_without_weights_works_offline():
    embedder = load_mobilenet_v3_small(weights=None, input_size=32)
    assert embedder.name == "mobilenet-v3-small" and embedder.dim == 576 and embedder.input_size == (32, 32)
    # The model rescales [0, 255] pixels itself, so preprocessing leaves them as they are.
    images = random_images(2)
    np.testing.assert_array_equal(embedder.preprocess(images), np.stack([resize(i, (32, 32)) for i in images]))
    assert embedder.embed(images).shape == (2, 576)


def test_a_failed_download_names_the_offline_default(monkeypatch):
    def no_internet(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3] "
                        "Temporary failure in name resolution")

    import keras.src.utils.file_utils

    monkeypatch.setattr(keras.src.utils.file_utils, "get_file", no_internet)
    monkeypatch.setattr(keras.utils, "get_file", no_internet)
    with pytest.raises(CbrError, match=f"use the offline default embedder '{DEFAULT_EMBEDDER}' instead") as error:
        load_embedder("mobilenet-v3-small")
    assert "\n" not in str(error.value) and "URL fetch failure" in str(error.value)


def test_a_bad_mobilenet_size_says_what_is_wrong():
    with pytest.raises(CbrError, match="at least 32x32"):
        load_mobilenet_v3_small(weights=None, input_size=16)


@pytest.fixture(scope="module")
def saved_model_folder(tmp_path_factory):
    """A TF2 SavedModel taking RGB images in [0, 1]: the channel means times a fixed 3x4 matrix."""
    import tensorflow as tf

    class ChannelMeans(tf.Module):
        def __init__(self):
            super().__init__()
            self.mix = tf.Variable(np.arange(12, dtype=np.float32).reshape(3, 4) - 5)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def __call__(self, images):
            return tf.matmul(tf.reduce_mean(images, axis=[1, 2]), self.mix)

    folder = tmp_path_factory.mktemp("hub") / "channel_means"
    tf.saved_model.save(ChannelMeans(), str(folder))
    return folder


def test_hub_embedder_from_a_local_saved_model(saved_model_folder):
    embedder = load_embedder(f"hub:{saved_model_folder}", input_size=16)
    assert isinstance(embedder, Embedder) and embedder.name == f"hub:{saved_model_folder}"
    assert embedder.input_size == (16, 16) and embedder.dim == 4
    images = random_images(3)
    pixels = np.stack([resize(i, (16, 16)) for i in images]) / 255.0
    expected = pixels.mean(axis=(1, 2)) @ (np.arange(12).reshape(3, 4) - 5)
    np.testing.assert_allclose(embedder.embed(images), expected, atol=1e-5)


@pytest.mark.parametrize("make, reason", [
    (lambda folder: folder / "no_such_model", "does not exist"),
    (lambda folder: folder, "saved_model.pb"),                      # a folder, but not a SavedModel
])
def test_local_hub_handles_that_cannot_be_loaded_say_why_and_never_blame_the_network(tmp_path, make, reason):
    handle = make(tmp_path)
    with pytest.raises(CbrError, match=f"could not load TF Hub model .*{reason}.*SavedModel folder") as error:
        load_embedder(f"hub:{handle}")
    message = str(error.value)
    assert "\n" not in message and str(handle) in message and "internet" not in message


def test_online_hub_handles_that_cannot_be_reached_point_to_the_offline_embedder():
    # Port 9 on the loopback address refuses at once, here and on any machine, with or without a network.
    with pytest.raises(CbrError, match=r"URLError.*need the internet.*use the offline default") as error:
        load_embedder("hub:http://127.0.0.1:9/model.tar.gz")
    assert "\n" not in str(error.value)


def test_a_broken_tensorflow_hub_installation_is_named_not_blamed_on_the_network(monkeypatch, saved_model_folder):
    # What a Python 3.12+ venv without setuptools < 82 did: tensorflow_hub's own import fails.
    monkeypatch.delitem(sys.modules, "tensorflow_hub", raising=False)
    monkeypatch.setitem(sys.modules, "pkg_resources", None)
    with pytest.raises(CbrError, match=r"tensorflow_hub cannot be imported .*pkg_resources.*setuptools>=70,<82") as error:
        load_embedder(f"hub:{saved_model_folder}")
    assert "internet" not in str(error.value) and "\n" not in str(error.value)


def test_tensorflow_hub_imports_without_a_warning(monkeypatch):
    # Imported afresh, with the pkg_resources it finds (the setuptools that cbr-lite's range installed).
    for name in ("tensorflow_hub", "pkg_resources"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _import_tensorflow_hub()
