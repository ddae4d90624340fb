"""Folders of class folders -> sorted paths and labels; command-line inputs -> image paths."""

import numpy as np
import pytest

from cbr_lite.albums import expand_inputs, find_albums, load_albums
from cbr_lite.errors import CbrError
from cbr_lite.images import load_image


def pixels(value):
    return np.full((10, 12, 3), value, dtype=np.uint8)


def test_classes_and_images_come_in_sorted_order_whatever_the_creation_order(tmp_path, write_image):
    # Created out of order; listings must not depend on the file system's order.
    for name in ["mug/b.png", "cat/2.png", "mug/a.PNG", "cat/10.jpg", "Zebra/z.bmp", "cat/1.png"]:
        write_image(f"albums/{name}", pixels(len(name)))
    albums = find_albums(tmp_path / "albums")
    assert [name for name, _ in albums] == ["Zebra", "cat", "mug"]
    assert [[p.name for p in paths] for _, paths in albums] == [["z.bmp"], ["1.png", "10.jpg", "2.png"],
                                                                ["a.PNG", "b.png"]]


def test_load_albums_gives_images_labels_and_paths_in_step(colour_albums):
    albums = load_albums(colour_albums)
    assert albums.class_names == sorted(p.name for p in colour_albums.iterdir())
    assert albums.image_labels.dtype == np.int32 and albums.image_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for image, label, path in zip(albums.images, albums.image_labels, albums.paths):
        assert path.parent.name == albums.class_names[label]
        np.testing.assert_array_equal(image, load_image(path))
    again = load_albums(colour_albums)
    assert again.paths == albums.paths and all(np.array_equal(a, b) for a, b in zip(again.images, albums.images))


def test_hidden_files_hidden_folders_and_other_suffixes_are_ignored(tmp_path, write_image):
    write_image("albums/cat/a.png", pixels(1))
    write_image("albums/cat/.hidden.png", pixels(2))
    write_image("albums/.ipynb_checkpoints/a-checkpoint.png", pixels(3))
    write_image("albums/dog/b.jpg", pixels(4))
    (tmp_path / "albums/dog/.DS_Store").write_bytes(b"\0\1")
    (tmp_path / "albums/dog/notes.txt").write_text("not an image")
    (tmp_path / "albums/README.md").write_text("a file next to the class folders")
    albums = find_albums(tmp_path / "albums")
    assert [(name, [p.name for p in paths]) for name, paths in albums] == [("cat", ["a.png"]), ("dog", ["b.jpg"])]


def test_only_the_top_level_folders_are_classes(tmp_path, write_image):
    write_image("albums/animals/cat/a.png", pixels(1))
    write_image("albums/animals/b.png", pixels(2))
    write_image("albums/mugs/c.png", pixels(3))
    albums = find_albums(tmp_path / "albums")
    assert [(name, [p.name for p in paths]) for name, paths in albums] == [("animals", ["b.png"]), ("mugs", ["c.png"])]


def test_a_class_folder_without_images_is_named(tmp_path, write_image):
    write_image("albums/cat/a.png", pixels(1))
    (tmp_path / "albums/empty class").mkdir()
    with pytest.raises(CbrError, match="empty class: class folder has no images") as error:
        find_albums(tmp_path / "albums")
    assert str(tmp_path / "albums/empty class") in str(error.value)


@pytest.mark.parametrize("make, message", [
    (lambda root: None, "no such folder"),
    (lambda root: root.write_text("x"), "is a file"),
    (lambda root: root.mkdir(), "has no class folders"),
    (lambda root: (root / ".hidden").mkdir(parents=True), "has no class folders"),
])
def test_a_bad_root_is_refused(tmp_path, make, message):
    root = tmp_path / "albums"
    make(root)
    with pytest.raises(CbrError, match=message) as error:
        find_albums(root)
    assert str(root) in str(error.value)


@pytest.fixture
def albums_with_a_bad_image(tmp_path, write_image):
    write_image("albums/cat/a.png", pixels(1))
    write_image("albums/cat/c.png", pixels(2))
    (tmp_path / "albums/cat/b.jpg").write_text("not a photo")
    write_image("albums/dog/d.png", pixels(3))
    return tmp_path / "albums"


def test_a_bad_image_stops_loading_with_its_path(albums_with_a_bad_image):
    with pytest.raises(CbrError, match="b.jpg: not a readable image"):
        load_albums(albums_with_a_bad_image)


def test_a_bad_image_can_be_skipped_with_a_warning(albums_with_a_bad_image):
    warnings = []
    albums = load_albums(albums_with_a_bad_image, on_bad_image="skip", warn=warnings.append)
    assert [p.name for p in albums.paths] == ["a.png", "c.png", "d.png"]
    assert albums.image_labels.tolist() == [0, 0, 1]
    assert len(warnings) == 1 and "b.jpg" in warnings[0] and warnings[0].startswith("skipped ")


def test_skip_warns_on_stderr_by_default(albums_with_a_bad_image, capsys):
    load_albums(albums_with_a_bad_image, on_bad_image="skip")
    err = capsys.readouterr().err
    assert err.startswith("warning: skipped ") and "b.jpg" in err and err.count("\n") == 1


def test_skipping_every_image_of_a_class_is_still_an_error(tmp_path, write_image):
    write_image("albums/cat/a.png", pixels(1))
    (tmp_path / "albums/dog").mkdir()
    (tmp_path / "albums/dog/broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(CbrError, match="no readable images left") as error:
        load_albums(tmp_path / "albums", on_bad_image="skip", warn=lambda message: None)
    assert str(tmp_path / "albums/dog") in str(error.value)


def test_on_bad_image_must_be_error_or_skip(colour_albums):
    with pytest.raises(CbrError, match="on_bad_image must be one of error, skip"):
        load_albums(colour_albums, on_bad_image="ignore")


def test_expand_inputs_keeps_files_and_expands_folders_recursively_in_order(tmp_path, write_image):
    single = write_image("z_single.png", pixels(1))
    for name in ["photos/b.png", "photos/a/2.jpg", "photos/a/1.png", "photos/.cache/x.png",
                 "photos/a/.hidden.png", "photos/notes.txt"]:
        write_image(name, pixels(2)) if name.endswith(("png", "jpg")) else (tmp_path / name).write_text("x")
    found = expand_inputs([single, tmp_path / "photos"])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "z_single.png", "photos/a/1.png", "photos/a/2.jpg", "photos/b.png"]


def test_expand_inputs_accepts_a_hidden_folder_given_explicitly(tmp_path, write_image):
    write_image(".data/a.png", pixels(1))
    assert [p.name for p in expand_inputs([str(tmp_path / ".data")])] == ["a.png"]


@pytest.mark.parametrize("inputs, message", [
    (["missing.png"], "missing.png: no such file or folder"),
    (["empty"], "empty: folder has no images"),
    ([], "no images given"),
])
def test_expand_inputs_refuses_nothing_to_read(tmp_path, monkeypatch, inputs, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CbrError, match=message):
        expand_inputs(inputs)
