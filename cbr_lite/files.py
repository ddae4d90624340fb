"""Writing output files so that a failure never leaves a half-written file behind."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from cbr_lite.errors import CbrError


def check_output_path(path) -> Path:
    """Fail early if ``path`` cannot be written (its folder is missing, or it is a folder); returns the folder."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise CbrError(f"{path}: the folder {folder} does not exist; create it first")
    if path.is_dir():
        raise CbrError(f"{path}: is a folder; give a file name")
    return folder


def write_atomically(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, renamed into place.

    Either the whole new file is there afterwards or the old one (if any) is untouched. Raises
    :class:`CbrError` if the folder does not exist or the path is a folder.
    """
    path = Path(path)
    folder = check_output_path(path)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        # mkstemp makes the file private (0600); give it the mode open() would have (or the old file's).
        os.chmod(temporary, _mode_of(path))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _mode_of(path: Path) -> int:
    """The permission bits a new file at ``path`` should get: the existing file's, else 0666 less the umask."""
    if path.exists():
        return stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
