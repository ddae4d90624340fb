"""Saying "unknown": reject a query whose best class score is below a threshold chosen from data.

A CbR model always answers with one of its classes, even for an image of something it was never shown.
The best class score (the cosine similarity of the closest index image, with ``max`` aggregation) tells
how sure it is: images of indexed classes usually score higher than images of other things. Pick a
threshold from two sets of *calibration* queries,

- ``known``: best scores of queries from classes that are in the index (they should be accepted),
- ``unknown``: best scores of queries from classes that are not (they should be rejected),

then answer "unknown" whenever the best score is below it. The same rules apply to any other score that
should be high for known queries, such as the :func:`top_two_margin` (best minus second-best class score:
how clearly the winner beats the runner-up). Which threshold is best depends on what a
mistake costs, so :func:`choose_threshold` takes a stated rule:

- ``keep_known=None`` (default): maximise Youden's J, the fraction of known queries accepted minus the
  fraction of unknown queries accepted (the point of a ROC curve farthest above the diagonal);
- ``keep_known=0.95``: the highest threshold that still accepts at least 95% of known queries, i.e.
  reject as many unknowns as possible without turning away more than 5% of the images we can classify.

>>> known, unknown = np.array([0.9, 0.8, 0.7, 0.6]), np.array([0.5, 0.65, 0.3])
>>> round(choose_threshold(known, unknown), 4)          # midway between 0.65 (unknown) and 0.7 (known)
0.675
>>> predict_or_unknown(np.array([[0.9, 0.1], [0.2, 0.3]]), 0.675).tolist()
[0, -1]
"""

from __future__ import annotations

import numpy as np

from cbr_lite.errors import CbrError

#: The class id :func:`predict_or_unknown` gives a rejected query.
UNKNOWN = -1


def _scores_1d(values, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise CbrError(f"{what} must be a non-empty list of best scores, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise CbrError(f"{what} contain NaN or infinity; check the scores they came from")
    return values


def acceptance_rates(known_best, unknown_best, thresholds=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each threshold, the fractions of known and of unknown queries accepted (best score >= threshold).

    Returns ``(thresholds, known_accepted, unknown_accepted)``, thresholds ascending. By default the
    thresholds are every distinct score plus one above the largest, so the curve runs from "accept
    everything" (1, 1) to "reject everything" (0, 0). Plotting ``known_accepted`` against
    ``unknown_accepted`` is the ROC curve of the "known vs unknown" decision.
    """
    known = _scores_1d(known_best, "known best scores")
    unknown = _scores_1d(unknown_best, "unknown best scores")
    if thresholds is None:
        everything = np.unique(np.concatenate([known, unknown]))
        thresholds = np.append(everything, np.nextafter(everything[-1], np.inf))
    thresholds = np.sort(np.asarray(thresholds, dtype=np.float64))
    # searchsorted on the sorted scores counts, for every threshold at once, the scores below it.
    known_accepted = 1.0 - np.searchsorted(np.sort(known), thresholds, side="left") / known.size
    unknown_accepted = 1.0 - np.searchsorted(np.sort(unknown), thresholds, side="left") / unknown.size
    return thresholds, known_accepted, unknown_accepted


def choose_threshold(known_best, unknown_best, keep_known: float | None = None) -> float:
    """The "unknown" threshold by a stated rule (see the module docstring); returns a float.

    ``keep_known=None`` maximises (known accepted - unknown accepted); ties go to the lowest such
    threshold. ``keep_known=q`` (0 < q <= 1) gives the highest threshold that accepts at least a
    fraction ``q`` of the known queries. The threshold is placed midway between the two neighbouring
    scores it separates, so that new queries scoring close to a calibration score are not decided by
    an accident of which calibration images were drawn.
    """
    known = _scores_1d(known_best, "known best scores")
    unknown = _scores_1d(unknown_best, "unknown best scores")
    thresholds, known_accepted, unknown_accepted = acceptance_rates(known, unknown)
    if keep_known is None:
        best = int(np.argmax(known_accepted - unknown_accepted))
    else:
        if not 0.0 < keep_known <= 1.0:
            raise CbrError(f"keep_known must be a fraction in (0, 1], got {keep_known}")
        # Rates fall as the threshold rises: the last threshold still keeping enough known queries.
        best = int(np.flatnonzero(known_accepted >= keep_known - 1e-12)[-1])
    if best == 0:
        return float(thresholds[0])
    # Midway between this threshold (the lowest accepted score) and the score just below it.
    return float((thresholds[best] + thresholds[best - 1]) / 2.0)


def top_two_margin(scores) -> np.ndarray:
    """The best minus the second-best class score of each query: ``(queries, classes)`` -> ``(queries,)``.

    A small margin means two classes match about equally well (an ambiguous answer); a large one, that the
    winner stands out. It needs at least two classes.

    >>> top_two_margin(np.array([[0.9, 0.2, 0.7], [0.5, 0.5, 0.1]])).round(3).tolist()
    [0.2, 0.0]
    """
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise CbrError(f"scores must be a (queries, classes) array with at least 2 classes, got shape {scores.shape}")
    top_two = np.partition(scores, scores.shape[1] - 2, axis=1)[:, -2:]
    return top_two[:, 1] - top_two[:, 0]


def predict_or_unknown(scores, threshold: float) -> np.ndarray:
    """Class ids ``(queries,)`` from class scores ``(queries, classes)``, with :data:`UNKNOWN` (-1) where
    the best score is below ``threshold``.

    >>> predict_or_unknown(np.array([[0.2, 0.8], [0.4, 0.1]]), threshold=0.5).tolist()
    [1, -1]
    """
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise CbrError(f"scores must be a (queries, classes) array, got shape {scores.shape}")
    predicted = np.argmax(scores, axis=1)
    return np.where(scores.max(axis=1) >= threshold, predicted, UNKNOWN)
