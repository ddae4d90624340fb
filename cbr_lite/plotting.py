"""The notebooks' figures: image grids, nearest-neighbour grids, heatmaps, confusion matrices, model diagrams.

Every function draws one figure with matplotlib and returns it (end the notebook cell with
``plt.show()`` so it is drawn once). Nothing here computes results: pass in what the notebook computed.

>>> import matplotlib; matplotlib.use("Agg")
>>> figure = show_heatmap(np.eye(3), title="identity", xlabel="index image", ylabel="query")
>>> [axes.get_title() for axes in figure.axes][:1]
['identity']
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

CORRECT_COLOUR = "tab:green"
WRONG_COLOUR = "tab:red"


def _grid(rows: int, columns: int, size: float, title: str | None, label_height: float = 0.0):
    height = rows * (size + label_height) + (0.4 if title else 0)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * size, height),
                                squeeze=False)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    if title:
        figure.suptitle(title)
    return figure, axes


def _frame(axis, colour: str, width: float = 3.0) -> None:
    for spine in axis.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)


def show_images(images: Sequence, titles: Sequence[str] | None = None, columns: int = 8, size: float = 1.4,
                title: str | None = None):
    """A grid of images (``uint8`` RGB arrays or 2-D arrays), each with an optional title under it.

    Returns the Figure; its axes are in reading order (unused cells switched off).
    """
    images = list(images)
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(images)} images but {len(titles)} titles")
    columns = max(1, min(columns, len(images)))
    rows = max(1, -(-len(images) // columns))
    # Room under each row for its titles, or the next row's images cover them.
    figure, axes = _grid(rows, columns, size, title, label_height=0.3 if titles is not None else 0.0)
    for position, axis in enumerate(axes.flat):
        if position >= len(images):
            axis.axis("off")
            continue
        image = np.asarray(images[position])
        axis.imshow(image, cmap="gray" if image.ndim == 2 else None)
        if titles is not None:
            axis.set_xlabel(str(titles[position]), fontsize=8)
    figure.tight_layout()
    return figure


def show_neighbours(query_images: Sequence, index_images: Sequence, neighbours: np.ndarray,
                    scores: np.ndarray | None = None, query_titles: Sequence[str] | None = None,
                    neighbour_titles: Sequence[str] | None = None, correct: np.ndarray | None = None,
                    size: float = 1.4, title: str | None = None):
    """One row per query: the query image, then its nearest index images, best first.

    ``neighbours[q, j]`` is the index position of query ``q``'s ``j``-th neighbour; ``scores[q, j]`` (optional)
    is printed under it. ``neighbour_titles[i]`` (optional) names index image ``i`` (e.g. its class).
    ``correct[q, j]`` (optional, bool) frames each neighbour green when it is of the query's class, red if not.
    """
    neighbours = np.atleast_2d(np.asarray(neighbours))
    queries, k = neighbours.shape
    if len(query_images) != queries:
        raise ValueError(f"{len(query_images)} query images but {queries} rows of neighbours")
    figure, axes = _grid(queries, k + 1, size, title)
    for q in range(queries):
        axes[q, 0].imshow(np.asarray(query_images[q]))
        axes[q, 0].set_xlabel(query_titles[q] if query_titles is not None else "query", fontsize=8)
        _frame(axes[q, 0], "black")
        for j in range(k):
            axis = axes[q, j + 1]
            position = int(neighbours[q, j])
            axis.imshow(np.asarray(index_images[position]))
            label = [] if neighbour_titles is None else [str(neighbour_titles[position])]
            if scores is not None:
                label.append(f"{float(scores[q, j]):.3f}")
            axis.set_xlabel("\n".join(label), fontsize=8)
            if correct is not None:
                _frame(axis, CORRECT_COLOUR if correct[q, j] else WRONG_COLOUR)
    axes[0, 0].set_title("query", fontsize=9)
    for j in range(k):
        axes[0, j + 1].set_title(f"#{j + 1}", fontsize=9)
    figure.tight_layout()
    return figure


def show_heatmap(matrix: np.ndarray, title: str, xlabel: str, ylabel: str, colorbar_label: str = "",
                 boundaries: Sequence[int] | None = None, tick_labels: Sequence[str] | None = None,
                 cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None, size: float = 5.0):
    """A matrix as a heatmap with a colour bar.

    ``boundaries`` (optional) are positions where a new class starts (e.g. from sorted labels); lines are
    drawn there on both axes and ``tick_labels`` (one per block) are written at the block centres.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"a heatmap needs a 2-D matrix, got shape {matrix.shape}")
    figure, axis = plt.subplots(figsize=(size * 1.15, size))
    image = axis.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    colorbar = figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    if colorbar_label:
        colorbar.set_label(colorbar_label)
    if boundaries is not None:
        edges = [0, *[int(b) for b in boundaries], None]
        for boundary in boundaries:
            axis.axhline(boundary - 0.5, color="white", linewidth=0.8)
            axis.axvline(boundary - 0.5, color="white", linewidth=0.8)
        if tick_labels is not None:
            ends = [*edges[1:-1], matrix.shape[1]]
            centres = [(start + end - 1) / 2 for start, end in zip(edges[:-1], ends)]
            axis.set_xticks(centres[: len(tick_labels)], tick_labels, rotation=90, fontsize=8)
            axis.set_yticks([(s + e - 1) / 2 for s, e in zip(edges[:-1], [*edges[1:-1], matrix.shape[0]])]
                            [: len(tick_labels)], tick_labels, fontsize=8)
    axis.set_title(title)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    figure.tight_layout()
    return figure


def confusion_matrix(true_labels: np.ndarray, predicted_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``(num_classes, num_classes)``: row = true class, column = predicted class.

    >>> confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 1]), 2).tolist()
    [[1, 0], [1, 1]]
    """
    true_labels = np.asarray(true_labels, dtype=np.int64)
    predicted_labels = np.asarray(predicted_labels, dtype=np.int64)
    if true_labels.shape != predicted_labels.shape:
        raise ValueError(f"{true_labels.size} true labels but {predicted_labels.size} predictions")
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (true_labels, predicted_labels), 1)
    return counts


def show_confusion_matrix(true_labels: np.ndarray, predicted_labels: np.ndarray, class_names: Sequence[str],
                          title: str = "Confusion matrix", size: float | None = None):
    """The confusion matrix as an annotated heatmap (rows: true class, columns: predicted class)."""
    counts = confusion_matrix(true_labels, predicted_labels, len(class_names))
    size = size or max(3.5, 0.45 * len(class_names) + 1.5)
    figure, axis = plt.subplots(figsize=(size * 1.1, size))
    image = axis.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04).set_label("images")
    ticks = np.arange(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=90, fontsize=8)
    axis.set_yticks(ticks, class_names, fontsize=8)
    threshold = counts.max() / 2 if counts.max() else 1
    for (row, column), count in np.ndenumerate(counts):
        if count:
            axis.text(column, row, str(count), ha="center", va="center", fontsize=7,
                      color="white" if count > threshold else "black")
    axis.set_title(title)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    figure.tight_layout()
    return figure


def _shape_text(shape) -> str:
    if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (list, tuple)):
        return ", ".join(_shape_text(part) for part in shape)
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def model_graph(model) -> tuple[list[dict], list[tuple[int, int]]]:
    """The layers of a functional Keras model as boxes and arrows: ``(nodes, edges)``.

    Each node is ``{"name", "kind", "shape"}`` (layer name, class name, output shape); each edge
    ``(from, to)`` indexes ``nodes``. Nodes are in ``model.layers`` order, which is a topological order.

    >>> import keras
    >>> x = keras.Input((4,), name="x"); model = keras.Model(x, keras.layers.Dense(2, name="d")(x))
    >>> nodes, edges = model_graph(model)
    >>> [(n["name"], n["kind"], n["shape"]) for n in nodes], edges
    ([('x', 'InputLayer', '(None, 4)'), ('d', 'Dense', '(None, 2)')], [(0, 1)])
    """
    position = {id(layer): i for i, layer in enumerate(model.layers)}
    nodes, edges = [], []
    for i, layer in enumerate(model.layers):
        try:
            shape = _shape_text(layer.output.shape)
        except (AttributeError, ValueError):
            shape = "?"
        nodes.append({"name": layer.name, "kind": type(layer).__name__, "shape": shape})
        for node in layer._inbound_nodes:
            for tensor in node.input_tensors:
                source = tensor._keras_history.operation
                if id(source) in position and (position[id(source)], i) not in edges:
                    edges.append((position[id(source)], i))
    return nodes, edges


def draw_model(model, title: str | None = None, width: float = 4.2, row_height: float = 0.85):
    """Draw a functional Keras model as a column of boxes (layer name, class, output shape) joined by arrows.

    A stand-in for ``keras.utils.plot_model`` that needs neither pydot nor graphviz. Layers are drawn in
    ``model.layers`` order; an arrow that skips layers is drawn as a curve on the right.
    """
    nodes, edges = model_graph(model)
    figure, axis = plt.subplots(figsize=(width, row_height * len(nodes) + (0.5 if title else 0.1)))
    axis.set_xlim(0, 1)
    axis.set_ylim(len(nodes) - 0.5, -0.5)
    axis.axis("off")
    for row, node in enumerate(nodes):
        axis.text(0.5, row, f"{node['name']}  [{node['kind']}]\n{node['shape']}", ha="center", va="center",
                  fontsize=8, family="monospace",
                  bbox={"boxstyle": "round,pad=0.4", "facecolor": "#e8f0fe", "edgecolor": "#4a6fa5"})
    for source, target in edges:
        curved = target - source > 1
        axis.annotate("", xy=(0.5 + 0.3 * curved, target - 0.28), xytext=(0.5 + 0.3 * curved, source + 0.28),
                      arrowprops={"arrowstyle": "->", "color": "#333333",
                                  "connectionstyle": "arc3,rad=-0.4" if curved else "arc3"})
    if title:
        axis.set_title(title)
    figure.tight_layout()
    return figure


# Figures of notebooks 04-06 (evaluation, "unknown" thresholds, exported-model comparisons).


def show_bars(labels: Sequence[str], values: Sequence[float], title: str, ylabel: str,
              errors: Sequence[float] | None = None, value_format: str = "{:.2f}", reference: float | None = None,
              reference_label: str = "", size: tuple[float, float] = (6.0, 3.5)):
    """One bar per label, each with its value written on top (and an error bar when ``errors`` is given).

    ``reference`` (optional) draws a dashed horizontal line, e.g. chance accuracy, named ``reference_label``.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(labels) != len(values):
        raise ValueError(f"{len(labels)} labels but {len(values)} values")
    figure, axis = plt.subplots(figsize=size)
    positions = np.arange(len(values))
    bars = axis.bar(positions, values, yerr=errors, capsize=4 if errors is not None else 0, color="#4a6fa5")
    tops = values + (np.asarray(errors, dtype=np.float64) if errors is not None else 0.0)
    for bar, value, top in zip(bars, values, tops):
        axis.annotate(value_format.format(value), (bar.get_x() + bar.get_width() / 2, top),
                      xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=8)
    if reference is not None:
        axis.axhline(reference, color="grey", linestyle="--", linewidth=1, label=reference_label or None)
        if reference_label:
            axis.legend(loc="upper left", fontsize=8)
    axis.set_xticks(positions, [str(label) for label in labels], fontsize=8)
    axis.set_ylim(0, max(float(tops.max()) * 1.18, reference * 1.1 if reference else 0) or 1.0)
    axis.set_title(title)
    axis.set_ylabel(ylabel)
    figure.tight_layout()
    return figure


def show_score_histograms(known_best: np.ndarray, unknown_best: np.ndarray, threshold: float | None = None,
                          title: str = "Best class score", bins: int = 25):
    """Histograms of the best class score for queries of indexed ("known") and other ("unknown") classes,
    on the same bins, with the chosen threshold as a vertical line (queries left of it are rejected).

    Each histogram shows fractions of its own queries (its bars add up to 1), so sets of different sizes
    compare directly.
    """
    known_best, unknown_best = np.asarray(known_best), np.asarray(unknown_best)
    edges = np.histogram_bin_edges(np.concatenate([known_best, unknown_best]), bins=bins)
    figure, axis = plt.subplots(figsize=(6.0, 3.5))
    for scores, colour, name in [(known_best, CORRECT_COLOUR, "known"), (unknown_best, WRONG_COLOUR, "unknown")]:
        axis.hist(scores, bins=edges, weights=np.full(scores.size, 1.0 / scores.size), alpha=0.6, color=colour,
                  label=f"{name} classes ({scores.size} queries)")
    if threshold is not None:
        axis.axvline(threshold, color="black", linestyle="--", linewidth=1.2, label=f"threshold {threshold:.3f}")
    axis.legend(fontsize=8)
    axis.set_title(title)
    axis.set_xlabel("best class score (cosine similarity)")
    axis.set_ylabel("fraction of queries")
    figure.tight_layout()
    return figure


def show_acceptance_curve(unknown_accepted: np.ndarray, known_accepted: np.ndarray,
                          chosen: tuple[float, float] | None = None, chosen_label: str = "chosen threshold",
                          title: str = "Accepting known vs unknown queries"):
    """The ROC-style curve of an "unknown" threshold: fraction of unknown-class queries accepted (x)
    against fraction of known-class queries accepted (y), one point per threshold.

    ``chosen`` (optional) is the ``(unknown accepted, known accepted)`` point of the chosen threshold. A
    perfect score separates the two sets (the curve passes through the top-left corner); a useless one
    follows the diagonal.
    """
    figure, axis = plt.subplots(figsize=(4.5, 4.2))
    axis.plot(unknown_accepted, known_accepted, color="#4a6fa5", drawstyle="steps-post", label="thresholds")
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="no better than chance")
    if chosen is not None:
        axis.plot(*chosen, "o", color="black", label=chosen_label)
    axis.set_xlim(-0.02, 1.02)
    axis.set_ylim(-0.02, 1.02)
    axis.set_aspect("equal")
    axis.legend(loc="lower right", fontsize=8)
    axis.set_title(title)
    axis.set_xlabel("unknown-class queries accepted (false alarms)")
    axis.set_ylabel("known-class queries accepted")
    figure.tight_layout()
    return figure
