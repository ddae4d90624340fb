"""The figures of notebooks 04-06 (bars, score histograms, acceptance curve) draw what they are given."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from cbr_lite import plotting  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_bars_have_one_bar_and_one_value_label_per_value():
    figure = plotting.show_bars(["float32", "float16", "int8"], [2400.0, 1200.0, 620.0], "Model size", "KiB",
                                value_format="{:.0f}", reference=1000.0, reference_label="budget")
    axis = figure.axes[0]
    heights = [patch.get_height() for patch in axis.patches]
    assert heights == [2400.0, 1200.0, 620.0]
    assert [text.get_text() for text in axis.texts] == ["2400", "1200", "620"]
    assert [label.get_text() for label in axis.get_xticklabels()] == ["float32", "float16", "int8"]
    assert axis.get_title() == "Model size" and axis.get_ylabel() == "KiB"
    assert axis.get_ylim()[1] > 2400.0


def test_bars_draw_error_bars_and_reject_mismatched_lengths():
    figure = plotting.show_bars(["a", "b"], [0.5, 0.8], "acc", "accuracy", errors=[0.05, 0.02])
    assert len(figure.axes[0].collections) == 1  # the error-bar line collection
    with pytest.raises(ValueError, match="2 labels but 3 values"):
        plotting.show_bars(["a", "b"], [1, 2, 3], "t", "y")


def test_score_histograms_count_every_query_on_shared_bins():
    known, unknown = np.linspace(0.5, 1.0, 40), np.linspace(0.1, 0.7, 30)
    figure = plotting.show_score_histograms(known, unknown, threshold=0.6, bins=10)
    axis = figure.axes[0]
    # 10 bars per histogram, fractions of each set: they add up to 1 and match counting by hand.
    heights = np.array([patch.get_height() for patch in axis.patches])
    assert len(heights) == 20
    assert heights[:10].sum() == pytest.approx(1.0) and heights[10:].sum() == pytest.approx(1.0)
    edges = np.histogram_bin_edges(np.concatenate([known, unknown]), bins=10)
    assert heights[:10] == pytest.approx(np.histogram(known, edges)[0] / 40)
    assert heights[10:] == pytest.approx(np.histogram(unknown, edges)[0] / 30)
    assert [line.get_xdata()[0] for line in axis.lines] == [0.6]
    labels = [text.get_text() for text in axis.get_legend().get_texts()]
    assert sorted(labels) == ["known classes (40 queries)", "threshold 0.600", "unknown classes (30 queries)"]


def test_acceptance_curve_plots_the_rates_and_the_chosen_point():
    unknown_rate, known_rate = np.array([1.0, 0.5, 0.1, 0.0]), np.array([1.0, 0.9, 0.7, 0.0])
    figure = plotting.show_acceptance_curve(unknown_rate, known_rate, chosen=(0.1, 0.7))
    axis = figure.axes[0]
    curve, diagonal, point = axis.lines
    assert np.array_equal(curve.get_xdata(), unknown_rate) and np.array_equal(curve.get_ydata(), known_rate)
    assert list(diagonal.get_xdata()) == [0, 1]
    assert (point.get_xdata()[0], point.get_ydata()[0]) == (0.1, 0.7)
    assert "unknown" in axis.get_xlabel() and "known" in axis.get_ylabel()
