"""What a class name (label) may be, checked once where labels enter, and how to print one safely.

A label is a class folder's name when building, and one line of ``labels.txt`` inside the model file,
which MediaPipe and the TFLite Task Library read line by line. So a label must be non-blank, on one line
for every reader (none of the characters :meth:`str.splitlines` breaks on, such as ``\\n``, ``\\v``,
U+0085 or U+2028), storable as UTF-8 (a folder name with a byte that is not UTF-8 is not), and distinct
within a model. Spaces, commas and any other Unicode are fine.

A label in a model file someone sent you can still hold anything, terminal escape sequences included:
:func:`printable` escapes control characters wherever a label (or a file name) is printed for people.

>>> check_labels(["cat", "green, leafy"])
['cat', 'green, leafy']
>>> printable("evil\\x1b]0;title\\x07")
'evil\\\\x1b]0;title\\\\x07'
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Iterable

from cbr_lite.errors import CbrError

#: What ``str.splitlines`` breaks on: a label holding one would become two lines of ``labels.txt``.
LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"


def check_label(label, folder=None) -> str:
    """Return ``label`` if it can be a class name, else raise :class:`CbrError`.

    ``folder`` (the class folder the label comes from, if any) is named in the message, so the user
    knows what to rename; otherwise the label itself is.
    """
    where = printable(str(folder) if folder is not None else repr(label))
    fix = "rename the folder" if folder is not None else "choose another class name"
    if not isinstance(label, str):
        raise CbrError(f"label {where} is not a string: every class needs a name")
    if not label.strip():
        raise CbrError(f"{where} is empty: a class name must not be blank; {fix}")
    if any(character in LINE_BREAKS for character in label):
        raise CbrError(f"{where}: the class name has a line break, which labels.txt cannot hold; {fix}")
    try:
        label.encode("utf-8")
    except UnicodeEncodeError:
        raise CbrError(f"{where}: the class name is not valid UTF-8 (a byte from another encoding?); {fix}") from None
    return label


def check_labels(labels: Iterable, root=None) -> list:
    """:func:`check_label` for each label, and no label twice. ``root``: the folder of class folders the
    labels are the names of (named in messages). Returns the labels as a list."""
    if isinstance(labels, str):
        raise CbrError("labels must be a list of class names, not one string")
    labels = list(labels)
    for label in labels:
        check_label(label, Path(root) / label if root is not None and isinstance(label, str) else None)
    seen = set()
    for label in labels:
        if label in seen:
            raise CbrError(f"class {printable(repr(label))} is given twice")
        seen.add(label)
    return labels


def printable(text: str) -> str:
    """``text`` with control and formatting characters escaped (``\\x1b``, ``\\n``, ``\\u2028``, ...),
    so that a label or file name printed to a terminal cannot move the cursor, retitle the window or
    break the line. Everything else (spaces, accents, CJK, emoji) is kept as it is."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(character if character.isprintable() or character == " " else _escape(character)
                   for character in text)


def _escape(character: str) -> str:
    if unicodedata.category(character) == "Cs":  # a lone surrogate: a byte that was not UTF-8
        return f"\\x{ord(character) - 0xDC00:02x}" if 0xDC80 <= ord(character) <= 0xDCFF else f"\\u{ord(character):04x}"
    return repr(character)[1:-1] if ord(character) < 0x10000 else f"\\U{ord(character):08x}"
