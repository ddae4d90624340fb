"""cbr_lite.widgets without a browser: set a widget's value in code, as a click would, and check the state."""

import io
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tiny_embedder as tiny  # noqa: E402
from PIL import Image  # noqa: E402

from cbr_lite import widgets  # noqa: E402
from cbr_lite.builder import build_classifier_file  # noqa: E402
from cbr_lite.classifier import Classifier  # noqa: E402
from cbr_lite.errors import CbrError  # noqa: E402
from cbr_lite.similarity import class_scores, cosine_similarity  # noqa: E402
from cbr_lite.thresholds import choose_threshold, predict_or_unknown  # noqa: E402

RED, GREEN, BLUE = tiny.COLOURS["red thing"], tiny.COLOURS["green, leafy"], tiny.COLOURS["blåbær"]


def png(image) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def colour_png(colour, seed, size=(20, 24)) -> bytes:
    return png(tiny.colour_image(colour, seed, size))


@pytest.fixture(scope="module")
def albums(tmp_path_factory):
    return tiny.write_albums(tmp_path_factory.mktemp("albums"))


@pytest.fixture(scope="module")
def scorer(albums, request):
    request.getfixturevalue("tiny_test_embedder")  # registers "tiny-test" with load_embedder
    return widgets.LiveScorer.from_albums(albums, tiny.NAME)


@pytest.fixture(scope="module")
def queries():
    """New images: one per indexed colour, then two colours far from every class."""
    colours = [RED, GREEN, BLUE, (240, 240, 240), (128, 128, 0)]
    return [tiny.colour_image(colour, seed=500 + i, size=(26, 19)) for i, colour in enumerate(colours)]


# Uploads and album folders ------------------------------------------------------------------------


def test_upload_entries_round_trip_through_the_upload_widget():
    entries = (widgets.upload_entry("a.png", b"123"), widgets.upload_entry("b.jpg", b"45"))
    assert widgets.uploaded_files(entries) == [("a.png", b"123"), ("b.jpg", b"45")]
    upload = widgets.widgets.FileUpload(multiple=True)
    upload.value = entries  # the widget itself accepts what upload_entry makes
    assert widgets.uploaded_files(upload.value) == [("a.png", b"123"), ("b.jpg", b"45")]


@pytest.mark.parametrize("name, message", [
    ("", "type a class name"), ("   ", "type a class name"), (".secret", "hidden folder"), ("..", "hidden folder"),
    ("cats/dogs", "'/'"), ("a\\b", "'/'"), ("two\nlines", "line break"),
])
def test_class_names_that_cannot_be_folders_are_refused(name, message):
    with pytest.raises(CbrError, match=message):
        widgets.check_folder_name(name)


def test_ordinary_class_names_are_kept_without_outer_spaces():
    assert widgets.check_folder_name("  green, leafy ") == "green, leafy"
    assert widgets.check_folder_name("blåbær") == "blåbær"


def test_save_uploads_writes_readable_images_into_the_class_folder(tmp_path):
    red = colour_png(RED, 1)
    saved = widgets.save_uploads(tmp_path, "red thing", [("photos/r1.png", red), ("r2.png", colour_png(RED, 2))])
    assert [p.relative_to(tmp_path).as_posix() for p in saved] == ["red thing/r1.png", "red thing/r2.png"]
    assert saved[0].read_bytes() == red
    # The same image again is not duplicated; another image under a taken name gets a new name.
    again = widgets.save_uploads(tmp_path, "red thing", [("r1.png", red), ("r1.png", colour_png(RED, 3))])
    assert [p.name for p in again] == ["r1.png", "r1_2.png"]
    assert widgets.album_counts(tmp_path) == {"red thing": 3}


def test_a_bad_upload_writes_nothing_and_names_the_file(tmp_path):
    good = ("ok.png", colour_png(RED, 1))
    with pytest.raises(CbrError, match=r"^notes\.png: not a readable image"):
        widgets.save_uploads(tmp_path, "red", [good, ("notes.png", b"just text")])
    with pytest.raises(CbrError, match=r"notes\.txt: not an image file name"):
        widgets.save_uploads(tmp_path, "red", [("notes.txt", colour_png(RED, 1))])
    with pytest.raises(CbrError, match="no files"):
        widgets.save_uploads(tmp_path, "red", [])
    assert list(tmp_path.iterdir()) == []


def test_image_from_bytes_decodes_like_load_image():
    image = tiny.colour_image(GREEN, 7, size=(12, 15))
    np.testing.assert_array_equal(widgets.image_from_bytes("g.png", png(image)), image)
    with pytest.raises(CbrError, match=r"^tiny\.png: .*too small"):
        widgets.image_from_bytes("tiny.png", png(np.zeros((4, 4, 3), np.uint8)))


def test_album_builder_saves_an_upload_into_the_named_class_and_clears_it(tmp_path):
    builder = widgets.AlbumBuilder(tmp_path / "albums")
    assert builder.counts == {} and "no classes" in builder.summary.value
    builder.class_name.value = "blåbær"
    builder.upload.value = [widgets.upload_entry(f"b{i}.png", colour_png(BLUE, i)) for i in range(3)]
    assert builder.counts == {"blåbær": 3}
    assert sorted(p.name for p in (tmp_path / "albums" / "blåbær").iterdir()) == ["b0.png", "b1.png", "b2.png"]
    assert "added 3 image(s)" in builder.status.value and "blåbær</td><td>3" in builder.summary.value
    assert builder.upload.value == ()  # cleared, so the notebook does not keep the bytes


def test_album_builder_shows_errors_instead_of_raising(tmp_path):
    builder = widgets.AlbumBuilder(tmp_path / "albums")
    builder.class_name.value = ".hidden"
    builder.upload.value = [widgets.upload_entry("x.png", colour_png(RED, 0))]
    assert "hidden folder" in builder.status.value and builder.counts == {}
    builder.class_name.value = "red"
    builder.upload.value = [widgets.upload_entry("x.png", b"not an image")]
    assert "x.png: not a readable image" in builder.status.value and builder.counts == {}


def test_album_builder_asks_for_a_class_name_before_saving(tmp_path):
    builder = widgets.AlbumBuilder(tmp_path / "albums")
    builder.upload.value = [widgets.upload_entry("x.png", colour_png(RED, 0))]
    assert "type a class name first" in builder.status.value and builder.counts == {}


def test_album_builder_stops_once_its_folder_is_deleted_instead_of_making_a_new_one(tmp_path):
    workspace = tmp_path / "workspace"
    builder = widgets.AlbumBuilder(workspace / "albums")
    assert (workspace / "albums").is_dir()  # made at once, so that a later deletion can be noticed
    builder.add("red", [("r.png", colour_png(RED, 0))])
    shutil.rmtree(workspace)  # what the notebook's workspace.cleanup() does
    builder.class_name.value = "green"
    builder.upload.value = [widgets.upload_entry("g.png", colour_png(GREEN, 0))]
    assert "was deleted" in builder.status.value and "run the cell that makes it again" in builder.status.value
    assert builder.upload.disabled and builder.class_name.disabled
    assert not workspace.exists(), "nothing is re-created"
    with pytest.raises(CbrError, match="was deleted"):
        builder.add("green", [("g.png", colour_png(GREEN, 0))])


def test_album_builder_names_its_folder_as_told_so_no_temporary_path_is_shown(tmp_path):
    builder = widgets.AlbumBuilder(tmp_path / "workspace" / "albums", shown_as="albums/")
    heading = builder.widget.children[0].value
    assert "<code>albums/</code>" in heading and str(tmp_path) not in heading
    shutil.rmtree(tmp_path / "workspace")
    builder.class_name.value = "red"
    builder.upload.value = [widgets.upload_entry("r.png", colour_png(RED, 0))]
    assert "albums/ was deleted" in builder.status.value and str(tmp_path) not in builder.status.value
    assert str(tmp_path) in widgets.AlbumBuilder(tmp_path / "other").widget.children[0].value, "default: the path"


def test_albums_made_with_the_builder_build_a_classifier(tmp_path, tiny_test_embedder):
    builder = widgets.AlbumBuilder(tmp_path / "albums")
    for name, colour in [("red", RED), ("green", GREEN)]:
        builder.add(name, [(f"{name}{i}.png", colour_png(colour, i)) for i in range(2)])
    classifier = Classifier(build_classifier_file(builder.root, tiny.NAME))
    predictions = classifier.predict([tiny.colour_image(GREEN, 99), tiny.colour_image(RED, 98)], top_k=1)
    assert [p[0][0] for p in predictions] == ["green", "red"]


# Scoring --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("aggregation", ["max", "mean", "topk:2"])
def test_live_scores_are_aggregated_cosine_similarities(scorer, queries, aggregation):
    similarities = cosine_similarity(scorer.embedder.embed(queries), scorer.index_embeddings)
    expected = class_scores(similarities, scorer.image_labels, len(scorer.class_names), aggregation)
    np.testing.assert_allclose(scorer.classify(queries, aggregation), expected, atol=1e-5)


def test_live_scores_match_the_exported_file(albums, scorer, queries):
    data = build_classifier_file(albums, tiny.NAME, aggregation="mean")
    from_file = widgets.LiveScorer.from_file(data)
    assert from_file.class_names == scorer.class_names and from_file.aggregation == "mean"
    np.testing.assert_allclose(from_file.classify(queries), Classifier(data).scores(queries), atol=2e-5)


def test_live_scorer_refuses_a_mismatched_index(scorer):
    with pytest.raises(CbrError, match="3 dimensions"):
        widgets.LiveScorer(scorer.embedder, np.ones((2, 3)), [0, 1], ["a", "b"])
    with pytest.raises(CbrError, match="unknown aggregation"):
        widgets.LiveScorer(scorer.embedder, scorer.index_embeddings, scorer.image_labels, scorer.class_names, "min")


def test_ranking_is_best_first_and_keeps_class_order_on_ties():
    assert widgets.ranking(np.array([0.2, 0.9, 0.2, 0.5]), list("abcd"), top_k=3) == [
        ("b", 0.9), ("d", 0.5), ("a", pytest.approx(0.2))]
    assert [name for name, _ in widgets.ranking(np.array([0.1, 0.3]), ["x", "y"])] == ["y", "x"]


def test_aggregation_names():
    assert widgets.aggregation_name("topk", 4) == "topk:4"
    assert widgets.aggregation_name("mean", 4) == "mean"
    with pytest.raises(CbrError):
        widgets.aggregation_name("topk", 0)


# The classifier panel ---------------------------------------------------------------------------------


def test_panel_classifies_an_upload_and_draws_its_chart(scorer):
    panel = widgets.ClassifierPanel(scorer, top_k=2)
    assert panel.ranked == [] and panel.rescore() == []
    image = tiny.colour_image(RED, 321, size=(30, 22))
    panel.upload.value = [widgets.upload_entry("red.png", png(image))]
    assert panel.error == "" and panel.name == "red.png"
    assert [name for name, _ in panel.ranked][0] == "red thing" and len(panel.ranked) == 2
    np.testing.assert_allclose(panel.scores, scorer.classify([image])[0], atol=1e-6)
    assert bytes(panel.chart.value)[:4] == bytes(panel.thumbnail.value)[:4] == b"\x89PNG"
    assert "red thing" in panel.result.value
    assert panel.upload.value == ()


def test_panel_rescores_when_the_aggregation_or_top_k_changes(scorer, queries):
    panel = widgets.ClassifierPanel(scorer, examples={"green": queries[1], "grey": queries[3]})
    panel.example.value = "grey"
    max_scores = panel.scores.copy()
    assert panel.k.disabled
    panel.aggregation.value = "mean"
    np.testing.assert_allclose(panel.scores, scorer.classify([queries[3]], "mean")[0], atol=1e-6)
    assert np.all(panel.scores <= max_scores + 1e-6) and not np.allclose(panel.scores, max_scores)
    panel.aggregation.value = "topk"
    panel.k.value = 2
    assert not panel.k.disabled and panel.aggregation_name == "topk:2"
    np.testing.assert_allclose(panel.scores, scorer.classify([queries[3]], "topk:2")[0], atol=1e-6)
    panel.top_k.value = 1
    assert len(panel.ranked) == 1 and "topk:2" in panel.result.value
    panel.example.value = "green"
    assert panel.ranked[0][0] == "green, leafy"


def test_an_upload_clears_the_example_choice_and_a_failed_one_keeps_it(scorer, queries):
    panel = widgets.ClassifierPanel(scorer, examples={"green": queries[1]})
    panel.example.value = "green"
    panel.upload.value = [widgets.upload_entry("broken.png", b"not an image")]
    assert panel.example.value == "green" and panel.name == "green" and panel.error.startswith("broken.png")
    panel.upload.value = [widgets.upload_entry("red.png", png(tiny.colour_image(RED, 5)))]
    assert panel.example.value == widgets.NO_EXAMPLE and panel.name == "red.png"
    assert panel.ranked[0][0] == "red thing"


def test_panel_shows_a_bad_upload_as_an_error(scorer):
    panel = widgets.ClassifierPanel(scorer)
    panel.upload.value = [widgets.upload_entry("broken.jpg", b"\xff\xd8 truncated")]
    assert panel.error.startswith("broken.jpg:") and "broken.jpg" in panel.result.value
    assert panel.ranked == []


# The threshold explorer ------------------------------------------------------------------------------


def test_threshold_slider_turns_low_scoring_queries_into_unknown(scorer, queries):
    scores = scorer.classify(queries)
    known = np.array([True, True, True, False, False])
    names = ["red", "green", "blue", "white", "olive"]
    explorer = widgets.ThresholdExplorer(scores, scorer.class_names, names, known=known)
    best = scores.max(axis=1)
    assert explorer.threshold == pytest.approx(choose_threshold(best[known], best[~known]), abs=1e-3)
    for threshold in [best.min() - 0.005, float(np.median(best)), best.max() + 0.005]:
        explorer.slider.value = round(float(threshold), 3)
        expected = predict_or_unknown(scores, explorer.threshold)
        answers = [answer for _, answer, _ in explorer.decisions]
        assert answers == ["unknown" if e < 0 else scorer.class_names[e] for e in expected]
        rejected = int(np.sum(expected < 0))
        assert f"{rejected} of 5 queries answered 'unknown'" in explorer.summary.value
        assert explorer.table.value.count("<tr>") == 6
    assert "known classes accepted 0%" in explorer.summary.value  # above every score, nothing is accepted
    assert bytes(explorer.histogram.value)[:4] == b"\x89PNG"


def test_threshold_explorer_without_known_flags_starts_at_the_median():
    scores = np.array([[0.9, 0.1], [0.2, 0.4], [0.5, 0.3]])
    explorer = widgets.ThresholdExplorer(scores, ["a", "b"], ["q1", "q2", "q3"])
    assert explorer.threshold == pytest.approx(0.5)
    assert [answer for _, answer, _ in explorer.decisions] == ["a", "unknown", "a"]
    assert bytes(explorer.histogram.value) == b"" and "known classes" not in explorer.summary.value


def test_threshold_explorer_checks_its_inputs():
    with pytest.raises(CbrError, match="shape"):
        widgets.ThresholdExplorer(np.ones((2, 3)), ["a", "b"], ["q1", "q2"])
    with pytest.raises(CbrError, match="2 queries but 1 names"):
        widgets.ThresholdExplorer(np.ones((2, 2)), ["a", "b"], ["q1"])


def test_tools_show_a_sentence_where_widgets_cannot_be_drawn(tmp_path, scorer):
    tools = [widgets.AlbumBuilder(tmp_path / "albums"), widgets.ClassifierPanel(scorer),
             widgets.ThresholdExplorer(np.array([[0.9, 0.1]]), ["a", "b"], ["q"])]
    for tool in tools:
        bundle = tool._repr_mimebundle_()
        assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == tool.widget.model_id
        assert bundle["text/plain"] == widgets.FALLBACK_TEXT.format(name=type(tool).__name__)
        assert "children=" not in bundle["text/plain"]


def test_images_beside_a_taller_neighbour_are_not_stretched(scorer):
    # An HBox stretches its children to the tallest one by default: the threshold table would stretch the
    # histogram, the bar chart the thumbnail.
    explorer = widgets.ThresholdExplorer(np.array([[0.9, 0.1]]), ["a", "b"], ["q"])
    panel = widgets.ClassifierPanel(scorer)
    rows = [box for box in explorer.widget.children + panel.widget.children
            if any(isinstance(child, widgets.widgets.Image) for child in getattr(box, "children", ()))]
    assert len(rows) == 2 and all(box.layout.align_items == "flex-start" for box in rows)
    assert all(box.layout.flex_flow == "row wrap" for box in rows)  # one below the other where narrow


def test_enable_widgets_turns_on_colabs_widget_manager_only_in_colab(monkeypatch):
    import sys
    import types

    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert widgets.enable_widgets() is False
    calls = []
    output = types.SimpleNamespace(enable_custom_widget_manager=lambda: calls.append("on"))
    colab = types.ModuleType("google.colab")
    colab.output = output
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    assert widgets.enable_widgets() is True and calls == ["on"]


def test_scores_chart_zooms_onto_close_scores_and_keeps_every_bar_visible():
    ranked = [("a", 0.98), ("b", 0.95), ("c", 0.94)]
    figure = widgets.scores_chart(ranked, "three")
    axis = figure.axes[0]
    low, high = axis.get_ylim()
    assert 0.5 < low < 0.94 and high > 0.98
    assert [tick.get_text() for tick in axis.get_xticklabels()] == ["a", "b", "c"]
    assert axis.get_title() == "three"
    plt.close(figure)
