"""Hostile input (issue 17): a model file is data, and no input may hang, exhaust memory, crash with a
traceback or replace a device. Every hostile file here is made by the test, small."""

import io
import json
import os
import stat
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
import tiny_embedder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cbr_lite import cli, embedders
from cbr_lite.builder import build_classifier_file
from cbr_lite.classifier_file import INDEX_FILE, MAX_MODEL_BYTES, read_classifier_file
from cbr_lite.metadata import MAX_PACKED_BYTES, add_metadata, read_associated_file

TINY = tiny_embedder.register()
ROOT = Path(__file__).resolve().parent.parent
PREVIOUS = b"a previous model that must survive a failed command"
ESCAPES = "evil\x1b]0;pwned\x07\x1b[2J"


@pytest.fixture(scope="module")
def albums(tmp_path_factory):
    return tiny_embedder.write_albums(tmp_path_factory.mktemp("albums"), per_class=2)


@pytest.fixture(scope="module")
def model(albums, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "base.tflite"
    path.write_bytes(build_classifier_file(albums, TINY))
    return path


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("image") / "query.png"
    Image.fromarray(tiny_embedder.colour_image((200, 40, 40), seed=5)).save(path)
    return path


def _fails(argv, capsys, expected):
    """Run the CLI: exit 2, one `cbr-lite: error:` line containing ``expected``, no traceback."""
    capsys.readouterr()
    status = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert status == 2, captured
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cbr-lite: error: "), captured.err
    assert expected in lines[0], lines[0]
    return lines[0]


def _repacked(model_bytes: bytes, replace: dict, compress: bool = False) -> bytes:
    """The model with some packed files replaced, zipped by the standard library as another tool would."""
    with zipfile.ZipFile(io.BytesIO(model_bytes)) as archive:
        network_end = min(info.header_offset for info in archive.infolist())
        files = {name: archive.read(name) for name in archive.namelist()}
    files.update(replace)
    stream = io.BytesIO(model_bytes[:network_end])
    stream.seek(network_end)
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return stream.getvalue()


def _with_cbr_info(model_bytes: bytes, **changes) -> bytes:
    info = json.loads(read_associated_file(model_bytes, "cbr.json"))
    return _repacked(model_bytes, {"cbr.json": json.dumps({**info, **changes}).encode()})


# --- 17.1: a model file never makes cbr-lite load code or reach the network ---------------------------


@pytest.mark.parametrize("named", ["hub:/some/dir/saved_model", "mobilenet-v3-small", "hub:https://tfhub.dev/x/1"])
def test_add_refuses_an_embedder_the_file_names_unless_the_user_names_it(named, model, albums, tmp_path, capsys,
                                                                          monkeypatch):
    evil = tmp_path / "evil.tflite"
    evil.write_bytes(_with_cbr_info(model.read_bytes(), embedder=named))
    loaded = []
    monkeypatch.setattr(embedders, "load_hub_embedder", lambda *a, **k: loaded.append(a) or pytest.fail("hub"))
    monkeypatch.setattr(embedders, "load_mobilenet_v3_small", lambda *a, **k: loaded.append(a) or pytest.fail("net"))
    monkeypatch.setitem(embedders._REGISTRY, "mobilenet-v3-small", (embedders.load_mobilenet_v3_small, "x"))
    out = tmp_path / "out.tflite"
    out.write_bytes(PREVIOUS)
    more = tiny_embedder.write_albums(tmp_path / "more", {"teal": (0, 128, 128)}, per_class=1)
    line = _fails(["add", evil, more, "-o", out], capsys, f"names the embedder '{named}', which is not one of")
    assert "--embedder" in line and loaded == [] and out.read_bytes() == PREVIOUS
    # Named by the user, any embedder is theirs to trust; the command says which it uses.
    assert cli.main(["add", str(evil), str(more), "-o", str(out), "--embedder", TINY]) == 0
    assert f"embedding the new images with {TINY} (given with --embedder)" in capsys.readouterr().out


@pytest.mark.parametrize("named", ["hub:/some/dir/saved_model", "mobilenet-v3-small"])
def test_remove_loads_no_embedder_at_all(named, model, tmp_path, capsys, monkeypatch):
    evil = tmp_path / "evil.tflite"
    evil.write_bytes(_with_cbr_info(model.read_bytes(), embedder=named))
    monkeypatch.setattr(embedders, "load_embedder", lambda *a, **k: pytest.fail("remove loaded an embedder"))
    out = tmp_path / "out.tflite"
    assert cli.main(["remove", str(evil), "blåbær", "-o", str(out)]) == 0
    assert f"keeping the model's own embedder network ({named}): no embedder is loaded" in capsys.readouterr().out
    shrunk = read_classifier_file(out.read_bytes())
    assert shrunk.class_names == ["green, leafy", "red thing"] and shrunk.embedder == named
    # The network is the file's own, so the scores are the file's own, less one class.
    from cbr_lite.classifier import Classifier

    images = [tiny_embedder.colour_image(c, seed=40 + i) for i, c in enumerate(tiny_embedder.COLOURS.values())]
    np.testing.assert_allclose(Classifier(out).scores(images), Classifier(evil).scores(images)[:, 1:], atol=1e-6)


def test_add_says_which_embedder_it_uses(model, tmp_path, capsys):
    more = tiny_embedder.write_albums(tmp_path / "more", {"teal": (0, 128, 128)}, per_class=1)
    assert cli.main(["add", str(model), str(more), "-o", str(tmp_path / "out.tflite")]) == 0
    assert (f"embedding the new images with {TINY} (named by the model, a built-in offline embedder)"
            in capsys.readouterr().out)


# --- 17.2: -o never replaces a device node or a FIFO --------------------------------------------------


@pytest.mark.parametrize("kind", ["device", "fifo", "symlink"])
def test_output_that_is_not_a_regular_file_is_refused(kind, model, tmp_path, capsys):
    target = tmp_path / "fakenull"
    if kind == "device":
        if os.geteuid() != 0:
            pytest.skip("making a device node needs root")
        os.mknod(target, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        (tmp_path / "real.tflite").write_bytes(PREVIOUS)
        target.symlink_to(tmp_path / "real.tflite")
    expected = {"device": "is a character device", "fifo": "is a FIFO", "symlink": "is a symbolic link"}[kind]
    _fails(["remove", model, "red thing", "-o", target], capsys, expected)
    mode = os.lstat(target).st_mode
    assert {"device": stat.S_ISCHR, "fifo": stat.S_ISFIFO, "symlink": stat.S_ISLNK}[kind](mode)


def test_help_says_what_happens_to_links():
    assert "symbolic link is refused" in cli.make_parser()._subparsers._group_actions[0].choices["build"].format_help()


# --- 17.3: labels with terminal escape sequences are printed escaped -----------------------------------


@pytest.fixture(scope="module")
def escaping_model(tmp_path_factory):
    root = tiny_embedder.write_albums(tmp_path_factory.mktemp("escaping"),
                                      {ESCAPES: (200, 30, 30), "blue": (30, 30, 200)}, per_class=1)
    return root


def test_labels_with_control_characters_are_escaped_in_human_output(escaping_model, image, tmp_path, capsys):
    out = tmp_path / "m.tflite"
    assert cli.main(["build", str(escaping_model), "-o", str(out), "--embedder", TINY]) == 0
    outputs = [capsys.readouterr().out]
    for argv in (["inspect", out], ["classify", out, image, "--top-k", "0"]):
        assert cli.main([str(a) for a in argv]) == 0
        outputs.append(capsys.readouterr().out)
    outputs.append(_fails(["remove", out, "nope", "-o", tmp_path / "x.tflite"], capsys, "has no class 'nope'"))
    for text in outputs:
        assert "\x1b" not in text and "\x07" not in text, text
        assert "evil\\x1b]0;pwned\\x07\\x1b[2J" in text, text
    # JSON output stays JSON: the label comes back exactly.
    assert cli.main(["classify", str(out), str(image), "--json", "--top-k", "0"]) == 0
    labels = {p["label"] for p in json.loads(capsys.readouterr().out)[0]["predictions"]}
    assert labels == {ESCAPES, "blue"}


# --- 17.4: FIFOs and devices are refused in one line, never read ---------------------------------------


def _cli_in_subprocess(argv, timeout=120):
    """Run cli.main in a fresh process (so a hang can be timed out); `tiny-test` registered for embed."""
    code = textwrap.dedent(f"""
        import sys
        from cbr_lite import cli
        if {argv[0] == "embed"!r}:
            from cbr_lite.quiet import import_tensorflow_quietly
            import_tensorflow_quietly()
            sys.path.insert(0, {str(ROOT / "tests")!r})
            import tiny_embedder
            tiny_embedder.register()
        sys.exit(cli.main({[str(a) for a in argv]!r}))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("command", ["classify", "embed", "inspect"])
def test_a_fifo_is_refused_without_hanging(command, model, tmp_path):
    fifo = tmp_path / ("photo.png" if command != "inspect" else "model.tflite")
    os.mkfifo(fifo)
    argv = {"classify": ["classify", model, fifo], "embed": ["embed", fifo, "-o", tmp_path / "e.npy", "--embedder", TINY],
            "inspect": ["inspect", fifo]}[command]
    result = _cli_in_subprocess(argv)  # a hang ends in TimeoutExpired: the test fails instead of hanging
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "is a FIFO (named pipe), not a regular file" in result.stderr


# --- 17.5: size limit and TFLite identifier checked before a model is read whole -----------------------


def test_a_device_given_as_the_model_is_not_read(capsys):
    _fails(["inspect", "/dev/zero"], capsys, "/dev/zero: is a character device, not a regular file")


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path, capsys):
    big = tmp_path / "big.tflite"
    with open(big, "wb") as file:
        file.truncate(MAX_MODEL_BYTES + 1)  # sparse: no disk used
    _fails(["inspect", big], capsys, f"{MAX_MODEL_BYTES + 1:,} bytes is larger than the {MAX_MODEL_BYTES:,}-byte limit")


def test_a_large_file_that_is_not_tflite_is_refused_after_8_bytes(tmp_path, capsys):
    fake = tmp_path / "fake.tflite"
    with open(fake, "wb") as file:
        file.truncate(512 * 2**20)
    tracemalloc.start()
    try:
        _fails(["inspect", fake], capsys, "not a TensorFlow Lite model (no 'TFL3' identifier)")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"{peak:,} bytes allocated to refuse a file by its first 8 bytes"


# --- 17.6: packed files and index arrays are bounded against the model ---------------------------------


@pytest.mark.parametrize("name", ["labels.txt", "cbr.json"])
def test_a_huge_compressed_packed_file_is_refused_before_it_is_inflated(name, model, tmp_path, capsys):
    bomb = tmp_path / "bomb.tflite"
    bomb.write_bytes(_repacked(model.read_bytes(), {name: b"a\n" * (MAX_PACKED_BYTES[name] // 2 + 1)}, compress=True))
    assert bomb.stat().st_size < 200_000
    for argv in (["inspect", bomb], ["classify", bomb, tmp_path]):
        _fails(argv, capsys, f"its packed file '{name}' is {MAX_PACKED_BYTES[name] + 2:,} bytes, more than the")


def _npy_claiming(shape, dtype="<f4") -> bytes:
    """A .npy file whose header claims ``shape`` but which holds 64 bytes of data."""
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, header)
    return stream.getvalue() + bytes(64)


@pytest.mark.parametrize("arrays", [
    {"embeddings.npy": _npy_claiming((100_000_000, 128))},
    {"labels.npy": _npy_claiming((100_000_000,), "<i4")},
])
def test_index_arrays_that_claim_more_than_they_hold_are_refused(arrays, model, tmp_path, capsys):
    with zipfile.ZipFile(io.BytesIO(read_associated_file(model.read_bytes(), INDEX_FILE))) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w") as archive:
        for name, data in {**files, **arrays}.items():
            archive.writestr(name, data)
    liar = tmp_path / "liar.tflite"
    liar.write_bytes(_repacked(model.read_bytes(), {INDEX_FILE: stream.getvalue()}))
    _fails(["inspect", liar], capsys, "its index.npz has unexpected arrays")


def test_index_embeddings_must_have_the_models_dimension(model, tmp_path, capsys):
    read = read_classifier_file(model.read_bytes())
    wrong = tmp_path / "wrong.tflite"
    wrong.write_bytes(_with_cbr_info(model.read_bytes(), embedding_dim=read.index_embeddings.shape[1] + 1))
    _fails(["inspect", wrong], capsys, "its index.npz has unexpected arrays")


def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path, capsys):
    """Near the old 100-megapixel limit a PNG cost 2.6-3.6 GB to read; the limit is now 65 million pixels."""
    import struct
    import zlib

    from PIL import Image

    from cbr_lite.images import MAX_PIXELS

    stream = io.BytesIO()
    Image.new("RGBA", (1, 1)).save(stream, format="PNG")
    data = bytearray(stream.getvalue())
    ihdr = bytearray(data[16:29])
    ihdr[0:8] = struct.pack(">II", 8100, 8100)  # 65.6 million pixels: under Pillow's own bomb warning
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)))
    (tmp_path / "big.png").write_bytes(bytes(data))
    assert MAX_PIXELS == 65_000_000
    _fails(["embed", tmp_path / "big.png", "-o", tmp_path / "e.npy", "--embedder", TINY], capsys,
           "8100x8100 pixels is larger than the 65,000,000-pixel limit")


# --- 17.7-9: one line, never a traceback --------------------------------------------------------------


def test_a_class_folder_name_that_is_not_utf8_is_one_line(tmp_path, capsys):
    root = tiny_embedder.write_albums(tmp_path / "albums", {"blue": (30, 30, 200)}, per_class=1)
    bad = os.fsencode(root) + b"/caf\xe9"
    os.mkdir(bad)
    os.rename(os.fsencode(root / "blue" / "00.png"), bad + b"/00.png")
    tiny_embedder.write_albums(root, {"blue": (30, 30, 200)}, per_class=1)
    line = _fails(["build", root, "-o", tmp_path / "m.tflite", "--embedder", TINY], capsys, "caf\\xe9")
    assert "not valid UTF-8" in line


def _with_bad_tensor_name(model_bytes: bytes) -> bytes:
    data = bytearray(model_bytes)
    at = data.index(b"serving_default_image:0")
    data[at] = 0xFF  # '\xfferving_default_image:0': LiteRT decodes tensor names as UTF-8
    return bytes(data)


def test_a_tensor_name_that_is_not_utf8_is_one_line(model, image, tmp_path, capsys):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(_with_bad_tensor_name(model.read_bytes()))
    for argv in (["classify", bad, image], ["inspect", bad]):
        _fails(argv, capsys, "not a TensorFlow Lite model LiteRT can run")


@pytest.mark.parametrize("depth", [30_000, 100_000])
def test_a_deeply_nested_cbr_json_is_one_line(depth, model, image, tmp_path, capsys):
    nested = tmp_path / "nested.tflite"
    nested.write_bytes(_repacked(model.read_bytes(), {"cbr.json": b"[" * depth + b"]" * depth}))
    for argv in (["inspect", nested], ["classify", nested, image], ["remove", nested, "red thing", "-o", tmp_path / "o"]):
        _fails(argv, capsys, "cbr.json" if depth > 30_000 else "nested.tflite")


def test_cbr_json_values_of_the_wrong_type_are_one_line(model, tmp_path, capsys):
    for changes in ({"embedder": [[["deep"]]]}, {"input_size": "64x64"}, {"mean": [float("inf")] * 3}, {"aggregation": 3}):
        odd = tmp_path / "odd.tflite"
        odd.write_bytes(_with_cbr_info(model.read_bytes(), **changes))
        _fails(["inspect", odd], capsys, "its cbr.json is incomplete or has values of the wrong type")


# --- Property: random corruptions of a real model, fed to every command that reads models ---------------


CORRUPTIONS = st.tuples(st.sampled_from(["flip", "bytes", "truncate", "zeros"]), st.integers(0, 2**32 - 1))


def _corrupt(data: bytes, kind: str, seed: int) -> bytes:
    """``data`` with a few bits flipped, a run of random or zero bytes written somewhere, or cut short."""
    rng = np.random.default_rng(seed)
    data = bytearray(data)
    if kind == "truncate":
        return bytes(data[: rng.integers(0, len(data))])
    if kind == "flip":
        for position in rng.integers(0, len(data), size=int(rng.integers(1, 9))):
            data[position] ^= 1 << int(rng.integers(0, 8))
        return bytes(data)
    start, length = int(rng.integers(0, len(data))), int(rng.integers(2, 64))
    run = rng.integers(0, 256, size=length, dtype=np.uint8).tobytes() if kind == "bytes" else bytes(length)
    data[start:start + length] = run[: len(data) - start]  # multi-byte runs: item 8 found these in tensor names
    return bytes(data)


@settings(max_examples=int(os.environ.get("CBR_LITE_CORRUPTIONS", "60")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(corruption=CORRUPTIONS, command=st.sampled_from(["classify", "inspect", "inspect --json", "add", "remove"]))
def test_corrupted_models_give_one_line_or_work(corruption, command, model, albums, image, tmp_path_factory, capsys):
    folder = tmp_path_factory.mktemp("corrupt")
    broken = folder / "broken.tflite"
    broken.write_bytes(_corrupt(model.read_bytes(), *corruption))
    out = folder / "out.tflite"
    more = albums  # adding classes the model has: more images for them
    argv = {"classify": ["classify", broken, image], "inspect": ["inspect", broken],
            "inspect --json": ["inspect", broken, "--json"], "add": ["add", broken, more, "-o", out],
            "remove": ["remove", broken, "red thing", "-o", out]}[command]
    capsys.readouterr()
    status = cli.main([str(a) for a in argv])  # any exception but CbrError/OSError fails the test here
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if status == 2:
        lines = captured.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("cbr-lite: error: "), captured.err
        assert not out.exists()
    else:
        assert status == 0, captured


# --- 17.10-13: checks up front, no leftovers on SIGTERM, a quick --help ----------------------------------


def test_an_output_name_too_long_fails_before_any_image_is_embedded(albums, tmp_path, capsys, monkeypatch):
    from cbr_lite import builder

    monkeypatch.setattr(builder, "embed_paths", lambda *a, **k: pytest.fail("embedded before checking the output"))
    line = _fails(["build", albums, "-o", tmp_path / ("m" * 300 + ".tflite"), "--embedder", TINY], capsys,
                  "the file name is 307 bytes long")
    assert ".tmp" not in line and os.listdir(tmp_path) == []


def test_sigterm_while_writing_leaves_no_temporary_file(model, tmp_path):
    out = tmp_path / "out.tflite"
    code = textwrap.dedent(f"""
        import os, signal, sys, time
        import cbr_lite.files as files
        from cbr_lite import cli

        def terminated_while_writing(path):  # called with the temporary file written, before the rename
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(60)

        files._mode_of = terminated_while_writing
        sys.exit(cli.main(["remove", {str(model)!r}, "red thing", "-o", {str(out)!r}]))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 143 and result.stderr.endswith("cbr-lite: terminated\n"), result
    assert os.listdir(tmp_path) == []


def test_classify_and_inspect_import_no_tensorflow(model, image, run_python):
    result = run_python(f"""
        import sys
        from cbr_lite import cli
        assert cli.main(["classify", {str(model)!r}, {str(image)!r}]) == 0
        assert cli.main(["inspect", {str(model)!r}]) == 0
        print(sorted(name for name in ("tensorflow", "keras") if name in sys.modules))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("[]") and result.stderr == ""
