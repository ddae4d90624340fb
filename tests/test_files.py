"""write_atomically: the whole new file or the untouched old one, and never a temporary file left behind."""

import os
import stat

import pytest

import cbr_lite.files
from cbr_lite.errors import CbrError
from cbr_lite.files import write_atomically


def test_writes_the_bytes_and_leaves_only_the_file(tmp_path):
    returned = write_atomically(tmp_path / "model.tflite", b"\x00model")
    assert returned == tmp_path / "model.tflite"
    assert returned.read_bytes() == b"\x00model"
    assert os.listdir(tmp_path) == ["model.tflite"]


def test_replaces_an_existing_file(tmp_path):
    (tmp_path / "out.bin").write_bytes(b"old and longer")
    write_atomically(str(tmp_path / "out.bin"), b"new")
    assert (tmp_path / "out.bin").read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_a_relative_name_goes_to_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_atomically("here.bin", b"x")
    assert (tmp_path / "here.bin").read_bytes() == b"x"


def test_a_new_file_gets_the_permissions_open_would_give(tmp_path):
    write_atomically(tmp_path / "atomic.bin", b"x")
    with open(tmp_path / "plain.bin", "wb") as file:
        file.write(b"x")
    mode = stat.S_IMODE(os.stat(tmp_path / "atomic.bin").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "plain.bin").st_mode)


def test_a_replaced_file_keeps_its_permissions(tmp_path):
    (tmp_path / "shared.bin").write_bytes(b"old")
    os.chmod(tmp_path / "shared.bin", 0o640)
    write_atomically(tmp_path / "shared.bin", b"new")
    assert stat.S_IMODE(os.stat(tmp_path / "shared.bin").st_mode) == 0o640


def test_a_failed_rename_keeps_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch):
    (tmp_path / "out.bin").write_bytes(b"old")

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cbr_lite.files.os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        write_atomically(tmp_path / "out.bin", b"new")
    assert (tmp_path / "out.bin").read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    (tmp_path / "out.bin").write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomically(tmp_path / "out.bin", "text, not bytes")
    assert (tmp_path / "out.bin").read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(CbrError, match="does not exist; create it first"):
        write_atomically(tmp_path / "missing" / "out.bin", b"x")
    assert not (tmp_path / "missing").exists()


def test_a_folder_is_not_a_file_name(tmp_path):
    (tmp_path / "models").mkdir()
    with pytest.raises(CbrError, match="is a folder; give a file name"):
        write_atomically(tmp_path / "models", b"x")
    assert os.listdir(tmp_path) == ["models"] and not os.listdir(tmp_path / "models")
