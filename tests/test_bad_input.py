"""Bad input, nothing lost: every mistake gets one clear line and a non-zero exit, never a traceback,
and a model file that was already at the output path is left exactly as it was."""

import io
import os
import struct
import zlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
import tiny_embedder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cbr_lite import cli
from cbr_lite.builder import build_classifier_file
from cbr_lite.classifier import Classifier
from cbr_lite.classifier_file import read_classifier_file
from cbr_lite.errors import CbrError
from cbr_lite.images import MIN_SIDE, load_image

TINY = tiny_embedder.register()
PREVIOUS = b"a previous model that must survive a failed command"


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims ``width`` x ``height`` pixels (a decompression bomb's shape)."""
    stream = io.BytesIO()
    Image.new("L", (1, 1)).save(stream, format="PNG")
    data = bytearray(stream.getvalue())
    ihdr = bytearray(data[16:29])  # IHDR payload: width, height, depth, colour type, ...
    ihdr[0:8] = struct.pack(">II", width, height)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)))
    return bytes(data)


def _good_png(seed=0, colour=(200, 30, 30)) -> bytes:
    stream = io.BytesIO()
    Image.fromarray(tiny_embedder.colour_image(colour, seed)).save(stream, format="PNG")
    return stream.getvalue()


def _truncated_jpeg() -> bytes:
    stream = io.BytesIO()
    Image.fromarray(tiny_embedder.colour_image((10, 200, 10), 1, (64, 64))).save(stream, format="JPEG")
    return stream.getvalue()[:300]


def _corrupt_png() -> bytes:
    """A PNG with a valid header whose compressed pixel data has been overwritten."""
    data = bytearray(_good_png(seed=4))
    start = data.index(b"IDAT") + 20
    data[start:start + 200] = bytes(200)
    return bytes(data)


def _one_by_one() -> bytes:
    stream = io.BytesIO()
    Image.new("RGB", (1, 1), (9, 9, 9)).save(stream, format="PNG")
    return stream.getvalue()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    albums = tiny_embedder.write_albums(tmp_path_factory.mktemp("albums"), per_class=2)
    path = tmp_path_factory.mktemp("model") / "good.tflite"
    path.write_bytes(build_classifier_file(albums, TINY))
    return path


def _run_failing(argv, capsys, expected):
    """Run the CLI, expecting exit 2 and exactly one error line on stderr that contains ``expected``
    (besides ``warning:`` lines for skipped images)."""
    capsys.readouterr()
    status = cli.main(argv)
    captured = capsys.readouterr()
    assert status == 2, captured
    lines = [line for line in captured.err.splitlines() if not line.startswith("warning: skipped")]
    assert len(lines) == 1 and lines[0].startswith("cbr-lite: error: "), captured.err
    assert "Traceback" not in captured.err
    assert expected.lower() in lines[0].lower(), lines[0]
    return lines[0]


def _album_with(tmp_path, bad_name, bad_bytes):
    """Two good classes, plus ``bad_bytes`` written as ``red/bad_name``."""
    root = tiny_embedder.write_albums(tmp_path / "albums", {"red": (200, 30, 30), "blue": (30, 30, 200)}, per_class=2)
    (root / "red" / bad_name).write_bytes(bad_bytes)
    return root


BAD_IMAGES = {
    "truncated": ("cut.jpg", _truncated_jpeg(), "truncated"),
    "text named jpg": ("notes.jpg", b"these are my holiday notes, not a picture\n", "not a readable image"),
    "empty file": ("empty.png", b"", "not a readable image"),
    "1x1": ("dot.png", _one_by_one(), "too small"),
    "decompression bomb": ("bomb.png", png_claiming(30_000, 30_000), "decompression bomb"),
    "huge image": ("huge.png", png_claiming(10_500, 10_000), "decompression bomb"),
    "corrupt header": ("noise.png", _good_png()[:40] + bytes(range(256)) * 4, "not a readable image"),
    "corrupt pixels": ("flipped.png", _corrupt_png(), "corrupt or truncated image"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_image_in_albums_fails_and_keeps_the_old_model(case, tmp_path, capsys):
    name, data, expected = BAD_IMAGES[case]
    root = _album_with(tmp_path, name, data)
    out = tmp_path / "out.tflite"
    out.write_bytes(PREVIOUS)
    line = _run_failing(["build", str(root), "-o", str(out), "--embedder", TINY], capsys, expected)
    assert name in line  # the message names the file
    assert out.read_bytes() == PREVIOUS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["albums", "out.tflite"]  # no temporary file left


def test_bad_images_can_be_skipped_with_a_warning(tmp_path, capsys):
    root = _album_with(tmp_path, "notes.jpg", b"not an image")
    (root / "red" / "dot.png").write_bytes(_one_by_one())
    out = tmp_path / "out.tflite"
    assert cli.main(["build", str(root), "-o", str(out), "--embedder", TINY, "--on-bad-image", "skip"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("warning: skipped") == 2 and "notes.jpg" in captured.err
    assert read_classifier_file(out.read_bytes()).images_per_class() == {"blue": 2, "red": 2}


def test_a_class_with_only_bad_images_is_an_error_even_when_skipping(tmp_path, capsys):
    root = _album_with(tmp_path, "x.jpg", b"nope")
    (root / "green").mkdir()
    (root / "green" / "y.png").write_bytes(b"nope")
    _run_failing(["build", str(root), "-o", str(tmp_path / "m.tflite"), "--embedder", TINY, "--on-bad-image", "skip"],
                 capsys, "green: no readable images left")


@pytest.mark.parametrize("case", ["missing", "empty", "file", "empty class", "one class", "line break", "blank name"])
def test_bad_albums_folder(case, tmp_path, capsys):
    root = tmp_path / "albums"
    expected = {
        "missing": "no such folder", "empty": "has no class folders", "file": "is a file",
        "empty class": "class folder has no images", "one class": "at least two classes",
        "line break": "line break", "blank name": "must not be blank",
    }[case]
    if case == "empty":
        root.mkdir()
    elif case == "file":
        root.write_bytes(b"x")
    elif case == "empty class":
        tiny_embedder.write_albums(root, {"red": (200, 0, 0), "blue": (0, 0, 200)}, per_class=1)
        (root / "nothing here").mkdir()
    elif case == "one class":
        tiny_embedder.write_albums(root, {"red": (200, 0, 0)}, per_class=2)
    elif case == "line break":
        tiny_embedder.write_albums(root, {"red\nalert": (200, 0, 0), "blue": (0, 0, 200)}, per_class=1)
    elif case == "blank name":
        tiny_embedder.write_albums(root, {"  ": (200, 0, 0), "blue": (0, 0, 200)}, per_class=1)
    out = tmp_path / "out.tflite"
    out.write_bytes(PREVIOUS)
    _run_failing(["build", str(root), "-o", str(out), "--embedder", TINY], capsys, expected)
    assert out.read_bytes() == PREVIOUS


def test_one_class_error_says_why(tmp_path, capsys):
    root = tiny_embedder.write_albums(tmp_path / "albums", {"red": (200, 0, 0)}, per_class=2)
    line = _run_failing(["build", str(root), "-o", str(tmp_path / "m.tflite"), "--embedder", TINY], capsys, "two")
    assert "same answer for every image" in line


@pytest.mark.parametrize("command", ["build", "add", "remove", "embed"])
def test_output_in_a_missing_folder_fails_before_any_work(command, model, tmp_path, capsys, monkeypatch):
    from cbr_lite import builder

    monkeypatch.setattr(builder, "embed_paths", lambda *a, **k: pytest.fail("embedded before checking the output"))
    albums = tiny_embedder.write_albums(tmp_path / "albums", {"teal": (0, 128, 128)}, per_class=1)
    out = str(tmp_path / "missing" / "m.tflite")
    argv = {
        "build": ["build", str(albums), "-o", out, "--embedder", TINY],
        "add": ["add", str(model), str(albums), "-o", out],
        "remove": ["remove", str(model), "red thing", "-o", out],
        "embed": ["embed", str(albums), "-o", out, "--embedder", TINY],
    }[command]
    _run_failing(argv, capsys, "does not exist; create it first")


def test_output_that_is_a_folder(model, tmp_path, capsys):
    _run_failing(["remove", str(model), "red thing", "-o", str(tmp_path)], capsys, "is a folder")


@pytest.mark.parametrize("image_mode", ["L", "LA", "RGBA", "P", "I;16", "CMYK", "1"])
def test_unusual_pixel_formats_build(image_mode, tmp_path, capsys):
    root = tiny_embedder.write_albums(tmp_path / "albums", {"red": (200, 30, 30), "blue": (30, 30, 200)}, per_class=1)
    rgb = Image.fromarray(tiny_embedder.colour_image((30, 200, 30), 3, (20, 20)))
    if image_mode == "I;16":
        image = Image.fromarray((np.asarray(rgb.convert("L"), np.uint16) * 257).astype(np.uint16))
        assert image.mode.startswith("I;16")
    else:
        image = rgb.convert(image_mode)
    suffix = ".jpg" if image_mode == "CMYK" else ".png"
    (root / "green").mkdir()
    image.save(root / "green" / f"odd{suffix}")
    out = tmp_path / "m.tflite"
    assert cli.main(["build", str(root), "-o", str(out), "--embedder", TINY]) == 0, capsys.readouterr().err
    assert read_classifier_file(out.read_bytes()).images_per_class() == {"blue": 1, "green": 1, "red": 1}


def test_awkward_label_names_round_trip(tmp_path, capsys):
    import json

    names = {"two words": (200, 30, 30), "a, b": (30, 200, 30), "日本 ☕ é": (30, 30, 200), " padded ": (128, 128, 0)}
    root = tiny_embedder.write_albums(tmp_path / "albums", names, per_class=1)
    out = tmp_path / "m.tflite"
    assert cli.main(["build", str(root), "-o", str(out), "--embedder", TINY]) == 0
    capsys.readouterr()
    assert cli.main(["classify", str(out), str(root / "a, b" / "00.png"), "--json", "--top-k", "0"]) == 0
    predictions = json.loads(capsys.readouterr().out)[0]["predictions"]
    assert sorted(p["label"] for p in predictions) == sorted(names)
    assert predictions[0]["label"] == "a, b"
    assert cli.main(["remove", str(out), "日本 ☕ é", " padded ", "-o", str(out)]) == 0
    assert read_classifier_file(out.read_bytes()).class_names == ["a, b", "two words"]


NOT_MODELS = {
    "random bytes": bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)),
    "text": b"label,score\ncat,0.9\n",
    "empty": b"",
    "fake identifier": b"\x00\x00\x00\x00TFL3" + b"\xff" * 100,
    "png": None,  # filled in below: an image given where the model goes
}
NOT_MODELS["png"] = _good_png()


@pytest.mark.parametrize("command", ["classify", "inspect", "add", "remove"])
@pytest.mark.parametrize("case", list(NOT_MODELS))
def test_files_that_are_not_models(command, case, tmp_path, capsys):
    fake = tmp_path / "fake.tflite"
    fake.write_bytes(NOT_MODELS[case])
    image = tmp_path / "x.png"
    image.write_bytes(_good_png())
    out = tmp_path / "out.tflite"
    out.write_bytes(PREVIOUS)
    argv = {
        "classify": ["classify", str(fake), str(image)], "inspect": ["inspect", str(fake)],
        "add": ["add", str(fake), str(tmp_path), "-o", str(out)], "remove": ["remove", str(fake), "a", "-o", str(out)],
    }[command]
    _run_failing(argv, capsys, "model")
    assert out.read_bytes() == PREVIOUS


def test_truncated_model(model, tmp_path, capsys):
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(model.read_bytes()[: model.stat().st_size * 2 // 3])
    image = tmp_path / "x.png"
    image.write_bytes(_good_png())
    _run_failing(["classify", str(cut), str(image)], capsys, "model")
    _run_failing(["inspect", str(cut)], capsys, "model")


def test_tflite_without_metadata(model, tmp_path, capsys):
    plain = tmp_path / "plain.tflite"
    data = model.read_bytes()
    plain.write_bytes(_strip_metadata(data))
    _run_failing(["inspect", str(plain)], capsys, "not a cbr-lite model")
    _run_failing(["classify", str(plain), str(tmp_path)], capsys, "not a cbr-lite model")


def _strip_metadata(data: bytes) -> bytes:
    from ai_edge_litert import schema_py_generated as tfl
    import flatbuffers

    network = data[: data.index(b"PK\x03\x04")]
    model_t = tfl.ModelT.InitFromObj(tfl.Model.GetRootAs(network, 0))
    model_t.metadata = []
    builder = flatbuffers.Builder(len(network))
    builder.Finish(model_t.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.mark.parametrize("case", ["missing", "folder"])
def test_model_path_missing_or_a_folder(case, tmp_path, capsys):
    path = tmp_path / "nope.tflite"
    if case == "folder":
        path.mkdir()
    _run_failing(["inspect", str(path)], capsys, "no such model file" if case == "missing" else "is a folder")
    _run_failing(["classify", str(path), str(tmp_path)], capsys, "no such" if case == "missing" else "is a folder")


def test_classify_bad_image_errors_or_skips(model, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes(_good_png())
    (folder / "b.jpg").write_bytes(b"not really")
    _run_failing(["classify", str(model), str(folder)], capsys, "b.jpg: not a readable image")
    assert cli.main(["classify", str(model), str(folder), "--on-bad-image", "skip", "--json"]) == 0
    captured = capsys.readouterr()
    assert "warning: skipped" in captured.err and '"image"' in captured.out
    _run_failing(["classify", str(model), str(tmp_path / "ghost.png")], capsys, "no such file or folder")


def test_remove_unknown_label(model, tmp_path, capsys):
    out = tmp_path / "out.tflite"
    out.write_bytes(PREVIOUS)
    _run_failing(["remove", str(model), "cat", "-o", str(out)], capsys, "has no class 'cat'")
    assert out.read_bytes() == PREVIOUS


def test_file_name_with_a_line_break_still_gives_one_line(model, tmp_path, capsys):
    bad = tmp_path / "two\nlines.png"
    bad.write_bytes(b"not an image")
    _run_failing(["classify", str(model), str(bad)], capsys, "two\\nlines.png")


# ---------------------------------------------------------------------------------------------------
# Property-based: whatever the bytes or pixels, the loader and the builder answer or raise CbrError.
# ---------------------------------------------------------------------------------------------------

_FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FAST
@given(data=st.binary(max_size=2000), suffix=st.sampled_from([".jpg", ".png", ".gif", ".bmp", ".tif", ".webp"]))
def test_random_bytes_never_crash_the_loader(tmp_path, data, suffix):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(data)
    try:
        image = load_image(path)
    except CbrError as error:
        assert str(path) in str(error)
    else:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@st.composite
def small_images(draw):
    """A random small image in a random mode and format, as (PIL image, file suffix)."""
    height, width = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "I;16", "CMYK", "1", "LA"]))
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image.convert("L"), np.uint16) * 257)
    elif mode != "RGB":
        image = image.convert(mode)
    suffix = ".jpg" if mode == "CMYK" else draw(st.sampled_from([".png", ".tif"]))
    return image, suffix


@_FAST
@given(drawn=small_images())
def test_random_small_images_load_as_rgb_or_are_too_small(tmp_path, drawn):
    image, suffix = drawn
    path = tmp_path / f"img{suffix}"
    image.save(path)
    if min(image.size) < MIN_SIDE:
        with pytest.raises(CbrError, match="too small"):
            load_image(path)
    else:
        loaded = load_image(path)
        assert loaded.shape == (image.size[1], image.size[0], 3) and loaded.dtype == np.uint8


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(images=st.lists(small_images(), min_size=2, max_size=4))
def test_random_albums_build_or_fail_cleanly(tmp_path_factory, images):
    root = tmp_path_factory.mktemp("random_albums")
    for i, (image, suffix) in enumerate(images):
        folder = root / f"class {i % 2}"
        folder.mkdir(exist_ok=True)
        image.save(folder / f"{i}{suffix}")
    try:
        data = build_classifier_file(root, TINY, on_bad_image="skip", warn=lambda message: None)
    except CbrError as error:
        assert "class" in str(error) or "embedding" in str(error)
        return
    counts = read_classifier_file(data).images_per_class()
    assert sum(counts.values()) == sum(min(image.size) >= MIN_SIDE for image, _ in images)
    big = next(image for image, _ in images if min(image.size) >= MIN_SIDE)
    scores = Classifier(data).scores([np.asarray(big.convert("RGB"))])
    assert scores.shape == (1, 2) and np.all(np.abs(scores) <= 1.0 + 1e-5)
