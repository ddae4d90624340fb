"""A folder of class folders ("albums", as in Google's iOS demo) -> sorted image paths and labels.

::

    albums/
      cat/    1.jpg 2.jpg ...
      mug/    a.png ...

Class names are the folder names, in sorted order; images are sorted within each folder. Hidden files
and folders (names starting with ".") and files without an image suffix are ignored.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from cbr_lite.errors import CbrError
from cbr_lite.images import load_image
from cbr_lite.labels import check_labels, printable

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
ON_BAD_IMAGE = ("error", "skip")


@dataclass
class Albums:
    """Images read from a folder of class folders.

    ``images[i]`` is a ``uint8 (h, w, 3)`` array from ``paths[i]``, of class ``class_names[image_labels[i]]``.
    """

    images: list
    image_labels: np.ndarray
    class_names: list
    paths: list


def is_image_file(path: Path) -> bool:
    """True for a visible file whose suffix is a known image type (the content is checked when read)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def find_albums(root) -> list[tuple[str, list[Path]]]:
    """List ``(class name, sorted image paths)`` for each class folder under ``root``, sorted by name.

    Raises :class:`CbrError` if ``root`` is missing, is not a folder, has no class folders, has a
    folder whose name cannot be a label (:func:`cbr_lite.labels.check_label`), or has a class folder
    without images (naming it). Nothing is read yet, so this is quick: the place to fail early.
    """
    root = Path(root)
    if not root.exists():
        raise CbrError(f"{root}: no such folder; give a folder that holds one sub-folder of images per class")
    if not root.is_dir():
        raise CbrError(f"{root}: is a file; give a folder that holds one sub-folder of images per class")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise CbrError(f"{root}: has no class folders; put each class's images in a sub-folder named after it")
    check_labels([class_dir.name for class_dir in class_dirs], root)
    albums = []
    for class_dir in class_dirs:
        paths = sorted(p for p in class_dir.iterdir() if is_image_file(p))
        if not paths:
            raise CbrError(
                f"{class_dir}: class folder has no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        albums.append((class_dir.name, paths))
    return albums


def check_on_bad_image(on_bad_image: str) -> str:
    """``on_bad_image`` if it is one of :data:`ON_BAD_IMAGE`, else a :class:`CbrError`."""
    if on_bad_image not in ON_BAD_IMAGE:
        raise CbrError(f"on_bad_image must be one of {', '.join(ON_BAD_IMAGE)}, not {on_bad_image!r}")
    return on_bad_image


def found_albums(albums) -> list[tuple[str, list[Path]]]:
    """``albums`` as :func:`find_albums` lists them: a folder of class folders is listed, a list that
    :func:`find_albums` returned is passed through (so a command that has listed them already does not
    list them again)."""
    return find_albums(albums) if isinstance(albums, (str, os.PathLike)) else albums


def read_image_or_skip(path, on_bad_image: str, warn: Callable[[str], None]):
    """``load_image(path)``; with ``on_bad_image="skip"`` an unreadable image is reported through ``warn``
    and gives ``None`` instead of raising :class:`CbrError`."""
    try:
        return load_image(path)
    except CbrError as error:
        if on_bad_image == "error":
            raise
        warn(f"skipped {error}")
        return None


def load_albums(root, on_bad_image: str = "error", warn: Callable[[str], None] | None = None) -> Albums:
    """Read every image of every class folder under ``root``.

    ``on_bad_image="error"`` stops at the first unreadable image with its path; ``"skip"`` leaves it
    out, reports it through ``warn`` (default: a line on stderr) and still fails if a class is left empty.
    """
    check_on_bad_image(on_bad_image)
    warn = warn or warn_on_stderr
    images, labels, paths, class_names = [], [], [], []
    for class_id, (class_name, class_paths) in enumerate(find_albums(root)):
        class_names.append(class_name)
        kept = 0
        for path in class_paths:
            image = read_image_or_skip(path, on_bad_image, warn)
            if image is None:
                continue
            images.append(image)
            labels.append(class_id)
            paths.append(path)
            kept += 1
        if kept == 0:
            raise CbrError(f"{Path(root) / class_name}: no readable images left in this class folder")
    return Albums(images, np.asarray(labels, dtype=np.int32), class_names, paths)


def warn_on_stderr(message: str) -> None:
    """The default ``warn``: a ``warning: ...`` line on stderr (control characters escaped)."""
    print(f"warning: {printable(message)}", file=sys.stderr)


def expand_inputs(inputs: Iterable) -> list[Path]:
    """Turn command-line inputs into image paths: files as given, folders expanded recursively in sorted order.

    Raises :class:`CbrError` for a path that does not exist or a folder with no images.
    """
    paths = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if is_image_file(p) and not _hidden_below(p, item))
            if not found:
                raise CbrError(f"{item}: folder has no images")
            paths.extend(found)
        elif item.exists():
            paths.append(item)
        else:
            raise CbrError(f"{item}: no such file or folder")
    if not paths:
        raise CbrError("no images given")
    return paths


def _hidden_below(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)
