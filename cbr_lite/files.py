"""Reading and writing the user's files: only regular files are read, and outputs are written so that a
failure never leaves a half-written file behind or replaces something that is not a file.

- :func:`open_regular_file` opens a file to read without ever blocking on a FIFO or reading a device
  (``/dev/zero`` would never end), after checking its size against a limit.
- :func:`check_output_path` refuses an output path that cannot end as a new regular file, before any
  slow work starts: a missing folder, a folder, an existing device, FIFO or socket, a symbolic link
  (cbr-lite does not write through links: give the link's target instead), a name longer than the
  folder's file system allows, a folder where files cannot be created.
- :func:`write_atomically` writes through a temporary file in the same folder, renamed into place.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from cbr_lite.errors import CbrError

#: Temporary files are named ``.NAME.XXXXXXXX.tmp``; NAME is cut to this many bytes so that an output
#: name the file system allows always leaves room for the temporary one.
_TEMPORARY_NAME_BYTES = 200


def open_regular_file(path, what: str = "file", max_bytes: int | None = None):
    """Open ``path`` for reading in binary mode, if it is a regular file of at most ``max_bytes`` bytes.

    Raises :class:`CbrError` naming ``path`` (and saying it is a ``what``, e.g. "model file") if it is
    missing, a folder, a FIFO, a device or a socket, unreadable, or too large. The check cannot block:
    the file is opened with ``O_NONBLOCK`` and inspected through the open descriptor.
    """
    path = Path(path)
    a_what = f"{'an' if what[:1] in 'aeiou' else 'a'} {what}"
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise CbrError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise CbrError(f"{path}: is a folder, not {a_what}") from None
    except PermissionError:
        raise CbrError(f"{path}: permission denied; make the file readable") from None
    except OSError as error:
        raise CbrError(f"{path}: cannot read it ({error.strerror or type(error).__name__})") from None
    try:
        info = os.fstat(descriptor)
        if stat.S_ISDIR(info.st_mode):
            raise CbrError(f"{path}: is a folder, not {a_what}")
        if not stat.S_ISREG(info.st_mode):
            raise CbrError(f"{path}: is a {_kind(info.st_mode)}, not a regular file; give {a_what}")
        if max_bytes is not None and info.st_size > max_bytes:
            raise CbrError(f"{path}: {info.st_size:,} bytes is larger than the {max_bytes:,}-byte limit for a {what}")
        if hasattr(os, "O_NONBLOCK"):  # regular files never block; clear the flag for ordinary reads
            os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def check_output_path(path) -> Path:
    """Fail early, before any slow work, if ``path`` cannot become the output file; returns its folder.

    See the module docstring for what is refused. Whether files can be created in the folder is
    checked by creating (and removing) an empty temporary file there.
    """
    path = Path(path)
    folder = _check_target(path)
    temporary = _create_temporary(path, folder)
    os.close(temporary[0])
    os.unlink(temporary[1])
    return folder


def write_atomically(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, renamed into place.

    Either the whole new file is there afterwards or the old one (if any) is untouched, and the
    temporary file is removed whatever happens (an exception, Ctrl-C, or SIGTERM in the command line,
    which turns it into an exception). Raises :class:`CbrError` naming ``path`` for anything
    :func:`check_output_path` refuses and for a write that fails (a full disk).
    """
    path = Path(path)
    folder = _check_target(path)  # again: the path may have changed during a long build
    handle, temporary = _create_temporary(path, folder)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        # mkstemp makes the file private (0600); give it the mode open() would have (or the old file's).
        os.chmod(temporary, _mode_of(path))
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise CbrError(f"{path}: could not write it ({error.strerror or type(error).__name__})") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _check_target(path: Path) -> Path:
    """The checks of :func:`check_output_path` that need no file created; returns the folder."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise CbrError(f"{path}: the folder {folder} does not exist; create it first")
    limit = _name_limit(folder)
    if len(os.fsencode(path.name)) > limit:
        raise CbrError(f"{path.name[:40]}...: the file name is {len(os.fsencode(path.name))} bytes long; "
                       f"the folder {folder} allows at most {limit}")
    if path.is_symlink():
        raise CbrError(f"{path}: is a symbolic link; cbr-lite does not write through links, give the file's own path")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as error:
        raise CbrError(f"{path}: cannot use it as the output ({error.strerror or type(error).__name__})") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise CbrError(f"{path}: is a folder; give a file name")
    if mode is not None and not stat.S_ISREG(mode):
        raise CbrError(f"{path}: is a {_kind(mode)}, not a regular file; cbr-lite only replaces regular files")
    return folder


def _create_temporary(path: Path, folder: Path) -> tuple[int, str]:
    name = os.fsdecode(os.fsencode(path.name)[:_TEMPORARY_NAME_BYTES])
    try:
        return tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    except OSError as error:
        raise CbrError(f"{path}: cannot create files in {folder} ({error.strerror or type(error).__name__})") from None


def _name_limit(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # not on this OS or file system: the common limit
        return 255


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def _mode_of(path: Path) -> int:
    """The permission bits a new file at ``path`` should get: the existing file's, else 0666 less the umask."""
    if path.exists():
        return stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
