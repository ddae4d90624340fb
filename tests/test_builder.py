"""Tests for cbr_lite.builder: albums -> one .tflite classifier file, read back, edited, run with LiteRT."""

import io
import os
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
import tiny_embedder

from cbr_lite import builder, classifier, embedders
from cbr_lite.builder import add_classes, build_classifier_file, classifier_file_from_index, embed_albums, remove_classes
from cbr_lite.classifier import Classifier
from cbr_lite.classifier_file import load_index, read_classifier_file, save_index
from cbr_lite.errors import CbrError
from cbr_lite.images import load_image
from cbr_lite.metadata import add_metadata, read_metadata
from cbr_lite.similarity import class_scores, cosine_similarity

TINY = tiny_embedder.register()


@pytest.fixture(scope="module")
def embedder():
    return embedders.load_embedder(TINY)


@pytest.fixture(scope="module")
def albums(tmp_path_factory):
    return tiny_embedder.write_albums(tmp_path_factory.mktemp("albums"))


@pytest.fixture(scope="module")
def model(albums):
    return build_classifier_file(albums, TINY)


@pytest.fixture(scope="module")
def queries():
    """New images of each colour (not in the index), plus one of a colour between two classes."""
    images = [tiny_embedder.colour_image(colour, seed=999 + i, size=(30, 17))
              for i, colour in enumerate(tiny_embedder.COLOURS.values())]
    return images + [tiny_embedder.colour_image((125, 45, 125), seed=5)]


def _album_images(albums):
    return {folder.name: [load_image(p) for p in sorted(folder.iterdir())] for folder in sorted(albums.iterdir())}


def test_file_holds_labels_index_and_how_it_was_built(model, albums, embedder):
    read = read_classifier_file(model)
    images = _album_images(albums)
    assert read.class_names == sorted(tiny_embedder.COLOURS)
    assert read.images_per_class() == {name: len(imgs) for name, imgs in images.items()}
    expected = embedder.embed([image for name in read.class_names for image in images[name]])
    np.testing.assert_allclose(read.index_embeddings, expected, rtol=1e-6, atol=1e-6)
    assert (read.embedder, read.aggregation, read.quantize) == (TINY, "max", "none")
    assert read.input_size == embedder.input_size and read.mean == embedder.mean and read.std == embedder.std
    metadata = read_metadata(model)
    assert metadata["labels"] == read.class_names
    assert metadata["associated_files"] == ["cbr.json", "index.npz", "labels.txt"]


@pytest.mark.parametrize("aggregation", ["max", "mean", "topk:2"])
def test_scores_are_aggregated_cosine_similarities(albums, embedder, queries, aggregation):
    """The invariant: a class score is the aggregation of the query's cosine similarity with that class's
    index images, computed here in NumPy from the embedder's own (Keras) embeddings."""
    data = build_classifier_file(albums, TINY, aggregation=aggregation)
    read = read_classifier_file(data)
    similarities = cosine_similarity(embedder.embed(queries), read.index_embeddings)
    expected = class_scores(similarities, read.image_labels, len(read.class_names), aggregation)
    np.testing.assert_allclose(Classifier(data).scores(queries), expected, atol=2e-5)


def test_same_inputs_give_byte_identical_files(albums, model):
    assert build_classifier_file(albums, TINY) == model
    assert build_classifier_file(albums, TINY, aggregation="mean") != model


def test_index_npz_is_deterministic_and_pickle_free():
    embeddings = np.arange(6, dtype=np.float32).reshape(3, 2)
    data = save_index(embeddings, np.array([0, 1, 1]))
    assert data == save_index(embeddings, np.array([0, 1, 1]))
    read_embeddings, read_labels = load_index(data)
    np.testing.assert_array_equal(read_embeddings, embeddings)
    assert read_labels.tolist() == [0, 1, 1]
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        assert sorted(npz.files) == ["embeddings", "labels"]


def test_index_with_pickled_objects_is_refused():
    stream = io.BytesIO()
    np.savez(stream, embeddings=np.array([object(), 1], dtype=object), labels=np.array([0, 1]))
    with pytest.raises(CbrError, match="damaged|unexpected arrays"):
        load_index(stream.getvalue())


def test_classifier_predicts_the_colour_best_first(model, queries):
    predictions = Classifier(model).predict(queries[:3], top_k=2)
    assert [p[0][0] for p in predictions] == list(tiny_embedder.COLOURS)
    assert all(len(p) == 2 and p[0][1] >= p[1][1] for p in predictions)
    assert len(classifier.classify(model, queries[:1])[0]) == len(tiny_embedder.COLOURS)


def test_add_embeds_only_new_images_and_equals_building_at_once(tmp_path, monkeypatch):
    first = tiny_embedder.write_albums(tmp_path / "first", {k: tiny_embedder.COLOURS[k] for k in ["blåbær", "red thing"]})
    more = tiny_embedder.write_albums(tmp_path / "more", {"green, leafy": tiny_embedder.COLOURS["green, leafy"]},
                                      per_class=2)
    everything = tiny_embedder.write_albums(tmp_path / "all", {k: tiny_embedder.COLOURS[k] for k in ["blåbær", "red thing"]})
    tiny_embedder.write_albums(everything, {"green, leafy": tiny_embedder.COLOURS["green, leafy"]}, per_class=2)
    base = build_classifier_file(first, TINY)

    embedded = []
    original_embed = embedders.Embedder.embed
    monkeypatch.setattr(embedders.Embedder, "embed",
                        lambda self, images, **kw: embedded.append(len(images)) or original_embed(self, images, **kw))
    grown = add_classes(base, more)
    assert sum(embedded) == 2
    _assert_same_classifier(grown, build_classifier_file(everything, TINY))


def _assert_same_classifier(a, b):
    """Same classes, index and settings; embeddings equal up to float rounding (an embedder's result for
    an image can differ in the last bits with the batch it was embedded in)."""
    a, b = read_classifier_file(a), read_classifier_file(b)
    assert (a.class_names, a.image_labels.tolist(), a.aggregation) == (b.class_names, b.image_labels.tolist(), b.aggregation)
    np.testing.assert_allclose(a.index_embeddings, b.index_embeddings, rtol=1e-5, atol=1e-5)


def test_add_to_an_existing_class_appends_its_images(tmp_path, model):
    more = tiny_embedder.write_albums(tmp_path, {"red thing": tiny_embedder.COLOURS["red thing"]}, per_class=2, seed=50)
    read = read_classifier_file(add_classes(model, more))
    assert read.images_per_class() == {"blåbær": 3, "green, leafy": 3, "red thing": 5}
    old = read_classifier_file(model)
    np.testing.assert_array_equal(read.index_embeddings[:9], old.index_embeddings)


def test_remove_equals_building_without_the_class(tmp_path, model):
    kept = {k: tiny_embedder.COLOURS[k] for k in ["blåbær", "red thing"]}
    _assert_same_classifier(remove_classes(model, ["green, leafy"]),
                            build_classifier_file(tiny_embedder.write_albums(tmp_path, kept), TINY))


def test_remove_refuses_unknown_labels_and_leaving_one_class(model):
    with pytest.raises(CbrError, match="no class 'cat'.*blåbær"):
        remove_classes(model, ["cat"])
    with pytest.raises(CbrError, match="at least two classes"):
        remove_classes(model, ["blåbær", "red thing"])


def test_add_refuses_a_changed_embedder(tmp_path, model, monkeypatch):
    def other_size():
        e = tiny_embedder.load_tiny_embedder()
        return embedders.Embedder(TINY, e.model, e.input_size, (0.0,) * 3, (1.0,) * 3)

    monkeypatch.setitem(embedders._REGISTRY, TINY, (other_size, "changed"))
    more = tiny_embedder.write_albums(tmp_path, {"teal": (0, 128, 128)}, per_class=1)
    with pytest.raises(CbrError, match="was built with a different embedder than .tiny-test."):
        add_classes(model, more)


@pytest.fixture(scope="module")
def big_albums(tmp_path_factory):
    """66 index images: a 66 x 16 matrix is big enough (>= 1024 weights) for the converter to quantise."""
    return tiny_embedder.write_albums(tmp_path_factory.mktemp("big_albums"), per_class=22)


@pytest.mark.parametrize("quantize", ["float16", "int8"])
def test_quantized_files_agree_with_float(big_albums, queries, embedder, quantize):
    data = build_classifier_file(big_albums, TINY, quantize=quantize)
    read = read_classifier_file(data)
    assert read.quantize == quantize
    exact = class_scores(cosine_similarity(embedder.embed(queries), read.index_embeddings), read.image_labels, 3)
    scores = Classifier(data).scores(queries)
    np.testing.assert_allclose(scores, exact, atol=0.01)
    assert (scores.argmax(1) == exact.argmax(1)).all()
    # The raw index stays float32, whatever the network's weights are stored as.
    assert read.index_embeddings.dtype == np.float32
    np.testing.assert_allclose(read.index_embeddings, embedder.embed(
        [load_image(p) for folder in sorted(big_albums.iterdir()) for p in sorted(folder.iterdir())]), atol=1e-5)


def test_int8_file_stores_the_index_as_row_scaled_int8(big_albums):
    from ai_edge_litert.interpreter import Interpreter

    from cbr_lite.quantization import quantize_index
    from cbr_lite.similarity import l2_normalize

    data = build_classifier_file(big_albums, TINY, quantize="int8")
    read = read_classifier_file(data)
    expected, _ = quantize_index(l2_normalize(read.index_embeddings), "row")
    interpreter = Interpreter(model_content=data)
    stored = [interpreter.get_tensor(t["index"]) for t in interpreter.get_tensor_details()
              if t["dtype"] == np.int8 and tuple(t["shape"]) == expected.shape]
    assert len(stored) == 1
    np.testing.assert_array_equal(stored[0], expected)


def test_option_typos_fail_before_loading_the_embedder(albums, monkeypatch):
    monkeypatch.setattr(builder, "resolve_embedder", lambda *a, **k: pytest.fail("loaded before checking options"))
    with pytest.raises(CbrError, match="aggregation"):
        build_classifier_file(albums, TINY, aggregation="median")
    with pytest.raises(CbrError, match="quantisation"):
        build_classifier_file(albums, TINY, quantize="int4")


@pytest.mark.parametrize("name, message", [
    ("a\nb", "line break"), ("a\u2028b", "line break"), ("a\x85b", "line break"), ("a\vb", "line break"),
    ("a\x1cb", "line break"), (os.fsdecode(b"caf\xe9"), "not valid UTF-8"), ("  ", "must not be blank"),
])
def test_class_names_that_cannot_be_labels_are_refused_before_loading_the_embedder(tmp_path, monkeypatch, name,
                                                                                    message):
    """One label check, up front (issue 17.10): U+2028, U+0085 or \\v used to be refused only after every
    image was embedded, by the metadata writer, without naming the folder."""
    tiny_embedder.write_albums(tmp_path, {"c": (3, 2, 1)}, per_class=1)
    (tmp_path / name).mkdir()
    (tmp_path / "c" / "00.png").rename(tmp_path / name / "00.png")
    tiny_embedder.write_albums(tmp_path, {"c": (3, 2, 1)}, per_class=1)
    monkeypatch.setattr(builder, "resolve_embedder", lambda *a, **k: pytest.fail("loaded before checking names"))
    with pytest.raises(CbrError, match=message) as error:
        build_classifier_file(tmp_path, TINY)
    assert str(tmp_path) in str(error.value) and "\n" not in str(error.value)
    monkeypatch.setattr(builder, "embed_paths", lambda *a, **k: pytest.fail("embedded before checking names"))
    with pytest.raises(CbrError, match=message):
        embed_albums(tmp_path, tiny_embedder.load_tiny_embedder())


def test_files_that_are_not_cbr_models_are_refused(model):
    with pytest.raises(CbrError, match="not a cbr-lite model"):
        read_classifier_file(b"hello, world" * 10)
    with pytest.raises(CbrError):
        read_classifier_file(model[: len(model) // 2])
    # A TFLite classifier with metadata but none of cbr-lite's own files: classify works, editing does not.
    network_end = model.index(b"PK\x03\x04")
    plain = add_metadata(model[:network_end], labels=["a", "b", "c"], mean=[0.0], std=[1.0], name="x", description="y")
    with pytest.raises(CbrError, match="not one made by cbr-lite"):
        read_classifier_file(plain)
    assert Classifier(plain).labels == ["a", "b", "c"]


def test_damaged_packed_files_are_a_cbr_error(model):
    network_end = model.index(b"PK\x03\x04")
    read = read_classifier_file(model)
    info = read_metadata(model)["cbr_info"]
    damaged = add_metadata(model[:network_end], labels=read.class_names, mean=[0.0], std=[1.0], name="x",
                           description="y", cbr_info=info, extra_files={"index.npz": b"PK\x03\x04 not really"})
    with pytest.raises(CbrError, match="index.npz is damaged"):
        read_classifier_file(damaged)
    wrong_labels = add_metadata(model[:network_end], labels=read.class_names, mean=[0.0], std=[1.0], name="x",
                                description="y", cbr_info=info,
                                extra_files={"index.npz": save_index(read.index_embeddings, read.image_labels + 5)})
    with pytest.raises(CbrError, match="classes the model does not have"):
        read_classifier_file(wrong_labels)
    with zipfile.ZipFile(io.BytesIO(model)) as archive:
        assert archive.testzip() is None


def test_from_index_checks_the_index_matches_the_embedder(embedder):
    with pytest.raises(CbrError, match="dimensions"):
        classifier_file_from_index(embedder, np.ones((2, 3), np.float32), [0, 1], ["a", "b"])
    with pytest.raises(CbrError, match="at least two classes"):
        classifier_file_from_index(embedder, np.ones((2, embedder.dim), np.float32), [0, 0], ["a"])


# --- centring and full-integer files -------------------------------------------------------------------

def test_centred_file_scores_centred_cosines_and_keeps_centring_through_add_and_remove(tmp_path, albums, embedder,
                                                                                        queries):
    data = build_classifier_file(albums, TINY, center=True)
    read = read_classifier_file(data)
    assert read.center and not read_classifier_file(build_classifier_file(albums, TINY)).center
    mean = read.index_embeddings.mean(axis=0)
    exact = class_scores(cosine_similarity(embedder.embed(queries) - mean, read.index_embeddings - mean),
                         read.image_labels, 3)
    np.testing.assert_allclose(Classifier(data).scores(queries), exact, atol=1e-5)
    assert "SUB" in dict(classifier.count_ops(data))
    # The mean follows the index: removing a class (or adding one) recentres on what is left.
    smaller = remove_classes(data, ["green, leafy"])
    kept = read_classifier_file(smaller)
    assert kept.center
    mean = kept.index_embeddings.mean(axis=0)
    exact = class_scores(cosine_similarity(embedder.embed(queries) - mean, kept.index_embeddings - mean),
                         kept.image_labels, 2)
    np.testing.assert_allclose(Classifier(smaller).scores(queries), exact, atol=1e-5)
    more = tiny_embedder.write_albums(tmp_path, {"green, leafy": tiny_embedder.COLOURS["green, leafy"]})
    regrown = add_classes(smaller, more)
    assert read_classifier_file(regrown).center
    np.testing.assert_allclose(Classifier(regrown).scores(queries), Classifier(data).scores(queries), atol=1e-5)


def test_int8_full_file_takes_uint8_pixels_and_agrees_with_float(big_albums, queries):
    data = build_classifier_file(big_albums, TINY, quantize="int8-full")
    classifier = Classifier(data)
    assert classifier.uint8_input and read_classifier_file(data).quantize == "int8-full"
    float_scores = Classifier(build_classifier_file(big_albums, TINY)).scores(queries)
    scores = classifier.scores(queries)
    assert (scores.argmax(1) == float_scores.argmax(1))[:3].all()  # the three clear colours
    np.testing.assert_allclose(scores, float_scores, atol=0.05)
    with pytest.raises(CbrError, match="int8-full, calibrated on album images"):
        remove_classes(data, ["blåbær"])
    with pytest.raises(CbrError, match="int8-full model is calibrated on images"):
        classifier_file_from_index(TINY, read_classifier_file(data).index_embeddings,
                                   read_classifier_file(data).image_labels, sorted(tiny_embedder.COLOURS),
                                   quantize="int8-full")


# --- IVF files (cbr_lite.ivf): the head for very many classes, here on a tiny index -------------------------------

LOWEST = np.finfo(np.float32).min


def _ivf_reference(read, query_embeddings, nlist, nprobe):
    """What the IVF file must answer, from NumPy: the same seeded lists, then :func:`cbr_lite.ivf.ivf_scores`;
    each class found scores its best image, the others the lowest float32."""
    from cbr_lite import ivf

    mean = read.index_embeddings.mean(axis=0) if read.center else 0.0
    lists = ivf.build_inverted_lists(read.index_embeddings - mean, read.image_labels, len(read.class_names), nlist)
    scores, classes = ivf.ivf_scores(lists, query_embeddings - mean, nprobe, k=len(read.class_names))
    expected = np.full((len(query_embeddings), len(read.class_names)), LOWEST, np.float32)
    for row, (s, c) in enumerate(zip(scores, classes)):
        expected[row, c[c >= 0]] = s[c >= 0]
    return expected


@pytest.mark.parametrize("center", [False, True])
def test_ivf_file_answers_as_the_numpy_reference_and_keeps_its_lists_through_remove_and_add(tmp_path, big_albums,
                                                                                            embedder, queries, center):
    data = build_classifier_file(big_albums, TINY, index="ivf:4:2", center=center)
    read = read_classifier_file(data)
    assert read.index["spec"] == "ivf:4:2" and (read.index["nlist"], read.index["nprobe"]) == (4, 2)
    assert read.index["rows_read"] == 2 * read.index["list_length"] and read.index["full_scores"]
    assert read.center == center and read_metadata(data)["outputs"] == ["scores", "top_classes", "top_scores"]
    expected = _ivf_reference(read, embedder.embed(queries), 4, 2)
    scores = Classifier(data).scores(queries)
    np.testing.assert_array_equal(scores == LOWEST, expected == LOWEST)  # the same classes found
    np.testing.assert_allclose(scores, expected, atol=2e-5)
    assert (scores.argmax(1)[:3] == [0, 1, 2]).all()  # the three clear colours
    assert {"TOPK_V2", "BATCH_MATMUL", "UNSORTED_SEGMENT_MAX"} <= set(dict(classifier.count_ops(data)))
    # remove and add rebuild the lists from the index they leave, with the same --index.
    smaller = remove_classes(data, ["green, leafy"])
    kept = read_classifier_file(smaller)
    assert kept.index["spec"] == "ivf:4:2" and kept.center == center
    np.testing.assert_allclose(Classifier(smaller).scores(queries), _ivf_reference(kept, embedder.embed(queries), 4, 2),
                               atol=2e-5)
    more = tiny_embedder.write_albums(tmp_path, {"green, leafy": tiny_embedder.COLOURS["green, leafy"]}, per_class=22)
    regrown = add_classes(smaller, more)
    assert read_classifier_file(regrown).index == read.index
    np.testing.assert_allclose(Classifier(regrown).scores(queries), scores, atol=2e-5)


def test_ivf_probing_every_list_is_the_exact_search_of_its_int8_rows(big_albums, embedder, queries):
    from cbr_lite.quantization import dequantize_index, quantize_index
    from cbr_lite.similarity import l2_normalize

    data = build_classifier_file(big_albums, TINY, index="ivf:4:4")
    read = read_classifier_file(data)
    rows = dequantize_index(*quantize_index(l2_normalize(read.index_embeddings), "row"))
    # The head scores the unit query against the dequantised rows as they are (not normalised again).
    exact = class_scores(l2_normalize(embedder.embed(queries)) @ rows.T, read.image_labels, 3)
    np.testing.assert_allclose(Classifier(data).scores(queries), exact, atol=2e-5)


def test_ivf_file_without_the_full_vector_gives_the_top_classes_to_the_classifier(big_albums, queries, monkeypatch):
    """Above ivf.FULL_SCORES_LIMIT classes the file outputs only the top classes and scores; labels.txt then
    names the values of top_classes, and Classifier makes the score vector from the two outputs."""
    from cbr_lite import ivf

    full = build_classifier_file(big_albums, TINY, index="ivf:4:2")
    monkeypatch.setattr(ivf, "FULL_SCORES_LIMIT", 1)
    data = build_classifier_file(big_albums, TINY, index="ivf:4:2")
    metadata = read_metadata(data)
    assert metadata["outputs"] == ["top_classes", "top_scores"] and metadata["labels"] == sorted(tiny_embedder.COLOURS)
    assert not read_classifier_file(data).index["full_scores"]
    top_only, with_vector = Classifier(data), Classifier(full)
    assert top_only.top_k_only and not with_vector.top_k_only
    np.testing.assert_allclose(top_only.scores(queries), with_vector.scores(queries), atol=1e-6)
    assert top_only.predict(queries, top_k=2) == with_vector.predict(queries, top_k=2)
    assert read_metadata(remove_classes(data, ["blåbær"]))["outputs"] == ["top_classes", "top_scores"]


def test_ivf_refuses_what_it_cannot_do_before_loading_the_embedder(albums, monkeypatch):
    monkeypatch.setattr(builder, "resolve_embedder", lambda *a, **k: pytest.fail("loaded before checking options"))
    with pytest.raises(CbrError, match="unknown index 'ivf:x'"):
        build_classifier_file(albums, TINY, index="ivf:x")
    with pytest.raises(CbrError, match="use aggregation max with it"):
        build_classifier_file(albums, TINY, index="ivf", aggregation="mean")
    with pytest.raises(CbrError, match="use quantisation none, float16 or int8 with it"):
        build_classifier_file(albums, TINY, index="ivf", quantize="int8-full")


def test_ivf_with_more_lists_than_images_is_refused_and_so_is_a_remove_that_leaves_too_few(albums, model):
    with pytest.raises(CbrError, match="10 lists for 9 index images; use at most 9 lists"):
        build_classifier_file(albums, TINY, index="ivf:10")
    data = build_classifier_file(albums, TINY, index="ivf:9:2")
    with pytest.raises(CbrError, match="9 lists for 6 index images"):
        remove_classes(data, ["blåbær"])
