"""cbr-lite: classification by retrieval, taught in notebooks and shipped as TFLite models.

The public names, grouped by the idea they belong to (one module each).
"""

# TensorFlow writes start-up lines to stderr even at TF_CPP_MIN_LOG_LEVEL=3; import it first, quietly,
# so that the CLI and the notebooks (whose stderr nbval compares) stay clean.
from cbr_lite.notebook import import_tensorflow_quietly

import_tensorflow_quietly()

from cbr_lite.albums import Albums, expand_inputs, find_albums, load_albums
from cbr_lite.builder import (
    Classifier, add_classes, build_classifier_file, classify, read_classifier_file, remove_classes,
)
from cbr_lite.embedders import DEFAULT_EMBEDDER, Embedder, available_embedders, load_embedder
from cbr_lite.errors import CbrError
from cbr_lite.export import LiteRTModel, to_tflite
from cbr_lite.images import load_image
from cbr_lite.layers import ClassAggregation, L2Normalize, PerClassSelectMax, class_grid
from cbr_lite.retrieval import build_classifier, build_retrieval_head, nearest_neighbour_layer
from cbr_lite.quantization import Int8NearestNeighbours, quantize_index
from cbr_lite.similarity import class_scores, cosine_similarity, l2_normalize, squared_l2
from cbr_lite.thresholds import choose_threshold, predict_or_unknown

__version__ = "0.1.0"

__all__ = [
    "Albums", "CbrError", "ClassAggregation", "Classifier", "DEFAULT_EMBEDDER", "Embedder", "Int8NearestNeighbours",
    "L2Normalize", "LiteRTModel", "PerClassSelectMax", "add_classes", "available_embedders", "build_classifier",
    "build_classifier_file", "build_retrieval_head", "choose_threshold", "class_grid",
    "class_scores", "classify", "cosine_similarity", "expand_inputs", "find_albums", "l2_normalize",
    "load_albums", "load_embedder", "load_image", "nearest_neighbour_layer", "predict_or_unknown",
    "quantize_index", "read_classifier_file", "remove_classes", "squared_l2", "to_tflite",
]
