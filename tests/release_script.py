"""``scripts/release_notebooks.py`` imported once as the module ``release_notebooks``, for the tests and
``conftest.py`` (scripts/ is not a package)."""

import importlib.util
import sys
from pathlib import Path

if "release_notebooks" not in sys.modules:
    _path = Path(__file__).resolve().parent.parent / "scripts" / "release_notebooks.py"
    _spec = importlib.util.spec_from_file_location("release_notebooks", _path)
    sys.modules["release_notebooks"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["release_notebooks"])

release = sys.modules["release_notebooks"]
