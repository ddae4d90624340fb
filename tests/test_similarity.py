"""The NumPy reference maths: normalisation, the cosine / squared-L2 identity, per-class aggregation."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cbr_lite.errors import CbrError
from cbr_lite.similarity import (
    check_index, class_scores, cosine_similarity, l2_normalize, parse_aggregation, squared_l2,
)

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=64)


def vectors(rows, dim):
    return hnp.arrays(np.float64, (rows, dim), elements=finite)


@given(st.integers(1, 12).flatmap(lambda dim: vectors(2, dim)))
def test_squared_l2_of_unit_vectors_is_two_minus_twice_the_dot_product(pair):
    assume(np.all(np.abs(pair).max(axis=1) > 0))
    a, b = l2_normalize(pair)
    assert squared_l2(a, b)[0, 0] == pytest.approx(2 - 2 * float(a @ b), abs=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_ranking_by_cosine_equals_ranking_by_squared_l2(seed):
    rng = np.random.default_rng(seed)
    queries, index = rng.normal(size=(4, 8)), rng.normal(size=(30, 8))
    by_cosine = np.argsort(-cosine_similarity(queries, index), axis=1, kind="stable")
    by_distance = np.argsort(squared_l2(l2_normalize(queries), l2_normalize(index)), axis=1, kind="stable")
    np.testing.assert_array_equal(by_cosine, by_distance)


@given(vectors(3, 5))
def test_l2_normalize_gives_float32_unit_rows_in_the_same_direction(rows):
    assume(np.all(np.abs(rows).max(axis=1) > 0))
    unit = l2_normalize(rows)
    assert unit.dtype == np.float32 and unit.shape == rows.shape
    np.testing.assert_allclose(np.linalg.norm(unit.astype(np.float64), axis=1), 1.0, atol=1e-6)
    # Same direction: the original is a positive multiple of the unit row.
    norms = np.linalg.norm(rows / np.abs(rows).max(axis=1, keepdims=True), axis=1, keepdims=True)
    np.testing.assert_allclose(unit, rows / np.abs(rows).max(axis=1, keepdims=True) / norms, atol=1e-6)


@pytest.mark.parametrize("scale", [1e-200, 1e-30, 1e30, 1e200])
def test_l2_normalize_neither_underflows_nor_overflows(scale):
    # Squaring 1e-200 gives 0 and squaring 1e200 gives inf in float64: a naive norm fails both.
    unit = l2_normalize(np.array([3.0, 4.0]) * scale)
    np.testing.assert_allclose(unit, [0.6, 0.8], rtol=1e-6)


def test_l2_normalize_keeps_a_single_vector_one_dimensional():
    assert l2_normalize(np.array([0.0, 2.0])).tolist() == [0.0, 1.0]


def test_l2_normalize_refuses_a_zero_row_and_names_it():
    with pytest.raises(CbrError, match="row 2 is a zero vector"):
        l2_normalize(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_l2_normalize_refuses_nan_and_infinity(bad):
    with pytest.raises(CbrError, match="NaN or infinity"):
        l2_normalize(np.array([[1.0, 2.0], [bad, 1.0]]))


def test_cosine_similarity_matches_its_definition():
    rng = np.random.default_rng(1)
    queries, index = rng.normal(size=(3, 6)), rng.normal(size=(5, 6)) * 7
    expected = np.array([[q @ x / np.linalg.norm(q) / np.linalg.norm(x) for x in index] for q in queries])
    np.testing.assert_allclose(cosine_similarity(queries, index), expected, atol=1e-6)
    assert cosine_similarity(queries, index).shape == (3, 5)


def test_squared_l2_matches_a_loop():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(2, 4))
    expected = [[sum((x - y) ** 2) for y in b] for x in a]
    np.testing.assert_allclose(squared_l2(a, b), expected)


def brute_force_class_scores(similarities, labels, num_classes, aggregation):
    """One query at a time, one class at a time, with Python lists."""
    kind, k = parse_aggregation(aggregation)
    out = []
    for row in similarities:
        scores = []
        for c in range(num_classes):
            members = sorted((s for s, label in zip(row, labels) if label == c), reverse=True)
            if kind == "max":
                scores.append(members[0])
            elif kind == "mean":
                scores.append(sum(members) / len(members))
            else:
                scores.append(sum(members[:k]) / len(members[:k]))
        out.append(scores)
    return np.array(out)


@st.composite
def scored_index(draw):
    """Similarities (queries, images) and labels in which every class has 1 to 5 images, shuffled."""
    shots = draw(st.lists(st.integers(1, 5), min_size=2, max_size=5))
    labels = np.repeat(np.arange(len(shots)), shots)
    labels = draw(st.permutations(labels.tolist()))
    queries = draw(st.integers(1, 3))
    sims = draw(hnp.arrays(np.float32, (queries, len(labels)), elements=st.floats(-1, 1, width=32)))
    return sims, np.array(labels), len(shots)


@given(scored_index(), st.sampled_from(["max", "mean", "topk:1", "topk:2", "topk:3", "topk:9"]))
@settings(max_examples=60)
def test_class_scores_match_brute_force(index, aggregation):
    sims, labels, num_classes = index
    expected = brute_force_class_scores(sims.astype(np.float64), labels, num_classes, aggregation)
    got = class_scores(sims, labels, num_classes, aggregation)
    assert got.shape == (len(sims), num_classes) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_topk_one_is_max_and_topk_of_all_is_mean():
    rng = np.random.default_rng(3)
    sims, labels = rng.uniform(-1, 1, size=(2, 9)), np.array([0, 1, 2] * 3)
    np.testing.assert_allclose(class_scores(sims, labels, 3, "topk:1"), class_scores(sims, labels, 3, "max"))
    np.testing.assert_allclose(class_scores(sims, labels, 3, "topk:3"), class_scores(sims, labels, 3, "mean"),
                               atol=1e-6)


def test_class_scores_refuses_a_class_without_images():
    with pytest.raises(CbrError, match="class 2 has no index images"):
        class_scores(np.zeros((1, 3)), np.array([0, 1, 1]), 3)


@pytest.mark.parametrize("name, expected", [("max", ("max", 1)), ("mean", ("mean", 1)),
                                            ("topk:1", ("topk", 1)), ("topk:12", ("topk", 12))])
def test_parse_aggregation(name, expected):
    assert parse_aggregation(name) == expected


@pytest.mark.parametrize("name", ["min", "MAX", "", "topk", "topk:", "topk:0", "topk:-2", "topk:x", "topk:2.5",
                                  None, 3])
def test_parse_aggregation_refuses_anything_else_in_one_line(name):
    with pytest.raises(CbrError, match="use max, mean or topk:K") as error:
        parse_aggregation(name)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("embeddings, labels, message", [
    (np.ones((3, 4)), [0, 0, 0], "at least two classes"),
    (np.zeros((0, 4)), [], "non-empty"),
    (np.ones(4), [0, 1, 0, 1], "non-empty \\(images, dim\\)"),
    (np.ones((3, 4)), [0, 1], "3 index embeddings but 2 image labels"),
    (np.ones((2, 4)), [[0, 1]], "flat list of class numbers, got an array of shape \\(1, 2\\)"),
    (np.ones((2, 4)), [0.0, 1.0], "class numbers"),
    (np.ones((2, 4)), [-1, 1], "class numbers"),
    (np.ones((2, 4)), ["a", "b"], "class numbers"),
])
def test_check_index_refuses_bad_indexes(embeddings, labels, message):
    with pytest.raises(CbrError, match=message):
        check_index(embeddings, labels)


def test_check_index_returns_float32_embeddings_and_int_labels():
    embeddings, labels, num_classes = check_index(np.ones((3, 2), dtype=np.float64), [1, 0, 1])
    assert embeddings.dtype == np.float32 and labels.dtype == np.int32 and num_classes == 2
