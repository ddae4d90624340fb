"""Tests for cbr_lite.thresholds: acceptance rates counted by hand, both threshold rules, "unknown" answers."""

import numpy as np
import pytest

from cbr_lite.errors import CbrError
from cbr_lite.thresholds import UNKNOWN, acceptance_rates, choose_threshold, predict_or_unknown, top_two_margin


def test_acceptance_rates_match_counting_by_hand():
    known, unknown = [0.9, 0.7, 0.5], [0.6, 0.2]
    thresholds, known_rate, unknown_rate = acceptance_rates(known, unknown)
    for t, k, u in zip(thresholds, known_rate, unknown_rate):
        assert k == pytest.approx(np.mean(np.array(known) >= t))
        assert u == pytest.approx(np.mean(np.array(unknown) >= t))
    # The curve runs from "accept everything" to "reject everything".
    assert (known_rate[0], unknown_rate[0]) == (1.0, 1.0)
    assert (known_rate[-1], unknown_rate[-1]) == (0.0, 0.0)
    assert np.all(np.diff(thresholds) > 0)


def test_separable_scores_give_a_threshold_between_them():
    rng = np.random.default_rng(0)
    known, unknown = rng.uniform(0.7, 1.0, 50), rng.uniform(0.0, 0.6, 80)
    threshold = choose_threshold(known, unknown)
    assert unknown.max() < threshold < known.min()
    assert threshold == pytest.approx((unknown.max() + known.min()) / 2)
    predicted = predict_or_unknown(np.stack([np.concatenate([known, unknown]), np.zeros(130)], axis=1), threshold)
    assert np.all(predicted[:50] == 0) and np.all(predicted[50:] == UNKNOWN)


def test_youden_rule_maximises_accepted_known_minus_accepted_unknown():
    rng = np.random.default_rng(1)
    known, unknown = rng.normal(0.7, 0.1, 300), rng.normal(0.5, 0.1, 300)
    threshold = choose_threshold(known, unknown)
    j = np.mean(known >= threshold) - np.mean(unknown >= threshold)
    # No threshold on a fine grid does better.
    grid = np.linspace(0.0, 1.2, 2001)
    best_on_grid = max(np.mean(known >= t) - np.mean(unknown >= t) for t in grid)
    assert j >= best_on_grid - 1e-12
    # Two overlapping normals with equal spread: the best threshold is near the midpoint of the means.
    assert abs(threshold - 0.6) < 0.05


def test_keep_known_rule_keeps_the_asked_fraction_and_no_more():
    rng = np.random.default_rng(2)
    known, unknown = rng.normal(0.7, 0.1, 200), rng.normal(0.5, 0.1, 200)
    for keep in (0.5, 0.9, 0.95, 1.0):
        threshold = choose_threshold(known, unknown, keep_known=keep)
        assert np.mean(known >= threshold) >= keep
        # Rejecting even the lowest-scoring accepted known query would drop below the asked fraction.
        lowest_accepted = known[known >= threshold].min()
        assert np.mean(known > lowest_accepted) < keep
    # Keeping more known queries means a lower threshold.
    assert choose_threshold(known, unknown, keep_known=0.99) < choose_threshold(known, unknown, keep_known=0.8)


def test_everything_accepted_when_unknowns_score_highest():
    # Unknowns above every known: J is never positive, the lowest threshold (accept all) ties best.
    assert choose_threshold([0.1, 0.2], [0.8, 0.9]) == pytest.approx(0.1)


def test_bad_inputs_raise_one_line_errors():
    with pytest.raises(CbrError, match="non-empty"):
        choose_threshold([], [0.1])
    with pytest.raises(CbrError, match="NaN"):
        choose_threshold([0.5, np.nan], [0.1])
    with pytest.raises(CbrError, match="keep_known"):
        choose_threshold([0.5], [0.1], keep_known=1.5)
    with pytest.raises(CbrError, match="queries, classes"):
        predict_or_unknown(np.zeros(3), 0.5)


def test_top_two_margin_is_best_minus_second_best_counted_by_hand():
    rng = np.random.default_rng(2)
    scores = rng.uniform(-1, 1, size=(50, 7)).astype(np.float32)
    margins = top_two_margin(scores)
    for row, margin in zip(scores, margins):
        ranked = sorted(row.tolist(), reverse=True)
        assert margin == pytest.approx(ranked[0] - ranked[1], abs=1e-6)
    assert margins.shape == (50,) and np.all(margins >= 0)
    # A tie for first place is a margin of 0, whichever column holds the winners; two classes suffice.
    assert top_two_margin(np.array([[0.3, 0.8, 0.8], [0.8, 0.1, 0.8]])).tolist() == [0.0, 0.0]
    assert top_two_margin(np.array([[0.25, 0.75]])).tolist() == [0.5]
    # Margins are scores like any other: the threshold rules apply to them unchanged.
    threshold = choose_threshold(top_two_margin([[0.9, 0.1], [0.8, 0.2]]), top_two_margin([[0.5, 0.45]]))
    assert 0.05 < threshold < 0.6


@pytest.mark.parametrize("scores", [np.zeros((3, 1)), np.zeros(4), np.zeros((2, 3, 2))])
def test_top_two_margin_refuses_scores_without_two_classes(scores):
    with pytest.raises(CbrError, match="at least 2 classes"):
        top_two_margin(scores)
