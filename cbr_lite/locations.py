"""Where cbr-lite finds its files, resolved in one place.

``DATA_DIR`` holds what the notebooks and embedders read offline (the glyph CNN's weights, sample albums,
the glyph class lists). It is the repository's ``data/`` folder, or ``CBR_LITE_DATA`` for installs that
live elsewhere.
"""

import os
from pathlib import Path

#: The repository (or source tree) the package was imported from.
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
#: The data folder (``CBR_LITE_DATA`` overrides).
DATA_DIR = Path(os.environ.get("CBR_LITE_DATA", REPOSITORY_ROOT / "data"))
