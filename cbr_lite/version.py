"""The cbr-lite version, read in one place from the installed package's metadata (``pyproject.toml``).

>>> VERSION                                               # doctest: +SKIP
'0.1.0'
"""

from importlib import metadata

try:
    #: Stored in every model file's ``cbr.json`` and printed by ``cbr-lite --version``.
    VERSION = metadata.version("cbr-lite")
except metadata.PackageNotFoundError:  # run from a source folder that was never installed
    VERSION = "0+unknown"
