"""Tests for cbr_lite.glyphs: the offline data is deterministic, disjoint between splits, and visible."""

import numpy as np
import pytest

from cbr_lite import glyphs
from cbr_lite.errors import CbrError


@pytest.fixture(scope="module")
def splits():
    return {split: glyphs.glyph_classes(split) for split in glyphs.SPLITS}


def test_splits_are_disjoint_large_and_labelled_readably(splits):
    codepoints = {split: {c for _, c in classes} for split, classes in splits.items()}
    assert not codepoints["base"] & codepoints["novel"]
    assert not codepoints["base"] & codepoints["icons"]
    assert not codepoints["novel"] & codepoints["icons"]
    assert len(codepoints["base"]) > 1000 and len(codepoints["novel"]) > 200 and len(codepoints["icons"]) > 100
    for classes in splits.values():
        labels = [label for label, _ in classes]
        assert len(set(labels)) == len(labels)
        assert all(label and label.replace("_", "").isalnum() and label.isascii() for label in labels)
    # Shape duplicates across scripts were dropped: Latin "A" is base, so Greek capital alpha is not novel.
    assert 0x41 in codepoints["base"] and 0x391 not in codepoints["novel"]
    assert 0x3B2 in codepoints["novel"]  # greek small beta differs from every Latin/IPA shape
    assert 0x3B1 not in codepoints["novel"]  # greek small alpha looks like IPA's latin alpha
    assert glyphs.class_label(0x3B2) == "greek_beta"


def test_class_lists_are_recomputed_when_their_recipe_changes(monkeypatch):
    key = glyphs.classes_key()
    assert len(key) == 64 and key == glyphs.classes_key()
    monkeypatch.setattr(glyphs, "DUPLICATE_IOU", 0.9)
    assert glyphs.classes_key() != key


def test_the_committed_class_lists_are_current_on_this_python():
    # The key takes each drawn character's Unicode data, not the Unicode version, which every Python
    # changes: one committed file must serve Python 3.10-3.13 without recomputing (about 20 s).
    import json

    with open(glyphs.CLASSES_FILE) as file:
        assert json.load(file)["key"] == glyphs.classes_key()


def test_rendering_is_deterministic_per_sample_and_not_blank():
    classes = [("greek_alpha", 0x3B1), ("hebrew_alef", 0x5D0)]
    images, labels = glyphs.render_glyphs(classes, 3, seed=0)
    again, _ = glyphs.render_glyphs(classes[::-1], 3, seed=0)
    other, _ = glyphs.render_glyphs(classes, 3, seed=1)
    assert images.shape == (6, 64, 64, 3) and images.dtype == np.uint8
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    # A sample depends only on (seed, code point, index), not on which other classes are rendered with it.
    np.testing.assert_array_equal(images[:3], again[3:])
    assert not np.array_equal(images, other)
    assert all(image.std() > 5 for image in images)


def test_clean_glyph_is_black_on_white_and_shows_the_character():
    alpha = glyphs.render_glyph(0x3B1, np.random.default_rng(0), clean=True)
    alef = glyphs.render_glyph(0x5D0, np.random.default_rng(0), clean=True)
    assert alpha[0, 0].tolist() == [255, 255, 255]
    ink = (alpha.mean(axis=2) < 128).mean()
    assert 0.02 < ink < 0.5
    assert np.abs(alpha.astype(int) - alef.astype(int)).mean() > 5


def test_shapes_and_photo_regions_render_deterministically():
    shapes = glyphs.shape_classes(3)
    a, labels = glyphs.render_shapes(shapes, 2, seed=0)
    b, _ = glyphs.render_shapes(shapes, 2, seed=0)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (6, 64, 64, 3) and labels.tolist() == [0, 0, 1, 1, 2, 2]
    regions = glyphs.photo_classes("novel")
    assert regions[0] == ("astronaut_r0_c0", ("astronaut", 0, 0, 2, 3))
    assert not {name for name, _ in glyphs.photo_classes("base")} & {name for name, _ in regions}
    crops, _ = glyphs.render_photos(regions[:2], 2, seed=0)
    np.testing.assert_array_equal(crops, glyphs.render_photos(regions[:2], 2, seed=0)[0])
    assert crops.shape == (4, 64, 64, 3) and crops.std() > 5


def test_bad_requests_raise_cbr_errors(tmp_path):
    with pytest.raises(CbrError, match="unknown glyph split"):
        glyphs.glyph_classes("train")
    with pytest.raises(CbrError, match="unknown photo split"):
        glyphs.photo_classes("test")
    with pytest.raises(CbrError, match="no matplotlib font"):
        glyphs.render_glyph(0xE000, np.random.default_rng(0))  # a private-use code point
    with pytest.raises(CbrError, match="samples_per_class"):
        glyphs.render_glyphs([("a", 0x61)], 0, seed=0)


def test_write_albums_writes_class_folders(tmp_path):
    paths = glyphs.write_albums(tmp_path, [("greek_alpha", 0x3B1), ("greek_beta", 0x3B2)], 2, seed=0)
    names = [p.replace(str(tmp_path), "").lstrip("/\\") for p in paths]
    assert names == ["greek_alpha/greek_alpha_0.png", "greek_alpha/greek_alpha_1.png",
                     "greek_beta/greek_beta_0.png", "greek_beta/greek_beta_1.png"]
    first = (tmp_path / "greek_alpha" / "greek_alpha_0.png").read_bytes()
    glyphs.write_albums(tmp_path, [("greek_alpha", 0x3B1)], 1, seed=0)
    assert (tmp_path / "greek_alpha" / "greek_alpha_0.png").read_bytes() == first
