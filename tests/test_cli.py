"""Tests for the cbr-lite command line, run in-process through cli.main (fast, and capsys sees the output)."""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
import tiny_embedder

from cbr_lite import cli
from cbr_lite.classifier_file import read_classifier_file
from cbr_lite.similarity import class_scores, cosine_similarity

TINY = tiny_embedder.register()


@pytest.fixture(scope="module")
def albums(tmp_path_factory):
    return tiny_embedder.write_albums(tmp_path_factory.mktemp("albums"))


@pytest.fixture(scope="module")
def built(albums, tmp_path_factory):
    """A model built through the command line (aggregation topk:2, so the invariant is not just a max)."""
    path = tmp_path_factory.mktemp("models") / "colours.tflite"
    assert cli.main(["build", str(albums), "-o", str(path), "--embedder", TINY, "--aggregation", "topk:2"]) == 0
    return path


@pytest.fixture(scope="module")
def queries(tmp_path_factory):
    """Images of each colour that are not in the index, in a folder of their own."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("queries")
    for i, colour in enumerate(tiny_embedder.COLOURS.values()):
        Image.fromarray(tiny_embedder.colour_image(colour, seed=700 + i, size=(25, 31))).save(folder / f"q{i}.png")
    return folder


def test_cli_default_embedder_is_for_photos():
    parser = cli.make_parser()
    assert cli.CLI_DEFAULT_EMBEDDER == "efficientnet-lite0"
    assert parser.parse_args(["build", "a", "-o", "m.tflite"]).embedder == cli.CLI_DEFAULT_EMBEDDER
    assert parser.parse_args(["embed", "a", "-o", "e.npy"]).embedder == cli.CLI_DEFAULT_EMBEDDER


def test_build_reports_classes_images_size_and_time(albums, tmp_path, capsys):
    out = tmp_path / "m.tflite"
    assert cli.main(["build", str(albums), "-o", str(out), "--embedder", TINY]) == 0
    stdout = capsys.readouterr().out
    assert f"built {out} in " in stdout and " s\n" in stdout
    assert 'classes:      3 (blåbær, "green, leafy", red thing)' in stdout
    assert "images:       9 (3 per class)" in stdout
    assert f"{out.stat().st_size / 1000:.1f} kB" in stdout
    assert [p.name for p in tmp_path.iterdir()] == ["m.tflite"]  # no temporary file left behind


def test_build_is_byte_reproducible(albums, built, tmp_path, capsys):
    again = tmp_path / "again.tflite"
    cli.main(["build", str(albums), "-o", str(again), "--embedder", TINY, "--aggregation", "topk:2"])
    assert again.read_bytes() == built.read_bytes()


def test_classify_scores_are_aggregated_cosines_of_embed_output(albums, built, queries, tmp_path, capsys):
    """The invariant, end to end: scores from `classify --json` equal the topk:2 aggregation of cosine
    similarities between the embeddings `cbr-lite embed` writes for the queries and for the albums."""
    capsys.readouterr()
    assert cli.main(["classify", str(built), str(queries), "--json", "--top-k", "0"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert cli.main(["embed", str(queries), "-o", str(tmp_path / "q.npy"), "--embedder", TINY]) == 0
    assert cli.main(["embed", str(albums), "-o", str(tmp_path / "i.npy"), "--embedder", TINY]) == 0
    model = read_classifier_file(built.read_bytes())
    similarities = cosine_similarity(np.load(tmp_path / "q.npy"), np.load(tmp_path / "i.npy"))
    expected = class_scores(similarities, model.image_labels, 3, "topk:2")

    assert [r["image"] for r in results] == [str(p) for p in sorted(queries.iterdir())]
    for result, row in zip(results, expected):
        scores = {p["label"]: p["score"] for p in result["predictions"]}
        assert list(scores) == [model.class_names[i] for i in np.argsort(-row, kind="stable")]  # best first
        np.testing.assert_allclose([scores[name] for name in model.class_names], row, atol=2e-5)
    assert [r["predictions"][0]["label"] for r in results] == list(tiny_embedder.COLOURS)


def test_classify_top_k_and_text_output(built, queries, capsys):
    capsys.readouterr()
    assert cli.main(["classify", str(built), str(queries / "q2.png"), "--top-k", "1"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{queries / 'q2.png'}: red thing (") and line.count("(") == 1
    assert cli.main(["classify", str(built), str(queries), "--json"]) == 0
    assert all(len(r["predictions"]) == 3 for r in json.loads(capsys.readouterr().out))
    assert cli.main(["classify", str(built), str(queries), "--top-k", "-1"]) == 2
    assert "--top-k" in capsys.readouterr().err


def test_inspect_text_and_json(built, capsys):
    capsys.readouterr()
    assert cli.main(["inspect", str(built)]) == 0
    text = capsys.readouterr().out
    for expected in (f"embedder:     {TINY}", "aggregation:  topk:2", "quantisation: none", "green, leafy  3 images",
                     "FULLY_CONNECTED x2", "GATHER x1", "input:        16x16 RGB, (pixel - 127.5) / 127.5"):
        assert expected in text
    assert cli.main(["inspect", str(built), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["classes"] == {"blåbær": 3, "green, leafy": 3, "red thing": 3}
    assert info["size_bytes"] == built.stat().st_size and info["ops"]["FULLY_CONNECTED"] == 2
    assert (info["embedder"], info["quantize"], info["embedding_dim"]) == (TINY, "none", tiny_embedder.DIM)


def test_add_and_remove_round_trip(built, tmp_path, capsys):
    more = tiny_embedder.write_albums(tmp_path / "more", {"teal": (0, 128, 128)}, per_class=2)
    grown, shrunk = tmp_path / "grown.tflite", tmp_path / "shrunk.tflite"
    assert cli.main(["add", str(built), str(more), "-o", str(grown)]) == 0
    assert "added 1 classes (teal)" in capsys.readouterr().out
    assert read_classifier_file(grown.read_bytes()).images_per_class()["teal"] == 2
    assert cli.main(["remove", str(grown), "teal", "-o", str(shrunk)]) == 0
    assert "removed 1 classes (teal)" in capsys.readouterr().out
    # Removing what was added gives back the original classifier, byte for byte (no re-embedding).
    assert shrunk.read_bytes() == built.read_bytes()


def test_add_may_overwrite_its_input_model(built, tmp_path, capsys):
    model = tmp_path / "m.tflite"
    model.write_bytes(built.read_bytes())
    more = tiny_embedder.write_albums(tmp_path / "more", {"teal": (0, 128, 128)}, per_class=1)
    assert cli.main(["add", str(model), str(more), "-o", str(model)]) == 0
    assert "teal" in read_classifier_file(model.read_bytes()).class_names


def test_embed_writes_a_float32_npy(albums, tmp_path, capsys):
    out = tmp_path / "e.npy"
    assert cli.main(["embed", str(albums), "-o", str(out), "--embedder", TINY]) == 0
    embeddings = np.load(out, allow_pickle=False)
    assert embeddings.shape == (9, tiny_embedder.DIM) and embeddings.dtype == np.float32
    assert "embedded 9 images" in capsys.readouterr().out


def test_unknown_embedder_is_one_line_error(albums, tmp_path, capsys):
    assert cli.main(["build", str(albums), "-o", str(tmp_path / "m.tflite"), "--embedder", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cbr-lite: error: unknown embedder 'nope'") and err.count("\n") == 1


def test_bench_command_is_wired_when_present():
    import importlib.util

    parser = cli.make_parser()
    names = parser._subparsers._group_actions[0].choices
    assert {"build", "classify", "inspect", "add", "remove", "embed"} <= set(names)
    assert ("bench" in names) == (importlib.util.find_spec("cbr_lite.bench") is not None)


GLYPH_WEIGHTS = __import__("pathlib").Path(__file__).resolve().parent.parent / "data" / "embedders" / "glyph_cnn.keras"


@pytest.mark.skipif(not GLYPH_WEIGHTS.exists(), reason="glyph-cnn weights not trained yet (data/embedders/)")
def test_build_classify_with_the_offline_glyph_cnn(albums, queries, tmp_path, capsys):
    """The repository's own embedder end to end: build, classify, and the invariant against `embed`."""
    model = tmp_path / "glyph.tflite"
    assert cli.main(["build", str(albums), "-o", str(model), "--embedder", "glyph-cnn", "--aggregation", "mean"]) == 0
    capsys.readouterr()
    assert cli.main(["classify", str(model), str(queries), "--json", "--top-k", "0"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert cli.main(["embed", str(queries), "-o", str(tmp_path / "q.npy"), "--embedder", "glyph-cnn"]) == 0
    read = read_classifier_file(model.read_bytes())
    assert read.embedder == "glyph-cnn"
    expected = class_scores(cosine_similarity(np.load(tmp_path / "q.npy"), read.index_embeddings),
                            read.image_labels, 3, "mean")
    for result, row in zip(results, expected):
        scores = {p["label"]: p["score"] for p in result["predictions"]}
        np.testing.assert_allclose([scores[name] for name in read.class_names], row, atol=2e-5)


def test_build_with_an_ivf_index_and_inspect_its_lists(albums, tmp_path, capsys):
    out = tmp_path / "ivf.tflite"
    assert cli.main(["build", str(albums), "-o", str(out), "--embedder", TINY, "--index", "ivf:3:2"]) == 0
    assert "index:        IVF (ivf:3:2): 3 lists" in capsys.readouterr().out
    assert cli.main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 probed per query: reads 6 of 9 rows (66.7%)" in text and "outputs the 3 best classes and every" in text
    assert "TOPK_V2" in text and "BATCH_MATMUL" in text
    assert cli.main(["inspect", str(out), "--json"]) == 0
    index = json.loads(capsys.readouterr().out)["index"]
    assert (index["kind"], index["nlist"], index["nprobe"], index["list_length"], index["rows_read"]) == ("ivf", 3, 2, 3, 6)
    assert index["index_bytes"] == 9 * tiny_embedder.DIM + 9 * 4 + 9 * 4 + 3 * tiny_embedder.DIM * 4 + 3 * 4 + 3 * 4


def test_exact_models_say_so_in_inspect_json(built, capsys):
    assert cli.main(["inspect", str(built), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["index"] == {"kind": "exact"}


@pytest.mark.parametrize("index, message", [("ivf:0", "unknown index 'ivf:0'"), ("flat", "unknown index 'flat'"),
                                            ("ivf:4:8", "probes more lists than it has")])
def test_a_bad_index_is_a_one_line_error_and_writes_nothing(albums, tmp_path, capsys, index, message):
    assert cli.main(["build", str(albums), "-o", str(tmp_path / "m.tflite"), "--embedder", TINY, "--index", index]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cbr-lite: error: ") and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
