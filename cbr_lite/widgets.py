"""Interactive tools for the notebooks (ipywidgets): make albums, classify an image, try thresholds.

Each tool is a small class that holds its widgets and does its work in ordinary methods; the widget
wiring only calls those methods. So everything here also runs without a browser: set a widget's
``.value`` in code (an upload, a slider, a dropdown) and the same callback runs as when a person clicks.

- :class:`AlbumBuilder`: type a class name, upload its photos; they are saved as a folder of class
  folders that :func:`cbr_lite.builder.build_classifier_file` and ``cbr-lite build`` read.
- :class:`LiveScorer`: an embedder plus an embedded index, scored by the same Keras retrieval head the
  exported model holds (:func:`cbr_lite.retrieval.build_retrieval_head`), with any aggregation.
- :class:`ClassifierPanel`: upload (or pick) an image, see a bar chart of its top-k class scores; an
  aggregation dropdown (max / mean / topk:K) scores it again.
- :class:`ThresholdExplorer`: a threshold slider that shows which queries become "unknown".

>>> scorer = LiveScorer.from_albums("my_albums/", "glyph-cnn")           # doctest: +SKIP
>>> panel = ClassifierPanel(scorer)                                       # doctest: +SKIP
>>> panel                                                                 # doctest: +SKIP
>>> panel.upload.value = [upload_entry("mug.jpg", open("mug.jpg", "rb").read())]   # doctest: +SKIP
>>> panel.ranked[:2]                                                      # doctest: +SKIP
[('mug', 0.91), ('cup', 0.83)]
"""

from __future__ import annotations

import datetime
import html
import io
import tempfile
from pathlib import Path
from typing import Sequence

import ipywidgets as widgets
import numpy as np

from cbr_lite.classifier import ranking  # noqa: F401  (part of this module's API: the panel's ranking)
from cbr_lite.errors import CbrError

#: The aggregations the dropdown offers; "topk" takes its K from a separate box.
AGGREGATION_KINDS = ("max", "mean", "topk")
#: Shown where a query is rejected by the threshold (see :func:`cbr_lite.thresholds.predict_or_unknown`).
UNKNOWN_LABEL = "unknown"
#: The example dropdown's entry for "no example chosen".
NO_EXAMPLE = "(choose)"


# --------------------------------------------------------------------------------------------------
# Plain functions: uploads, album folders, charts
# --------------------------------------------------------------------------------------------------


def enable_widgets() -> bool:
    """Let the widgets draw where they need a switch: in Google Colab, turn on its widget manager for
    ipywidgets 8 (without it the tools show as text). Elsewhere nothing is needed. Returns True in Colab."""
    from cbr_lite.notebook import in_colab

    if not in_colab():
        return False
    from google.colab import output  # only importable inside Colab

    output.enable_custom_widget_manager()
    return True



def upload_entry(name: str, content: bytes) -> dict:
    """One file as ``FileUpload.value`` holds it (ipywidgets 8), to simulate an upload in code.

    >>> entry = upload_entry("cat.png", b"...")
    >>> entry["name"], bytes(entry["content"])
    ('cat.png', b'...')
    """
    return {"name": str(name), "type": "", "size": len(content), "content": memoryview(bytes(content)),
            "last_modified": datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)}


def uploaded_files(value) -> list[tuple[str, bytes]]:
    """``[(file name, bytes), ...]`` from a ``FileUpload.value`` (ipywidgets 8: a tuple of dicts)."""
    return [(str(entry["name"]), bytes(entry["content"])) for entry in value]


def check_folder_name(name: str) -> str:
    """A class name that can also be a folder name, stripped of outer spaces; a :class:`CbrError` if not.

    Albums skip hidden folders, so a name starting with "." would silently vanish; "/" would make a
    sub-folder. Anything else (spaces, commas, any Unicode) is a fine label.
    """
    from cbr_lite.labels import check_label

    name = str(name).strip()
    if not name:
        raise CbrError("type a class name first: it names the folder the images go into")
    name = check_label(name)
    if name in (".", "..") or name.startswith("."):
        raise CbrError(f"class name {name!r} starts with '.', which marks a hidden folder; choose another name")
    if "/" in name or "\\" in name or "\0" in name:
        raise CbrError(f"class name {name!r} has a '/' or '\\', which folder names cannot hold; choose another name")
    return name


def image_from_bytes(name: str, content: bytes) -> np.ndarray:
    """Decode an uploaded file as ``uint8 (height, width, 3)`` RGB with :func:`cbr_lite.images.load_image`.

    The bytes go through a temporary file, so uploads get exactly the checks that files on disk get
    (EXIF rotation, odd modes, decompression bombs); errors name the upload, not the temporary file.
    """
    from cbr_lite.images import load_image

    suffix = Path(name).suffix if len(Path(name).suffix) <= 6 else ""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(content)
        try:
            return load_image(path)
        except CbrError as error:
            raise CbrError(str(error).replace(str(path), name)) from None


def save_uploads(root, class_name: str, files: Sequence[tuple[str, bytes]]) -> list[Path]:
    """Save uploaded images ``[(file name, bytes), ...]`` into ``root/class_name/``; returns their paths.

    Each file is checked to be a readable image before it is kept (a :class:`CbrError` names the first
    that is not, and nothing of that upload is written). Names keep only their last part ("a/b.jpg" ->
    "b.jpg"); a different image with a name already taken gets "_2", "_3"... and the same image twice is
    saved once.
    """
    from cbr_lite.albums import IMAGE_SUFFIXES
    from cbr_lite.files import write_atomically

    class_name = check_folder_name(class_name)
    if not files:
        raise CbrError(f"no files to add to class {class_name!r}; choose some images first")
    checked = []
    for name, content in files:
        base = Path(str(name).replace("\\", "/")).name
        if base.startswith(".") or Path(base).suffix.lower() not in IMAGE_SUFFIXES:
            raise CbrError(f"{name}: not an image file name (use one of {', '.join(sorted(IMAGE_SUFFIXES))})")
        image_from_bytes(base, content)
        checked.append((base, content))
    folder = Path(root) / class_name
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for base, content in checked:
        path, copy = folder / base, 1
        while path.exists() and path.read_bytes() != content:
            copy += 1
            path = folder / f"{Path(base).stem}_{copy}{Path(base).suffix}"
        if not path.exists():
            write_atomically(path, content)
        saved.append(path)
    return saved


def album_counts(root) -> dict:
    """``{class name: number of images}`` of a folder of class folders, as the builder will read it
    (an empty dict for a folder that does not exist yet or is empty)."""
    from cbr_lite.albums import find_albums

    if not Path(root).exists() or not any(Path(root).iterdir()):
        return {}
    return {name: len(paths) for name, paths in find_albums(root)}


def aggregation_name(kind: str, k: int = 3) -> str:
    """The aggregation string the builder takes: ``("topk", 3)`` -> ``"topk:3"``, ``("max", _)`` -> ``"max"``."""
    from cbr_lite.similarity import parse_aggregation

    name = f"topk:{int(k)}" if kind == "topk" else str(kind)
    parse_aggregation(name)
    return name


def figure_png(figure) -> bytes:
    """A matplotlib figure as PNG bytes (for an ``ipywidgets.Image``); the figure is closed, so the
    notebook does not draw it a second time."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def image_png(image: np.ndarray, height: int = 128) -> bytes:
    """A ``uint8`` RGB image, scaled to ``height`` pixels high, as PNG bytes (a thumbnail for the panel)."""
    from PIL import Image

    picture = Image.fromarray(np.asarray(image, dtype=np.uint8))
    width = max(1, round(picture.width * height / picture.height))
    buffer = io.BytesIO()
    picture.resize((width, height), Image.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()


def scores_chart(ranked: Sequence[tuple[str, float]], title: str):
    """The top-k bar chart of the panel (:func:`cbr_lite.plotting.show_bars`), best class first.

    Class scores are often all close to 1, so the y axis is zoomed onto them (it does not start at 0,
    as its label says); the exact values are written on the bars.
    """
    from cbr_lite.plotting import show_bars

    labels, scores = [label for label, _ in ranked], np.array([score for _, score in ranked])
    figure = show_bars(labels, scores, title=title, ylabel="class score (cosine, zoomed)", value_format="{:.3f}",
                       size=(max(3.5, 1.0 + 0.9 * len(labels)), 3.0))
    spread = max(float(scores.max() - scores.min()), 0.01)
    low = max(-1.0, float(scores.min()) - spread)
    figure.axes[0].set_ylim(low, float(scores.max()) + 0.25 * (float(scores.max()) - low))
    return figure


# --------------------------------------------------------------------------------------------------
# Scoring: the retrieval head of the exported model, with any aggregation
# --------------------------------------------------------------------------------------------------


class LiveScorer:
    """An embedder and an embedded index, scored with :func:`cbr_lite.retrieval.build_retrieval_head`.

    A query is embedded once (:meth:`embed`); :meth:`scores` then runs the retrieval head for any
    aggregation. Heads are built once per aggregation and kept, so switching back and forth is instant.
    These are the layers of the exported model, so the scores equal the ``.tflite`` file's up to float
    rounding.
    """

    def __init__(self, embedder, index_embeddings, image_labels, class_names, aggregation: str = "max"):
        from cbr_lite.builder import resolve_embedder
        from cbr_lite.labels import check_labels
        from cbr_lite.similarity import check_index
        from cbr_lite.similarity import parse_aggregation

        self.embedder = resolve_embedder(embedder)
        self.class_names = check_labels(class_names)
        self.index_embeddings, self.image_labels, _ = check_index(index_embeddings, image_labels,
                                                                  len(self.class_names))
        if self.index_embeddings.shape[1] != self.embedder.dim:
            raise CbrError(f"the index embeddings have {self.index_embeddings.shape[1]} dimensions but "
                           f"{self.embedder.name} gives {self.embedder.dim}")
        parse_aggregation(aggregation)
        self.aggregation = aggregation
        self._heads: dict = {}

    @classmethod
    def from_albums(cls, root, embedder=None, aggregation: str = "max", on_bad_image: str = "error"):
        """Embed a folder of class folders (:func:`cbr_lite.builder.embed_albums`)."""
        from cbr_lite.builder import embed_albums, resolve_embedder

        embedder = resolve_embedder(embedder)
        embeddings, labels, names = embed_albums(root, embedder, on_bad_image)
        return cls(embedder, embeddings, labels, names, aggregation)

    @classmethod
    def from_file(cls, model, source: str | None = None, embedder=None):
        """The index, labels, aggregation and embedder of a cbr-lite classifier file (bytes or a path).

        The embedder is ``embedder`` if given, else the one the file names if it is a built-in offline
        embedder (:func:`cbr_lite.builder.load_file_embedder`: a file never makes cbr-lite load code).
        """
        from cbr_lite.builder import load_file_embedder
        from cbr_lite.classifier_file import read_classifier_file, read_model_file

        if isinstance(model, (str, Path)):
            source = source or str(model)
            model = read_model_file(model)
        source = source or "the model"
        read = read_classifier_file(model, source)
        return cls(load_file_embedder(read, source, embedder), read.index_embeddings, read.image_labels,
                   read.class_names, read.aggregation)

    def embed(self, images) -> np.ndarray:
        """Raw embeddings ``(n, dim)`` of ``uint8`` RGB images (:meth:`Embedder.embed`)."""
        return self.embedder.embed(images)

    def head(self, aggregation: str | None = None):
        """The Keras retrieval head for ``aggregation`` (default: this scorer's), built on first use."""
        from cbr_lite.retrieval import build_retrieval_head

        aggregation = aggregation or self.aggregation
        if aggregation not in self._heads:
            self._heads[aggregation] = build_retrieval_head(self.index_embeddings, self.image_labels,
                                                            len(self.class_names), aggregation)
        return self._heads[aggregation]

    def scores(self, embeddings, aggregation: str | None = None) -> np.ndarray:
        """Class scores ``(n, classes)`` float32 of raw query embeddings ``(n, dim)``."""
        embeddings = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        return np.asarray(self.head(aggregation).predict_on_batch(embeddings), dtype=np.float32)

    def classify(self, images, aggregation: str | None = None) -> np.ndarray:
        """Class scores ``(n, classes)`` of ``uint8`` RGB images: :meth:`embed`, then :meth:`scores`."""
        return self.scores(self.embed(images), aggregation)


# --------------------------------------------------------------------------------------------------
# Widgets
# --------------------------------------------------------------------------------------------------


#: What a notebook shows for a tool where its widget cannot be drawn (GitHub, an untrusted or unexecuted
#: notebook, a front end without ipywidgets) instead of ipywidgets' ``VBox(children=(...))``.
FALLBACK_TEXT = "{name}: an interactive tool; run this cell in JupyterLab, Jupyter Notebook or Colab to use it"


class _Tool:
    """Shows its ``widget`` when it is the last expression of a notebook cell (:data:`FALLBACK_TEXT` where
    widgets cannot be drawn)."""

    widget: widgets.Widget

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = FALLBACK_TEXT.format(name=type(self).__name__)
        return bundle


def _side_by_side() -> widgets.Layout:
    """A row whose children keep their own height (an HBox stretches them to the tallest one, which distorts
    images) and wrap onto a new line where the notebook is too narrow for both."""
    return widgets.Layout(align_items="flex-start", flex_flow="row wrap")


def _message(text: str, error: bool = False) -> str:
    colour = "#b00020" if error else "#1b5e20"
    return f'<span style="color:{colour}">{html.escape(text)}</span>'


class AlbumBuilder(_Tool):
    """Make a folder of class folders from uploads: type a class name, upload its images, repeat.

    ``root`` is where the class folders go (created now; images already there are kept). If ``root`` is
    deleted while the builder is shown (a notebook's clean-up), the builder says so and stops taking
    uploads rather than silently making a new, empty folder. :attr:`counts` is ``{class: images}`` as the
    builder will read it. ``shown_as`` is how the widget and its messages name the folder (default: ``root``
    itself); a notebook whose folder is temporary passes a name relative to its workspace, so that no
    temporary path (which changes every run and names the machine's folders) is shown. In code::

        albums = AlbumBuilder("my_albums")
        albums.class_name.value = "mug"
        albums.upload.value = [upload_entry("mug1.jpg", data), ...]   # what the browser does
        albums.counts                                                 # {'mug': 1}
    """

    def __init__(self, root, shown_as: str | None = None):
        self.root = Path(root)
        self.shown_as = str(self.root if shown_as is None else shown_as)
        self.root.mkdir(parents=True, exist_ok=True)
        # Sent once, when the box loses focus (clicking the upload button), so it cannot arrive after the upload.
        self.class_name = widgets.Text(description="class", placeholder="e.g. mug", continuous_update=False)
        self.upload = widgets.FileUpload(accept="image/*", multiple=True, description="Add images",
                                         layout=widgets.Layout(width="auto"))
        self.status = widgets.HTML()
        self.summary = widgets.HTML()
        self.last_saved: list[Path] = []
        self.upload.observe(self._on_upload, names="value")
        self.widget = widgets.VBox([
            widgets.HTML(f"<b>Albums in</b> <code>{html.escape(self.shown_as)}</code>: name a class, then "
                         "upload its images (5-20 varied photos work well)."),
            widgets.HBox([self.class_name, self.upload]), self.status, self.summary,
        ])
        self.refresh()

    @property
    def counts(self) -> dict:
        """``{class name: number of images}`` in :attr:`root`, sorted by class name."""
        return album_counts(self.root)

    def add(self, class_name: str, files: Sequence[tuple[str, bytes]]) -> list[Path]:
        """Save ``[(file name, bytes), ...]`` as images of ``class_name`` and update the summary."""
        self._check_root()
        saved = save_uploads(self.root, class_name, files)
        self.last_saved = saved
        self.status.value = _message(f"added {len(saved)} image(s) to {check_folder_name(class_name)!r}")
        self.refresh()
        return saved

    def refresh(self) -> None:
        """Show the classes and image counts now in :attr:`root`."""
        try:
            self._check_root()
            counts = self.counts
        except CbrError as error:  # e.g. a class folder someone emptied by hand, or the folder deleted
            self.summary.value = _message(str(error), error=True)
            return
        if not counts:
            self.summary.value = "<i>no classes yet</i>"
            return
        rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{count}</td></tr>" for name, count in counts.items())
        self.summary.value = f"<table><tr><th>class</th><th>images</th></tr>{rows}</table>"

    def _check_root(self) -> None:
        """A :class:`CbrError` (and the controls disabled) once :attr:`root` has been deleted."""
        if self.root.is_dir():
            return
        self.class_name.disabled = self.upload.disabled = True
        self.summary.value = "<i>no album folder any more</i>"
        raise CbrError(f"{self.shown_as} was deleted (by the notebook's clean-up?), so this album builder saves "
                       "nothing more; run the cell that makes it again")

    def _on_upload(self, change) -> None:
        files = uploaded_files(change["new"])
        if not files:
            return
        try:
            self.add(self.class_name.value, files)
        except CbrError as error:
            self.status.value = _message(str(error), error=True)
        # Clear the upload so the same files can be chosen again and the notebook does not keep their bytes.
        self.upload.value = ()


class ClassifierPanel(_Tool):
    """Classify one image at a time and see its top-k class scores as a bar chart.

    The image comes from an upload, from the ``examples`` dropdown (``{name: uint8 image}``), or from
    :meth:`show` in code. The aggregation dropdown and the K box score the same embedding again with
    another retrieval head. After each update, :attr:`scores` (all classes) and :attr:`ranked` (top k,
    best first) hold what the chart shows, and :attr:`error` the last error message (or "").
    """

    def __init__(self, scorer: LiveScorer, examples: dict | None = None, top_k: int = 5):
        self.scorer = scorer
        self.examples = dict(examples or {})
        kind, _, k = scorer.aggregation.partition(":")
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="Upload image",
                                         layout=widgets.Layout(width="auto"))
        self.example = widgets.Dropdown(options=[NO_EXAMPLE, *self.examples], description="example")
        self.aggregation = widgets.Dropdown(options=AGGREGATION_KINDS, value=kind, description="aggregation")
        self.k = widgets.BoundedIntText(value=int(k or 3), min=1, max=100, description="K",
                                        layout=widgets.Layout(width="140px"), disabled=kind != "topk")
        self.top_k = widgets.BoundedIntText(value=min(top_k, len(scorer.class_names)), min=1,
                                            max=len(scorer.class_names), description="top-k",
                                            layout=widgets.Layout(width="140px"))
        self.thumbnail = widgets.Image(format="png")
        self.chart = widgets.Image(format="png")
        self.result = widgets.HTML("<i>upload or choose an image</i>")
        self.image = self.name = self.embedding = self.scores = None
        self.ranked: list = []
        self.error = ""
        self.upload.observe(self._on_upload, names="value")
        self.example.observe(self._on_example, names="value")
        for control in (self.aggregation, self.k, self.top_k):
            control.observe(self._on_setting, names="value")
        self.widget = widgets.VBox([
            widgets.HBox([self.upload, self.example]),
            widgets.HBox([self.aggregation, self.k, self.top_k]),
            widgets.HBox([self.thumbnail, self.chart], layout=_side_by_side()), self.result,
        ])

    @property
    def aggregation_name(self) -> str:
        """The aggregation the controls select, e.g. ``"topk:3"``."""
        return aggregation_name(self.aggregation.value, self.k.value)

    def show(self, image: np.ndarray, name: str = "image") -> list:
        """Classify a ``uint8`` RGB image (embedded once) and draw its chart; returns :attr:`ranked`."""
        self.image, self.name = np.asarray(image, dtype=np.uint8), str(name)
        self.embedding = self.scorer.embed([self.image])
        self.thumbnail.value = image_png(self.image)
        return self.rescore()

    def rescore(self) -> list:
        """Score the current image again with the selected aggregation and top-k; returns :attr:`ranked`."""
        if self.embedding is None:
            return []
        aggregation = self.aggregation_name
        self.scores = self.scorer.scores(self.embedding, aggregation)[0]
        self.ranked = ranking(self.scores, self.scorer.class_names, self.top_k.value)
        best, score = self.ranked[0]
        self.chart.value = figure_png(scores_chart(self.ranked, f"{self.name}: top {len(self.ranked)} ({aggregation})"))
        self.result.value = f"best class: <b>{html.escape(best)}</b> (score {score:.3f}, {html.escape(aggregation)})"
        self.error = ""
        return self.ranked

    def _fail(self, error: CbrError) -> None:
        self.error = str(error)
        self.result.value = _message(self.error, error=True)

    def _on_upload(self, change) -> None:
        files = uploaded_files(change["new"])
        if not files:
            return
        name, content = files[0]
        try:
            self.show(image_from_bytes(name, content), name)
            self.example.value = NO_EXAMPLE  # the image shown is the upload, not the example chosen before
        except CbrError as error:
            self._fail(error)
        self.upload.value = ()

    def _on_example(self, change) -> None:
        if change["new"] in self.examples:
            self.show(self.examples[change["new"]], change["new"])

    def _on_setting(self, change) -> None:
        self.k.disabled = self.aggregation.value != "topk"
        try:
            self.rescore()
        except CbrError as error:
            self._fail(error)


class ThresholdExplorer(_Tool):
    """A threshold slider over a set of queries: those whose best class score is below it become "unknown".

    ``scores`` ``(queries, classes)`` are class scores (e.g. :meth:`LiveScorer.classify`), ``names`` one
    name per query. ``known`` (optional, bool per query) marks queries of classes in the index; then the
    summary also gives the fraction of known queries accepted and of unknown ones rejected
    (:func:`cbr_lite.thresholds.acceptance_rates`) and a histogram of best scores is drawn. After each
    update :attr:`decisions` holds ``[(name, answer, best score), ...]`` with ``answer`` a class name or
    ``"unknown"``.
    """

    def __init__(self, scores, class_names: Sequence[str], names: Sequence[str], known=None,
                 threshold: float | None = None):
        from cbr_lite.thresholds import choose_threshold

        self.scores = np.asarray(scores, dtype=np.float32)
        if self.scores.ndim != 2 or self.scores.shape[1] != len(class_names):
            raise CbrError(f"scores must have shape (queries, {len(class_names)}), got {self.scores.shape}")
        if len(names) != len(self.scores):
            raise CbrError(f"{len(self.scores)} queries but {len(names)} names")
        self.class_names, self.names = list(class_names), [str(name) for name in names]
        self.known = None if known is None else np.asarray(known, dtype=bool)
        if self.known is not None and self.known.shape != (len(self.scores),):
            raise CbrError(f"known must have one True/False per query ({len(self.scores)}), got {self.known.shape}")
        best = self.scores.max(axis=1)
        if threshold is None:
            has_both = self.known is not None and self.known.any() and not self.known.all()
            threshold = choose_threshold(best[self.known], best[~self.known]) if has_both else float(np.median(best))
        low, high = float(min(best.min(), threshold)), float(max(best.max(), threshold))
        self.slider = widgets.FloatSlider(value=threshold, min=round(low - 0.01, 3), max=round(high + 0.01, 3),
                                          step=0.001, readout_format=".3f", description="threshold",
                                          continuous_update=False, layout=widgets.Layout(width="480px"))
        self.summary = widgets.HTML()
        self.table = widgets.HTML()
        self.histogram = widgets.Image(format="png")
        self.decisions: list = []
        self.slider.observe(lambda change: self.update(), names="value")
        self.widget = widgets.VBox([self.slider, self.summary, widgets.HBox(
            [self.table, self.histogram], layout=_side_by_side())])
        self.update()

    @property
    def threshold(self) -> float:
        """The slider's threshold."""
        return float(self.slider.value)

    def update(self) -> list:
        """Decide every query at the slider's threshold; redraw the summary, table and histogram."""
        from cbr_lite.thresholds import UNKNOWN, acceptance_rates, predict_or_unknown

        answers = predict_or_unknown(self.scores, self.threshold)
        best = self.scores.max(axis=1)
        self.decisions = [(name, UNKNOWN_LABEL if answer == UNKNOWN else self.class_names[answer], float(score))
                          for name, answer, score in zip(self.names, answers, best)]
        rejected = int(np.sum(answers == UNKNOWN))
        text = f"threshold {self.threshold:.3f}: {rejected} of {len(answers)} queries answered 'unknown'"
        if self.known is not None and self.known.any() and not self.known.all():
            _, known_accepted, unknown_accepted = acceptance_rates(best[self.known], best[~self.known],
                                                                   [self.threshold])
            text += (f"; known classes accepted {known_accepted[0]:.0%}, "
                     f"unknown classes rejected {1 - unknown_accepted[0]:.0%}")
            self.histogram.value = self._histogram(best)
        self.summary.value = html.escape(text, quote=False)
        rows = []
        for (name, answer, score), is_known in zip(self.decisions, self._known_flags()):
            style = ' style="color:#b00020"' if answer == UNKNOWN_LABEL else ""
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{is_known}</td>"
                        f"<td{style}>{html.escape(answer)}</td><td>{score:.3f}</td></tr>")
        self.table.value = ("<table><tr><th>query</th><th>known class?</th><th>answer</th><th>best score</th></tr>"
                            + "".join(rows) + "</table>")
        return self.decisions

    def _known_flags(self) -> list:
        return ["?"] * len(self.names) if self.known is None else ["yes" if k else "no" for k in self.known]

    def _histogram(self, best) -> bytes:
        from cbr_lite.plotting import show_score_histograms

        figure = show_score_histograms(best[self.known], best[~self.known], self.threshold, bins=15)
        return figure_png(figure)


__all__ = [
    "AlbumBuilder", "ClassifierPanel", "LiveScorer", "ThresholdExplorer", "aggregation_name", "album_counts",
    "check_folder_name", "enable_widgets", "figure_png", "image_from_bytes", "image_png", "ranking", "save_uploads",
    "scores_chart", "upload_entry", "uploaded_files",
]
