"""Regenerate the committed sample albums (data/albums/) and query images (data/queries/).

    python scripts/make_albums.py

data/albums/ is a folder of class folders, as a user's photo albums would be: 12 characters of scripts the
default embedder never saw in training (Greek, Hebrew, Armenian, Georgian, Arabic), 8 PNG images each,
64x64, black ink on white in different fonts with mild jitter. data/queries/ holds one more image of each
class (another random seed, so never identical to an album image), named after its class.
The output is byte-identical on every run. The script also refreshes data/glyph_classes.json.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cbr_lite import glyphs  # noqa: E402
from cbr_lite.locations import DATA_DIR  # noqa: E402

ALBUM_CLASSES = (
    "greek_beta", "greek_delta", "greek_theta", "greek_xi", "greek_pi", "greek_phi",
    "hebrew_alef", "hebrew_lamed", "hebrew_shin", "armenian_ayb_capital", "georgian_an", "arabic_sheen",
)
SAMPLES_PER_CLASS = 8
ALBUM_SEED, QUERY_SEED = 0, 1


def main():
    """Write data/glyph_classes.json, data/albums/<class>/<class>_<i>.png and data/queries/<class>.png."""
    glyphs.write_classes_file(str(DATA_DIR / "glyph_classes.json"))
    novel = dict(glyphs.glyph_classes("novel"))
    missing = [label for label in ALBUM_CLASSES if label not in novel]
    if missing:
        raise SystemExit(f"not novel glyph classes: {', '.join(missing)}")
    classes = [(label, novel[label]) for label in ALBUM_CLASSES]
    albums, queries = DATA_DIR / "albums", DATA_DIR / "queries"
    for folder in (albums, queries):
        # Start clean, so a class dropped from ALBUM_CLASSES does not linger as a stale folder.
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    paths = glyphs.write_albums(str(albums), classes, SAMPLES_PER_CLASS, seed=ALBUM_SEED, clean=True)
    images, labels = glyphs.render_glyphs(classes, 1, seed=QUERY_SEED, clean=True)
    for image, label in zip(images, labels):
        glyphs.write_png(image, str(queries / f"{classes[label][0]}.png"))
    print(f"wrote {len(paths)} album images of {len(classes)} classes to {albums} "
          f"and {len(images)} queries to {queries}")


if __name__ == "__main__":
    main()
