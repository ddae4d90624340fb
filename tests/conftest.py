"""Shared fixtures of the unit tests: a tiny deterministic embedder and small image files written with PIL.

Test modules may define fixtures of their own with the same names; pytest then uses theirs.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
from PIL import Image

# tiny_embedder (and with it TensorFlow) is imported inside the fixtures, so that test files which need
# neither do not pay for importing them.


@pytest.fixture(scope="session")
def tiny_test_embedder():
    """The ``tiny-test`` embedder (16x16 input, 16-d output), registered with ``load_embedder``."""
    import tiny_embedder

    from cbr_lite.embedders import load_embedder

    return load_embedder(tiny_embedder.register())


@pytest.fixture
def colour_albums(tmp_path):
    """A folder of three class folders with three noisy PNG images each, in clearly different colours."""
    import tiny_embedder

    return tiny_embedder.write_albums(tmp_path / "albums")


@pytest.fixture
def write_image(tmp_path):
    """``write_image(name, array_or_pil_image, **save_options) -> path``: save an image under ``tmp_path``."""

    def write(name, image, **options):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        image.save(path, **options)
        return path

    return write
