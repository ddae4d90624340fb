"""The Keras retrieval layers against the NumPy reference of cbr_lite.similarity."""

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cbr_lite.errors import CbrError
from cbr_lite.layers import ClassAggregation, L2Normalize, PerClassSelectMax, class_grid
from cbr_lite.similarity import class_scores, l2_normalize

AGGREGATIONS = ["max", "mean", "topk:1", "topk:2", "topk:3", "topk:7"]


def run(layer, x):
    return np.asarray(layer(np.asarray(x, dtype=np.float32)))


@st.composite
def unequal_index(draw):
    """Labels with 1 to 6 images per class in shuffled order and (queries, images) cosine scores."""
    shots = draw(st.lists(st.integers(1, 6), min_size=2, max_size=6))
    labels = np.repeat(np.arange(len(shots)), shots)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    labels = rng.permutation(labels)
    return rng.uniform(-1, 1, size=(3, len(labels))).astype(np.float32), labels, len(shots)


@given(unequal_index(), st.sampled_from(AGGREGATIONS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_class_aggregation_equals_the_numpy_reference(index, aggregation):
    sims, labels, num_classes = index
    layer = ClassAggregation.from_labels(labels, num_classes, aggregation)
    np.testing.assert_allclose(run(layer, sims), class_scores(sims, labels, num_classes, aggregation), atol=1e-6)


@given(unequal_index())
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_per_class_select_max_equals_class_aggregation(index):
    sims, labels, num_classes = index
    reference = PerClassSelectMax.from_labels(labels, num_classes)
    np.testing.assert_array_equal(run(reference, sims), run(ClassAggregation.from_labels(labels, num_classes), sims))


def test_topk_ignores_padding_even_when_every_real_score_is_minus_one():
    # Class 1 has one image and is padded to 3 slots; its padding must not count as scores.
    labels = np.array([0, 0, 0, 1])
    sims = np.array([[-1.0, -1.0, -1.0, -1.0]], dtype=np.float32)
    for aggregation in ["mean", "topk:3"]:
        np.testing.assert_array_equal(run(ClassAggregation.from_labels(labels, 2, aggregation), sims), [[-1.0, -1.0]])


def test_class_grid_pads_with_the_first_image_and_masks_it():
    members, mask = class_grid(np.array([2, 0, 2, 2, 1]), 3)
    assert members.tolist() == [[1, 1, 1], [4, 4, 4], [0, 2, 3]]
    assert mask.tolist() == [[1, 0, 0], [1, 0, 0], [1, 1, 1]]
    assert members.dtype == np.int32 and mask.dtype == np.float32


def test_class_grid_refuses_an_empty_class_and_a_label_out_of_range():
    with pytest.raises(CbrError, match="class 1 has no index images"):
        class_grid(np.array([0, 2, 2]), 3)
    with pytest.raises(CbrError, match="label is 3, but there are only 3 classes"):
        class_grid(np.array([0, 1, 2, 3]), 3)


def test_per_class_select_max_refuses_an_empty_class():
    with pytest.raises(CbrError):
        PerClassSelectMax.from_labels(np.array([0, 0, 2]), 3)


@pytest.mark.parametrize("aggregation", ["min", "topk:0", "topk"])
def test_class_aggregation_refuses_unknown_aggregations(aggregation):
    with pytest.raises(CbrError, match="unknown aggregation"):
        ClassAggregation.from_labels(np.array([0, 1]), 2, aggregation)


def test_layers_rebuild_from_their_config():
    labels = np.array([1, 0, 1, 1])
    for layer in [ClassAggregation.from_labels(labels, 2, "topk:2"), PerClassSelectMax.from_labels(labels, 2)]:
        config = layer.get_config()
        copy = type(layer).from_config(config)
        assert copy.get_config() == config
    assert ClassAggregation.from_labels(labels, 2, "topk:2").get_config()["shots"] == 3


def test_l2_normalize_layer_equals_the_numpy_reference():
    x = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32) * [[1], [1e-3], [1e-20], [1e20], [3]]
    np.testing.assert_allclose(run(L2Normalize(), x), l2_normalize(x), atol=1e-6)


def test_l2_normalize_layer_leaves_the_zero_vector_zero():
    out = run(L2Normalize(), np.zeros((2, 4)))
    assert np.all(np.isfinite(out)) and not out.any()


def test_layers_report_their_output_shapes_symbolically():
    labels = np.array([0, 1, 1, 2])
    embedding = keras.Input((5,))
    unit = L2Normalize()(embedding)
    assert tuple(unit.shape) == (None, 5)
    scores = keras.Input((4,))
    assert tuple(ClassAggregation.from_labels(labels, 3, "topk:2")(scores).shape) == (None, 3)
    assert tuple(PerClassSelectMax.from_labels(labels, 3)(scores).shape) == (None, 3)
