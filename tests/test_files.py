"""cbr_lite.files: the whole new file or the untouched old one, never a temporary file left behind, never a
device or FIFO replaced; and only regular files read, without blocking."""

import os
import stat
import threading

import pytest

import cbr_lite.files
from cbr_lite.errors import CbrError
from cbr_lite.files import check_output_path, open_regular_file, write_atomically


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
    with pytest.raises(CbrError, match="out.bin: could not write it .No space left"):
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


# --- 17.2: an output path that exists and is not a regular file is refused, never replaced -----------


def test_a_device_node_is_not_replaced(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    fake_null = tmp_path / "fakenull"
    os.mknod(fake_null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    for check in (check_output_path, lambda path: write_atomically(path, b"x")):
        with pytest.raises(CbrError, match="fakenull: is a character device, not a regular file"):
            check(fake_null)
    assert stat.S_ISCHR(os.lstat(fake_null).st_mode)
    assert sorted(os.listdir(tmp_path)) == ["fakenull"]


def test_a_fifo_is_not_replaced(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(CbrError, match="pipe: is a FIFO"):
        write_atomically(tmp_path / "pipe", b"x")
    assert stat.S_ISFIFO(os.lstat(tmp_path / "pipe").st_mode)


def test_a_symbolic_link_is_refused_and_its_target_untouched(tmp_path):
    (tmp_path / "real.tflite").write_bytes(b"old")
    (tmp_path / "link.tflite").symlink_to(tmp_path / "real.tflite")
    (tmp_path / "dangling.tflite").symlink_to(tmp_path / "nowhere")
    for name in ("link.tflite", "dangling.tflite"):
        with pytest.raises(CbrError, match="is a symbolic link; cbr-lite does not write through links"):
            write_atomically(tmp_path / name, b"new")
    assert (tmp_path / "real.tflite").read_bytes() == b"old" and (tmp_path / "link.tflite").is_symlink()


# --- 17.11: a name too long, or a folder without write permission, is refused up front, by its name ---


def test_the_longest_name_the_folder_allows_is_written(tmp_path):
    name = "m" * (os.pathconf(tmp_path, "PC_NAME_MAX") - len(".tflite")) + ".tflite"
    write_atomically(tmp_path / name, b"x")  # the temporary file's name must fit too
    assert os.listdir(tmp_path) == [name]


def test_a_name_too_long_is_refused_naming_the_output(tmp_path):
    name = "m" * 300 + ".tflite"
    with pytest.raises(CbrError, match=r"the file name is 307 bytes long; the folder .* allows at most 255") as error:
        check_output_path(tmp_path / name)
    assert ".tmp" not in str(error.value) and str(error.value).startswith("m" * 40)
    assert os.listdir(tmp_path) == []


def test_a_read_only_folder_is_refused_by_the_early_check(tmp_path, monkeypatch):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root may write anywhere: make creating a file there fail as it would for a user

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied", str(folder / ".out.tflite.x.tmp"))

        monkeypatch.setattr(cbr_lite.files.tempfile, "mkstemp", refuse)
    with pytest.raises(CbrError, match="Permission denied") as error:
        check_output_path(folder / "out.tflite")
    assert str(error.value).startswith(f"{folder / 'out.tflite'}: cannot create files in {folder}")
    assert ".tmp" not in str(error.value) and os.listdir(folder) == []


# --- 17.4: reading never blocks on a FIFO and never reads a device ------------------------------------


def test_reading_a_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "model.tflite")
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(_error_of(open_regular_file, tmp_path / "model.tflite")))
    reader.start()
    reader.join(10)
    if reader.is_alive():  # unblock the reader before failing
        with open(tmp_path / "model.tflite", "wb"):
            pass
        pytest.fail("opening a FIFO to read it blocked")
    assert "model.tflite: is a FIFO (named pipe), not a regular file" in outcome[0]


def test_a_device_is_not_read():
    assert "/dev/zero: is a character device, not a regular file; give a model file" in _error_of(
        open_regular_file, "/dev/zero", "model file")


def test_a_file_over_the_limit_is_refused_before_reading(tmp_path):
    (tmp_path / "big.bin").write_bytes(bytes(1001))
    assert "1,001 bytes is larger than the 1,000-byte limit for a file" in _error_of(
        open_regular_file, tmp_path / "big.bin", "file", 1000)
    with open_regular_file(tmp_path / "big.bin", "file", 1001) as file:
        assert len(file.read()) == 1001


def _error_of(function, *args) -> str:
    try:
        function(*args).close()
    except CbrError as error:
        return str(error)
    return "no error"
