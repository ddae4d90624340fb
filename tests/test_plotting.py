"""The notebooks' figures draw (Agg backend) with the layout and labels they promise."""

import matplotlib

matplotlib.use("Agg")

import keras  # noqa: E402
import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from cbr_lite import plotting  # noqa: E402
from cbr_lite.retrieval import build_retrieval_head  # noqa: E402

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def images(n, size=12):
    return [RNG.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def test_image_grid_has_one_cell_per_image_and_hides_the_rest():
    figure = plotting.show_images(images(5), titles=list("abcde"), columns=3, title="five")
    assert len(figure.axes) == 6
    shown = [axis for axis in figure.axes if axis.axison]
    assert [axis.get_xlabel() for axis in shown] == list("abcde")
    assert figure._suptitle.get_text() == "five"


def test_image_grid_rejects_mismatched_titles():
    with pytest.raises(ValueError, match="3 images but 2 titles"):
        plotting.show_images(images(3), titles=["a", "b"])


def test_neighbour_grid_is_queries_by_k_plus_one_with_coloured_frames():
    index = images(6)
    neighbours = np.array([[0, 3, 5], [1, 2, 4]])
    scores = np.array([[0.9, 0.5, 0.1], [0.8, 0.7, 0.2]])
    correct = np.array([[True, False, True], [False, True, True]])
    figure = plotting.show_neighbours(images(2), index, neighbours, scores,
                                      neighbour_titles=[f"class{i}" for i in range(6)], correct=correct)
    axes = np.array(figure.axes).reshape(2, 4)
    assert axes[0, 2].get_xlabel() == "class3\n0.500"
    assert axes[1, 1].get_xlabel() == "class1\n0.800"
    for (q, j), ok in np.ndenumerate(correct):
        colour = axes[q, j + 1].spines["left"].get_edgecolor()
        expected = plotting.CORRECT_COLOUR if ok else plotting.WRONG_COLOUR
        assert mcolors.same_color(colour, expected)


def test_neighbour_grid_checks_query_count():
    with pytest.raises(ValueError, match="1 query images but 2 rows"):
        plotting.show_neighbours(images(1), images(3), np.array([[0], [1]]))


def test_heatmap_draws_class_boundaries_and_labels():
    figure = plotting.show_heatmap(RNG.random((5, 5)), "t", "x", "y", "cos", boundaries=[2],
                                   tick_labels=["cat", "dog"])
    axis = figure.axes[0]
    assert (axis.get_title(), axis.get_xlabel(), axis.get_ylabel()) == ("t", "x", "y")
    assert [tick.get_text() for tick in axis.get_xticklabels()] == ["cat", "dog"]
    np.testing.assert_allclose(axis.get_xticks(), [0.5, 3.0])
    assert len(axis.lines) == 2  # one horizontal, one vertical line at the boundary
    assert figure.axes[1].get_ylabel() == "cos"


def test_heatmap_rejects_vectors():
    with pytest.raises(ValueError, match="2-D"):
        plotting.show_heatmap(np.ones(3), "t", "x", "y")


def test_confusion_matrix_counts_every_pair():
    true = RNG.integers(0, 4, 200)
    predicted = RNG.integers(0, 4, 200)
    counts = plotting.confusion_matrix(true, predicted, 4)
    for t in range(4):
        for p in range(4):
            assert counts[t, p] == np.sum((true == t) & (predicted == p))
    assert counts.sum() == 200


def test_confusion_matrix_figure_annotates_nonzero_cells():
    figure = plotting.show_confusion_matrix([0, 1, 1, 2], [0, 1, 0, 2], ["a", "b", "c"])
    texts = sorted(text.get_text() for text in figure.axes[0].texts)
    assert texts == ["1", "1", "1", "1"]
    assert figure.axes[0].get_xlabel() == "predicted class"


def test_model_graph_follows_branches():
    x = keras.Input((4,), name="x")
    a = keras.layers.Dense(3, name="a")(x)
    b = keras.layers.Dense(3, name="b")(x)
    model = keras.Model(x, keras.layers.Add(name="sum")([a, b]))
    nodes, edges = plotting.model_graph(model)
    names = [node["name"] for node in nodes]
    assert sorted(names) == ["a", "b", "sum", "x"]
    named = {(names[s], names[t]) for s, t in edges}
    assert named == {("x", "a"), ("x", "b"), ("a", "sum"), ("b", "sum")}


def test_draw_model_has_one_box_per_layer_of_a_retrieval_head():
    head = build_retrieval_head(RNG.normal(size=(6, 5)), np.array([0, 1, 2, 0, 1, 2]), 3)
    figure = plotting.draw_model(head, title="head")
    boxes = [text.get_text() for text in figure.axes[0].texts if text.get_text()]
    arrows = [text for text in figure.axes[0].texts if not text.get_text()]  # annotate() arrows
    assert len(boxes) == len(head.layers) == 4
    assert boxes[-1] == "class_aggregation  [ClassAggregation]\n(None, 3)"
    assert len(arrows) == 3
