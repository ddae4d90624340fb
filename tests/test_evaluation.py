"""Tests for cbr_lite.evaluation: episodes give the answers we can work out by hand, and the committed
default embedder beats raw pixels on glyphs of scripts it never saw."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

from cbr_lite.errors import CbrError
from cbr_lite.evaluation import DOMAINS, episodes, few_shot_accuracy, load_domain, raw_pixel_embedder
from cbr_lite.similarity import class_scores, cosine_similarity


def _clusters(classes, per_class, spread, seed=0, dim=16):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    labels = np.repeat(np.arange(classes), per_class)
    return centres[labels] + spread * rng.normal(size=(len(labels), dim)), labels


def test_separated_classes_are_always_right():
    embeddings, labels = _clusters(8, 10, spread=0.01)
    assert few_shot_accuracy(embeddings, labels, ways=5, shots=1, episodes=50) == (1.0, 0.0)


def test_indistinguishable_classes_score_chance():
    # Labels independent of the embeddings: accuracy must be 1/ways within the confidence interval.
    rng = np.random.default_rng(1)
    embeddings, labels = rng.normal(size=(400, 16)), np.repeat(np.arange(20), 20)
    mean, ci95 = few_shot_accuracy(embeddings, labels, ways=5, shots=1, episodes=400)
    assert abs(mean - 0.2) < max(2 * ci95, 0.03)
    assert 0 < ci95 < 0.05


def test_accuracy_matches_hand_enumeration_of_episodes():
    # Class 0: images a=[1,0], b=[1,.1]; class 1: c=[0,1], d=[1,.05] (d looks like class 0).
    # 2-way 1-shot 1-query: 4 equally likely episodes (which image of each class is the index).
    #   index a, c: queries b->a right, d->a wrong           = 1/2
    #   index b, c: queries a->b right, d->b wrong           = 1/2
    #   index a, d: queries b->d wrong (.9988 > .995), c->d right (.05 > 0) = 1/2
    #   index b, d: queries a->d wrong, c->b wrong (.0995 > .05)            = 0
    embeddings = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [1.0, 0.05]])
    labels = np.array([0, 0, 1, 1])
    mean, ci95 = few_shot_accuracy(embeddings, labels, ways=2, shots=1, queries_per_class=1, episodes=1000)
    assert abs(mean - 0.375) < 0.04
    assert ci95 > 0


def test_more_shots_help_on_noisy_clusters():
    embeddings, labels = _clusters(10, 20, spread=1.0)
    one = few_shot_accuracy(embeddings, labels, shots=1, episodes=100)
    five = few_shot_accuracy(embeddings, labels, shots=5, episodes=100)
    assert five.mean > one.mean


def test_same_seed_same_result_and_bad_requests():
    embeddings, labels = _clusters(6, 8, spread=1.0)
    assert few_shot_accuracy(embeddings, labels, seed=3) == few_shot_accuracy(embeddings, labels, seed=3)
    with pytest.raises(CbrError, match="6 classes"):
        few_shot_accuracy(embeddings, labels, ways=7)
    with pytest.raises(CbrError, match="embeddings"):
        few_shot_accuracy(embeddings, labels[:-1])


def test_episodes_are_disjoint_draws_that_few_shot_accuracy_scores():
    embeddings, labels = _clusters(9, 7, spread=1.0, seed=4)
    drawn = episodes(labels, ways=4, shots=2, queries_per_class=3, count=30, seed=5)
    assert len(drawn) == 30
    for episode in drawn:
        assert len(set(episode.index_rows) | set(episode.query_rows)) == 4 * (2 + 3)   # no image used twice
        assert episode.index_labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
        assert episode.query_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
        # Each way is one real class, the same for its index images and its queries.
        for way in range(4):
            used = labels[episode.index_rows[episode.index_labels == way]]
            asked = labels[episode.query_rows[episode.query_labels == way]]
            assert len(set(used) | set(asked)) == 1
    # Scoring these episodes by hand gives few_shot_accuracy's mean, exactly.
    by_hand = [np.mean(class_scores(cosine_similarity(embeddings[e.query_rows], embeddings[e.index_rows]),
                                    e.index_labels, 4).argmax(axis=1) == e.query_labels) for e in drawn]
    result = few_shot_accuracy(embeddings, labels, ways=4, shots=2, queries_per_class=3, episodes=30, seed=5)
    assert result.mean == pytest.approx(np.mean(by_hand), abs=1e-12)
    with pytest.raises(CbrError, match="9 classes"):
        episodes(labels, ways=10)


def test_raw_pixel_baseline_embeds_images_as_their_pixels():
    embedder = raw_pixel_embedder(size=8)
    image = np.zeros((8, 8, 3), np.uint8)
    image[2:5, 3:6] = 255
    embedding = embedder.embed([image])
    assert embedding.shape == (1, 8 * 8 * 3)
    np.testing.assert_allclose(embedding[0], (image.ravel() - 127.5) / 127.5)


def test_handwriting_domain_is_dark_ink_on_white():
    images, labels, names = load_domain("handwriting")
    assert images.dtype == np.uint8 and images.shape[1:] == (64, 64, 3)
    assert names == [str(d) for d in range(10)] and set(labels) == set(range(10))
    assert np.median(images) > 200  # mostly paper
    with pytest.raises(CbrError, match="unknown evaluation domain"):
        load_domain("nope")
    assert "handwriting" in DOMAINS


@pytest.mark.skipif(not os.path.exists(os.path.join(os.path.dirname(__file__), "..", "data", "embedders",
                                                    "glyph_cnn.keras")), reason="no committed glyph-cnn")
def test_committed_embedder_beats_raw_pixels_on_novel_glyphs():
    from cbr_lite import glyphs
    from cbr_lite.embedders import load_embedder

    # A small slice of the domain keeps the test to seconds: 40 novel classes x 6 samples.
    classes = glyphs.glyph_classes("novel")[::10]
    images, labels = glyphs.render_glyphs(classes, 6, seed=1, photos=glyphs.NOVEL_PHOTOS)
    trained = few_shot_accuracy(load_embedder("glyph-cnn").embed(images), labels, shots=1, episodes=100)
    raw = few_shot_accuracy(raw_pixel_embedder().embed(images), labels, shots=1, episodes=100)
    assert trained.mean > raw.mean + 0.15, (trained, raw)
