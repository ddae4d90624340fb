"""A tiny, deterministic embedder registered for the tests of the builder and the command line.

``tiny-test`` resizes to 16x16, averages 4x4 blocks and mixes the 48 block colours with a fixed random
matrix plus a bias (so no image embeds to the zero vector). It loads in milliseconds, gives the same
weights in every process (so ``cbr-lite add`` re-embeds exactly as ``build`` did) and converts to
TFLite in about a second.
"""

import numpy as np

from cbr_lite.embedders import Embedder, register_embedder

NAME = "tiny-test"
DIM = 16
SIZE = (16, 16)


def load_tiny_embedder() -> Embedder:
    """Build the ``tiny-test`` embedder (a new Keras model each call, always the same weights)."""
    import keras

    rng = np.random.default_rng(0)
    image = keras.Input(shape=(*SIZE, 3), name="pixels")
    blocks = keras.layers.AveragePooling2D(4, name="blocks")(image)
    flat = keras.layers.Flatten(name="flat")(blocks)
    mix = keras.layers.Dense(DIM, name="mix")
    embedding = mix(flat)
    mix.set_weights([rng.normal(size=(48, DIM)).astype(np.float32), rng.normal(size=DIM).astype(np.float32)])
    model = keras.Model(image, embedding, name="tiny_embedder")
    return Embedder(NAME, model, SIZE, (127.5, 127.5, 127.5), (127.5, 127.5, 127.5))


def register() -> str:
    """Register ``tiny-test`` with :func:`cbr_lite.embedders.load_embedder`; returns its name."""
    register_embedder(NAME, load_tiny_embedder, "tests only: 16x16 block colours, fixed random projection", offline=True)
    return NAME


#: Three classes with clearly different colours; names with a space, a comma and non-ASCII letters.
COLOURS = {"blåbær": (40, 50, 210), "green, leafy": (40, 190, 60), "red thing": (210, 40, 40)}


def colour_image(colour, seed: int, size=(20, 24)) -> np.ndarray:
    """A noisy ``uint8`` RGB image around ``colour`` (different for every seed)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 25.0, (*size, 3))
    return np.clip(np.asarray(colour, dtype=np.float64) + noise, 0, 255).astype(np.uint8)


def write_albums(root, colours=None, per_class: int = 3, seed: int = 0):
    """Write a folder of class folders of PNG images (``per_class`` per colour) and return its path."""
    from pathlib import Path

    from PIL import Image

    root = Path(root)
    colours = COLOURS if colours is None else colours
    for name, colour in sorted(colours.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        # Seeds and sizes depend on the class name, not its position, so a class has the same images
        # whichever albums it is written with.
        name_seed = sum(name.encode("utf-8"))
        for i in range(per_class):
            size = (18 + 3 * i, 22 + name_seed % 5)  # sizes differ, so resizing is exercised
            Image.fromarray(colour_image(colour, seed + 100 * name_seed + i, size)).save(folder / f"{i:02d}.png")
    return root
