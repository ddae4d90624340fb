"""cbr-lite: classification by retrieval, taught in notebooks and shipped as TFLite models.

The public names, grouped by the idea they belong to (one module each). Importing the package is
light: each name is imported from its module on first use (PEP 562), so ``cbr-lite --help`` and
``cbr-lite classify`` never import TensorFlow, and a notebook's first cell
(:func:`cbr_lite.notebook.setup_notebook`) can say what is wrong with TensorFlow before anything
imports it.

>>> import cbr_lite
>>> cbr_lite.cosine_similarity([[1.0, 0.0]], [[0.0, 2.0]])      # imports cbr_lite.similarity now
array([[0.]], dtype=float32)
"""

import importlib

from cbr_lite.version import VERSION as __version__

#: Where each public name lives.
_MODULES = {
    "albums": ("Albums", "expand_inputs", "find_albums", "load_albums"),
    "builder": ("add_classes", "build_classifier_file", "remove_classes"),
    "classifier": ("Classifier", "classify"),
    "classifier_file": ("read_classifier_file",),
    "embedders": ("DEFAULT_EMBEDDER", "Embedder", "available_embedders", "load_embedder"),
    "errors": ("CbrError",),
    "export": ("LiteRTModel", "to_tflite"),
    "images": ("load_image",),
    "layers": ("ClassAggregation", "L2Normalize", "PerClassSelectMax", "class_grid"),
    "retrieval": ("build_classifier", "build_retrieval_head", "nearest_neighbour_layer"),
    "quantization": ("Int8NearestNeighbours", "quantize_index"),
    "similarity": ("class_scores", "cosine_similarity", "l2_normalize", "squared_l2"),
    "thresholds": ("choose_threshold", "predict_or_unknown"),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_HOME)


def __getattr__(name):
    if name not in _HOME:
        raise AttributeError(f"module 'cbr_lite' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"cbr_lite.{_HOME[name]}"), name)
    globals()[name] = value  # the next lookup does not come here
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
