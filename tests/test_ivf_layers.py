"""Tests for cbr_lite.ivf_layers on hand-made lists: what each layer of the IVF head computes."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from cbr_lite.ivf_layers import PADDING_SCORE, FoundClassScores, InvertedListSearch, TopClasses

LOWEST = np.finfo(np.float32).min


def hand_made_search():
    """Three lists of lengths 2, 1, 3 over six 2-d rows (int8 with scales), classes 0..3."""
    vectors = np.array([[100, 0], [0, 100], [50, 50], [-100, 0], [0, -100], [70, 70]], dtype=np.int8)
    scales = np.array([0.01, 0.01, 0.0141, 0.01, 0.01, 0.0101], dtype=np.float32)
    classes = np.array([0, 1, 2, 3, 3, 1], dtype=np.int32)
    layer = InvertedListSearch(images=6, dim=2, nlist=3, nprobe=2, list_length=3, num_classes=4)
    layer.set_lists(vectors, scales, classes, starts=[0, 2, 3], sizes=[2, 1, 3])
    return layer, vectors.astype(np.float32) * scales[:, None], classes


def test_search_scores_the_rows_of_the_probed_lists_and_pads_the_short_ones():
    layer, rows, classes = hand_made_search()
    query = np.array([[0.6, 0.8]], dtype=np.float32)
    centre_scores = np.array([[0.9, 0.1, 0.5]], dtype=np.float32)  # probes lists 0 and 2, in that order
    scores, found = (np.asarray(t) for t in layer([query, centre_scores]))
    assert scores.shape == found.shape == (1, 6)
    # List 0 (rows 0, 1) padded to 3 slots, then list 2 (rows 3, 4, 5).
    np.testing.assert_allclose(scores[0, [0, 1, 3, 4, 5]], rows[[0, 1, 3, 4, 5]] @ query[0], atol=1e-6)
    assert scores[0, 2] == PADDING_SCORE and found[0].tolist() == [0, 1, 4, 3, 3, 1]


def test_top_classes_keeps_each_class_once_with_its_best_score():
    scores = np.array([[0.9, 0.8, 0.7, 0.6, PADDING_SCORE]], dtype=np.float32)
    classes = np.array([[2, 2, 2, 5, 9]], dtype=np.int32)
    top_classes, top_scores = (np.asarray(t) for t in TopClasses(k=2, shots=3)([scores, classes]))
    assert top_classes.tolist() == [[2.0, 5.0]]
    np.testing.assert_allclose(top_scores, [[0.9, 0.6]])


def test_found_class_scores_takes_each_class_max_and_gives_the_rest_the_lowest_float():
    scores = np.array([[0.1, 0.7, 0.3, PADDING_SCORE], [0.2, 0.2, 0.9, 0.4]], dtype=np.float32)
    classes = np.array([[1, 1, 0, 3], [2, 0, 2, 1]], dtype=np.int32)
    full = np.asarray(FoundClassScores(num_classes=3)([scores, classes]))
    np.testing.assert_allclose(full, [[0.3, 0.7, LOWEST], [0.2, 0.4, 0.9]])
