"""Offline training and evaluation data: glyphs rendered from the fonts inside matplotlib, and photo patches.

No data set can be downloaded at run time, so cbr-lite makes its own, Omniglot-style: a *class* is one
character (a Unicode code point) and its *samples* are that character rendered from the font faces that
ship with matplotlib (DejaVu Sans/Serif/Mono, STIX General, Computer Modern) under random distortions.
Classes are split by writing system, as Omniglot splits "background" and "evaluation" alphabets:

- ``"base"``: Latin, IPA, Cyrillic, punctuation, currency, letterlike, arrows, maths, technical, geometric
  shapes, Braille - the only classes the default embedder is trained on;
- ``"novel"``: Greek, Armenian, Georgian, Hebrew, Arabic, Lao, Tifinagh, N'Ko - scripts never seen in
  training, used to measure few-shot accuracy on new classes;
- ``"icons"``: Miscellaneous Symbols and Dingbats (suns, chess pieces, scissors, stars...), also never
  seen in training: a second held-out domain closer to icons.

Characters whose shape duplicates an earlier class (Cyrillic "а" and Latin "a", Greek "Α" and Latin "A")
are dropped, so no class is a copy of another and no novel class is a copy of a base class.

The photo part (``photo_classes``/``render_photos``) cuts "instance classes" out of the photos bundled with
scikit-image, scikit-learn and matplotlib: a class is one region of one photo, its samples are jittered
crops of it. The ``"base"`` photos train the embedder; the ``"novel"`` photos (astronaut, cat, coffee...)
only evaluate it. Procedural shapes (``shape_classes``/``render_shapes``: random compositions of polygons,
stars, ellipses, arcs, lines and dots, drawn like sketches or icons) add training classes of a third kind.

Computing the class lists renders every candidate character once (about 20 s), so the result is kept in
``data/glyph_classes.json`` together with a fingerprint of the fonts and rules; it is recomputed whenever
the fingerprint differs.

Example::

    classes = glyph_classes("novel")            # [(label, codepoint), ...]
    images, labels = render_glyphs(classes[:5], samples_per_class=4, seed=0)
    images.shape, images.dtype                  # ((20, 64, 64, 3), dtype('uint8'))
"""

import functools
import hashlib
import json
import logging
import os
import io
import re
import unicodedata

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from cbr_lite.errors import CbrError
from cbr_lite.files import write_atomically
from cbr_lite.locations import DATA_DIR

# Unicode blocks (first, last code point) per split. Base = what the embedder may learn from.
BASE_BLOCKS = {
    "latin": (0x0021, 0x024F),
    "ipa": (0x0250, 0x02AF),
    "cyrillic": (0x0400, 0x04FF),
    "punctuation": (0x2010, 0x205E),
    "currency": (0x20A0, 0x20BF),
    "letterlike": (0x2100, 0x218B),
    "arrows": (0x2190, 0x21FF),
    "math_operators": (0x2200, 0x22FF),
    "technical": (0x2300, 0x23FF),
    "geometric": (0x25A0, 0x25FF),
    "braille": (0x2801, 0x28FF),
    "supplemental_arrows": (0x2900, 0x297F),
    "math_misc": (0x2980, 0x29FF),
    "math_supplemental": (0x2A00, 0x2AFF),
}
NOVEL_BLOCKS = {
    "greek": (0x0370, 0x03FF),
    "armenian": (0x0531, 0x0587),
    "hebrew": (0x05D0, 0x05EA),
    "arabic": (0x0620, 0x064A),
    "nko": (0x07C0, 0x07FA),
    "lao": (0x0E80, 0x0EDF),
    "georgian": (0x10A0, 0x10FF),
    "tifinagh": (0x2D30, 0x2D7F),
}
ICON_BLOCKS = {
    "misc_symbols": (0x2600, 0x26FF),
    "dingbats": (0x2700, 0x27BF),
}
SPLITS = {"base": BASE_BLOCKS, "novel": NOVEL_BLOCKS, "icons": ICON_BLOCKS}

# Faces with a Unicode cmap. The "Display" subsets, STIX size/non-unicode variants and LastResort (which
# draws a box for every code point) are left out on purpose.
UNICODE_FACES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
)
# Computer Modern (BaKoMa) fonts use TeX encodings where punctuation slots hold other glyphs (in cmr10
# "<" is an inverted "!"), so they are trusted for ASCII letters and digits only.
# cmti10 is left out: matplotlib < 3.11 (the releases for Python 3.10) does not ship it.
TEX_FACES = ("cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmmi10.ttf")
TEX_CHARS = frozenset(map(ord, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"))

MIN_FACES = 2            # a class needs two faces, so its samples differ by more than distortions
DUPLICATE_IOU = 0.8      # shapes overlapping this much (same face, same place) count as one class
FONT_SIZES = (40, 44, 48, 52, 56)

# Photos bundled with scikit-image / scikit-learn. Base photos train (as textures and instance classes);
# novel photos only evaluate.
BASE_PHOTOS = ("brick", "grass", "gravel", "camera", "cell", "clock", "coins", "moon", "page", "text",
               "hubble_deep_field", "retina", "stereo_motorcycle")
NOVEL_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "china", "flower",
                "grace_hopper")


def font_dir():
    """Return the folder of TrueType fonts that ships inside matplotlib (``mpl-data/fonts/ttf``)."""
    import matplotlib

    return os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf")


@functools.lru_cache(maxsize=None)
def font_coverage():
    """Map each usable font file name to the frozenset of code points it draws with at least one contour.

    A cmap entry alone is not enough: some fonts map code points to empty glyphs, which would render as
    blank images. An empty glyph has no outline data, i.e. the same start and end offset in the font's
    ``loca`` table; reading offsets is ~20x faster than decoding every glyph.
    """
    from fontTools.ttLib import TTFont

    # matplotlib's fonts carry 1970-ish timestamps, which fontTools reports on stderr each time it reads them.
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    coverage = {}
    for name in UNICODE_FACES + TEX_FACES:
        path = os.path.join(font_dir(), name)
        if not os.path.exists(path):
            raise CbrError(f"font {path} is missing from matplotlib; reinstall matplotlib")
        font = TTFont(path, lazy=True)
        cmap, offsets = font.getBestCmap(), font["loca"].locations
        ids = {glyph: i for i, glyph in enumerate(font.getGlyphOrder())}
        drawn = {c for c, g in cmap.items() if g in ids and offsets[ids[g] + 1] > offsets[ids[g]]}
        if name in TEX_FACES:
            drawn &= TEX_CHARS
        coverage[name] = frozenset(drawn)
    return coverage


def faces_for(codepoint):
    """Return the sorted font file names that contain a real glyph for ``codepoint``."""
    return tuple(name for name, drawn in font_coverage().items() if codepoint in drawn)


@functools.lru_cache(maxsize=256)
def _font(name, size):
    return ImageFont.truetype(os.path.join(font_dir(), name), size)


def class_label(codepoint):
    """Return a readable ascii label for a code point, e.g. ``0x3B1 -> 'greek_alpha'``.

    Built from the Unicode name (``GREEK SMALL LETTER ALPHA``), dropping words that add nothing, with the
    hex code point appended when the short form would be ambiguous; used for album folder names.
    """
    name = unicodedata.name(chr(codepoint), f"U+{codepoint:04X}").lower()
    name = re.sub(r"\b(letter|small|sign|character)\b", " ", name)
    if "capital" in name:
        name = re.sub(r"\bcapital\b", " ", name) + " capital"
    return "_".join(re.sub(r"[^a-z0-9]+", " ", name).split())


def _shape(codepoint, size=32, canvas=48):
    """Binary shape of a code point in its first face, centred, at its natural size (for de-duplication)."""
    font = _font(faces_for(codepoint)[0], size)
    image = Image.new("L", (canvas, canvas), 0)
    left, top, right, bottom = font.getbbox(chr(codepoint))
    ImageDraw.Draw(image).text(((canvas - left - right) / 2, (canvas - top - bottom) / 2),
                               chr(codepoint), font=font, fill=255)
    return np.asarray(image) > 127


#: The class lists, computed once (about 20 s of font rendering) and committed; recomputed whenever
#: the fonts, Unicode data or the rules above differ from those the file was computed with.
CLASSES_FILE = os.path.join(DATA_DIR, "glyph_classes.json")


def classes_key():
    """A fingerprint of everything the class lists depend on: blocks, rules, faces, font file sizes, and the
    Unicode data (category and name) of every code point of the blocks that a face draws.

    The Unicode data is taken character by character rather than as ``unicodedata.unidata_version``: each
    Python ships another Unicode version, but none of the newer ones changes a character the fonts draw,
    so one committed class file is current on every supported Python.
    """
    fonts = {name: os.path.getsize(os.path.join(font_dir(), name)) if os.path.exists(os.path.join(font_dir(), name))
             else None for name in UNICODE_FACES + TEX_FACES}
    drawn = frozenset().union(*font_coverage().values())
    characters = [(c, unicodedata.category(chr(c)), unicodedata.name(chr(c), ""))
                  for blocks in SPLITS.values() for first, last in blocks.values() for c in range(first, last + 1)
                  if c in drawn]
    recipe = {"splits": SPLITS, "min_faces": MIN_FACES, "duplicate_iou": DUPLICATE_IOU, "fonts": fonts,
              "tex_chars": sorted(TEX_CHARS), "characters": characters, "version": 2}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def write_classes_file(path=None):
    """Compute the class lists from the fonts and write them (with :func:`classes_key`) to ``path``."""
    path = path or CLASSES_FILE
    classes = _compute_classes()
    text = json.dumps({"key": classes_key(), "splits": {split: dict(items) for split, items in classes.items()}},
                      indent=1, ensure_ascii=True)
    write_atomically(path, (text + "\n").encode())
    return path


@functools.lru_cache(maxsize=None)
def _all_classes():
    """Every split's (label, codepoint) list: from :data:`CLASSES_FILE` when it is current, else computed."""
    try:
        with open(CLASSES_FILE) as file:
            stored = json.load(file)
        if stored.get("key") == classes_key():
            return {split: tuple((label, int(c)) for label, c in items.items())
                    for split, items in stored["splits"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return _compute_classes()


def _compute_classes():
    """Every split's (label, codepoint) list, de-duplicated in the order base, novel, icons."""
    # Kept shapes as rows of a 0/1 matrix: one matrix-vector product gives every intersection at once.
    capacity = sum(last - first + 1 for blocks in SPLITS.values() for first, last in blocks.values())
    kept, areas, count, result = None, np.zeros(capacity, np.float32), 0, {}
    for split, blocks in SPLITS.items():
        classes = []
        for first, last in blocks.values():
            for codepoint in range(first, last + 1):
                if unicodedata.category(chr(codepoint))[0] in "CZ" or len(faces_for(codepoint)) < MIN_FACES:
                    continue
                shape = _shape(codepoint).ravel().astype(np.float32)
                area = shape.sum()
                if not area:
                    continue
                if kept is None:
                    kept = np.zeros((capacity, shape.size), np.float32)
                if count:
                    inter = kept[:count] @ shape
                    if (inter / (areas[:count] + area - inter)).max() > DUPLICATE_IOU:
                        continue
                kept[count], areas[count] = shape, area
                count += 1
                classes.append(codepoint)
        labels = [class_label(c) for c in classes]
        # Disambiguate the rare label collisions with the code point, keeping labels unique per split.
        seen = {}
        for label in labels:
            seen[label] = seen.get(label, 0) + 1
        result[split] = tuple((lab if seen[lab] == 1 else f"{lab}_{c:04x}", c) for lab, c in zip(labels, classes))
    return result


def glyph_classes(split):
    """Return the classes of a split as a list of ``(label, codepoint)``, in code point order.

    ``split`` is ``"base"`` (training scripts), ``"novel"`` (held-out scripts) or ``"icons"`` (held-out
    symbols). The three are disjoint and no class duplicates the shape of a class in an earlier split.
    """
    if split not in SPLITS:
        raise CbrError(f"unknown glyph split {split!r}; use one of {', '.join(SPLITS)}")
    return list(_all_classes()[split])


def _colour(rng):
    return rng.integers(0, 256, size=3).astype(np.float32)


def _luma(rgb):
    return float(np.dot(rgb, [0.299, 0.587, 0.114]))


@functools.lru_cache(maxsize=None)
def _photo(name):
    """A bundled photo as uint8 RGB (scikit-image's data module or scikit-learn's sample images)."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        image = load_sample_image(f"{name}.jpg")
    elif name == "grace_hopper":
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as file:
            image = np.asarray(Image.open(file).convert("RGB"))
    else:
        import skimage.data

        image = getattr(skimage.data, name)()
        if isinstance(image, tuple):  # stereo_motorcycle returns (left, right, disparity)
            image = image[0]
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (255 * (image.astype(np.float64) / max(image.max(), 1))).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def _affine(rng, centre_in, centre_out, scale, max_rotation, max_shear):
    """PIL AFFINE coefficients mapping an output pixel to the input pixel (inverse of the forward warp)."""
    angle = np.deg2rad(rng.uniform(-max_rotation, max_rotation))
    shear = rng.uniform(-max_shear, max_shear)
    aspect = np.exp(rng.uniform(-0.1, 0.1))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    forward = rotation @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([scale * aspect, scale / aspect])
    inverse = np.linalg.inv(forward)
    offset = np.asarray(centre_in) - inverse @ np.asarray(centre_out)
    return (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])


def _background(rng, size, photos):
    """A solid, gradient or photo-texture background, float32 (size, size, 3)."""
    kind = rng.random()
    if kind < 0.3:
        return np.broadcast_to(_colour(rng), (size, size, 3)).copy()
    if kind < 0.5 or not photos:
        ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
        ramp = ramp[:, None] if rng.random() < 0.5 else ramp[None, :]
        start, end = _colour(rng), _colour(rng)
        return np.broadcast_to(start + (end - start) * ramp[..., None], (size, size, 3)).copy()
    photo = _photo(photos[rng.integers(len(photos))])
    crop = int(rng.integers(size // 2, min(photo.shape[:2]) // 2))
    top = int(rng.integers(0, photo.shape[0] - crop + 1))
    left = int(rng.integers(0, photo.shape[1] - crop + 1))
    patch = Image.fromarray(photo[top:top + crop, left:left + crop]).resize((size, size), Image.BILINEAR)
    patch = np.asarray(patch, dtype=np.float32)
    if rng.random() < 0.5:  # wash the texture out so the glyph stays readable more often than not
        patch = patch * 0.4 + _colour(rng) * 0.6
    return patch


def _finish(rng, image):
    """Shared photometric tail: global contrast/brightness, occasional grey or inversion, noise, uint8."""
    if rng.random() < 0.2:
        image = np.repeat(image.mean(axis=2, keepdims=True), 3, axis=2)
    if rng.random() < 0.1:
        image = 255.0 - image
    noise = rng.uniform(0, 12) if rng.random() < 0.5 else 0.0
    if noise:
        image = image + rng.normal(0.0, noise, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render_glyph(codepoint, rng, size=64, photos=BASE_PHOTOS, clean=False):
    """Render one sample of a code point as uint8 RGB ``(size, size, 3)`` using the random generator ``rng``.

    The face, font size, stroke width (or outline-only "sketch" drawing), affine jitter (rotation, shear,
    scale, aspect, shift), blur, colours, background (solid, gradient or a texture cut from ``photos``),
    clutter lines and noise are all drawn from ``rng``. ``clean=True`` gives a black glyph on white with
    mild jitter only, as in a tidy album.
    """
    faces = faces_for(codepoint)
    if not faces:
        raise CbrError(f"no matplotlib font draws U+{codepoint:04X}; pick a code point from glyph_classes()")
    face = faces[rng.integers(len(faces))]
    font = _font(face, FONT_SIZES[rng.integers(len(FONT_SIZES))])
    style = 0.0 if clean else rng.random()
    stroke = 0 if style < 0.6 else int(rng.integers(1, 3))
    outline = style >= 0.85  # "sketch": only the outline of a thickened glyph
    big = 2 * size
    mask = Image.new("L", (big, big), 0)
    char = chr(codepoint)
    left, top, right, bottom = font.getbbox(char, stroke_width=stroke)
    ImageDraw.Draw(mask).text(((big - left - right) / 2, (big - top - bottom) / 2), char, font=font,
                              fill=0 if outline else 255, stroke_width=stroke, stroke_fill=255)
    # Wide or tall glyphs shrink to fit; small ones (".", "-") keep their size relative to letters.
    extent = max(right - left, bottom - top, 1)
    scale = min(1.0, 0.85 * size / extent) * rng.uniform(0.8, 1.1)
    shift = rng.uniform(-0.08, 0.08, size=2) * size
    jitter = 0.3 if clean else 1.0
    coefficients = _affine(rng, (big / 2, big / 2), size / 2 + shift * jitter, scale,
                           15 * jitter, 0.25 * jitter)
    mask = mask.transform((size, size), Image.AFFINE, coefficients, resample=Image.BILINEAR)
    return _paint(mask, rng, size, photos, clean, thin=stroke == 0)


def _paint(mask, rng, size, photos, clean, thin=True):
    """Turn a ``size x size`` "L" mask of a drawing into a jittered uint8 RGB image: optional thinning and
    blur, ink and background colours (plain paper, solid, gradient or photo texture), clutter lines, noise."""
    if not clean and rng.random() < 0.2 and thin:  # thin strokes, as from a light pen
        mask = mask.filter(ImageFilter.MinFilter(3))
    blur = rng.uniform(0.0, 1.2) if (not clean and rng.random() < 0.4) else 0.0
    if blur:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    if clean:
        background = np.full((size, size, 3), 255.0, np.float32)
        foreground = np.zeros(3, np.float32)
    else:
        if rng.random() < 0.3:  # plain ink on paper, the most common case in albums
            light = rng.uniform(200, 256, size=3)
            dark = rng.uniform(0, 60, size=3)
            background = np.broadcast_to(light, (size, size, 3)).astype(np.float32)
            foreground = dark.astype(np.float32)
        else:
            background = _background(rng, size, photos)
            foreground = _colour(rng)
            # Keep the glyph visible: push its colour away from the background's mean brightness.
            mean = _luma(background.reshape(-1, 3).mean(axis=0))
            if abs(_luma(foreground) - mean) < 80:
                foreground = np.clip(foreground + (100 if mean < 128 else -100), 0, 255)
        if rng.random() < 0.3:
            clutter = Image.new("L", (size, size), 0)
            draw = ImageDraw.Draw(clutter)
            for _ in range(int(rng.integers(1, 4))):
                points = [tuple(p) for p in rng.uniform(0, size, size=(2, 2))]
                draw.line(points, fill=255, width=int(rng.integers(1, 3)))
            weight = np.asarray(clutter, dtype=np.float32)[..., None] / 255.0
            background = background * (1 - weight) + _colour(rng) * weight
    image = background * (1.0 - alpha) + foreground * alpha
    if clean:
        return np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return _finish(rng, image)


def _sample_rng(seed, key, index):
    # One generator per (seed, class, sample): a sample does not depend on which other classes are asked for.
    key = [int(k) for k in np.atleast_1d(key)]
    return np.random.default_rng([int(seed), *key, int(index)])


def render_glyphs(classes, samples_per_class, seed, size=64, clean=False, photos=BASE_PHOTOS):
    """Render ``samples_per_class`` samples of each class; return ``(images, labels)``.

    ``classes`` is a list of ``(label, codepoint)`` (from ``glyph_classes``); ``images`` is uint8
    ``(n, size, size, 3)``, ``labels`` int32 ``(n,)`` indexes into ``classes``, samples of a class
    consecutive. The bytes depend only on ``seed``, the code point and the sample index.
    """
    if samples_per_class < 1:
        raise CbrError(f"samples_per_class must be at least 1, got {samples_per_class}")
    images = np.empty((len(classes) * samples_per_class, size, size, 3), np.uint8)
    labels = np.repeat(np.arange(len(classes), dtype=np.int32), samples_per_class)
    for i, (_, codepoint) in enumerate(classes):
        for j in range(samples_per_class):
            rng = _sample_rng(seed, codepoint, j)
            images[i * samples_per_class + j] = render_glyph(codepoint, rng, size, photos, clean)
    return images, labels


# Procedural shapes: a class is a random composition of 1-4 primitives in the unit square, drawn filled or
# as outlines; its samples redraw it with wobbly vertices and a random pen, as sketches and icons vary.
SHAPE_PRIMITIVES = ("polygon", "star", "ellipse", "polyline", "arc", "rectangle", "dots")


def shape_classes(count, seed=0):
    """Return ``count`` procedural shape classes as ``(label, (seed, index))``, e.g. ``("shape_0007", (0, 7))``.

    The shape itself is derived from ``(seed, index)`` by :func:`shape_primitives`. Training uses seed 0;
    another seed gives other shapes.
    """
    return [(f"shape_{index:04d}", (int(seed), index)) for index in range(int(count))]


def shape_primitives(key):
    """The primitives of shape class ``key = (seed, index)``: a list of ``(kind, points (k, 2) in [0, 1],
    filled)``; deterministic in ``key``."""
    rng = np.random.default_rng([7919, *key])
    primitives = []
    for _ in range(int(rng.integers(1, 5))):
        kind = SHAPE_PRIMITIVES[rng.integers(len(SHAPE_PRIMITIVES))]
        centre = rng.uniform(0.25, 0.75, size=2)
        radius = rng.uniform(0.12, 0.4)
        if kind in ("polygon", "star"):
            corners = int(rng.integers(3, 9))
            angles = np.sort(rng.uniform(0, 2 * np.pi, corners)) if kind == "polygon" else \
                np.linspace(0, 2 * np.pi, 2 * corners, endpoint=False) + rng.uniform(0, np.pi)
            radii = radius * (rng.uniform(0.6, 1.0, len(angles)) if kind == "polygon" else
                              np.where(np.arange(len(angles)) % 2, rng.uniform(0.3, 0.6), 1.0))
            points = centre + np.stack([np.cos(angles), np.sin(angles)], axis=1) * radii[:, None]
        elif kind in ("ellipse", "rectangle"):
            half = radius * rng.uniform(0.4, 1.0, size=2)
            points = np.stack([centre - half, centre + half])
        elif kind == "polyline":
            points = rng.uniform(0.1, 0.9, size=(int(rng.integers(2, 6)), 2))
        elif kind == "arc":
            start = rng.uniform(0, 360)
            points = np.array([centre - radius, centre + radius, [start, start + rng.uniform(60, 300)]])
        else:  # dots: a few small filled circles
            points = rng.uniform(0.15, 0.85, size=(int(rng.integers(2, 6)), 2))
        primitives.append((kind, points, bool(rng.random() < 0.5)))
    return primitives


def render_shape(key, rng, size=64, photos=BASE_PHOTOS, clean=False):
    """Render one sample of shape class ``key`` as uint8 RGB ``(size, size, 3)``, jittered like a glyph."""
    big = 2 * size
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    width = int(rng.integers(2, 9))
    wobble = 0.0 if clean else 0.025
    for kind, points, filled in shape_primitives(key):
        if kind == "arc":
            box = points[:2] + rng.normal(0, wobble, size=(2, 2))
            box = np.sort(box, axis=0) * big
            draw.arc([*box[0], *box[1]], float(points[2, 0]), float(points[2, 1]), fill=255, width=width)
            continue
        moved = (points + rng.normal(0, wobble, size=points.shape)) * big
        if kind in ("ellipse", "rectangle"):
            moved = np.sort(moved, axis=0)
            shape = draw.ellipse if kind == "ellipse" else draw.rectangle
            shape([*moved[0], *moved[1]], fill=255 if filled else None, outline=255, width=width)
        elif kind in ("polygon", "star"):
            flat = [tuple(p) for p in moved]
            if filled:
                draw.polygon(flat, fill=255)
            else:
                draw.line(flat + flat[:1], fill=255, width=width, joint="curve")
        elif kind == "polyline":
            draw.line([tuple(p) for p in moved], fill=255, width=width, joint="curve")
        else:
            r = big * 0.04
            for x, y in moved:
                draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    jitter = 0.3 if clean else 1.0
    scale = 0.5 * rng.uniform(0.8, 1.1)
    shift = rng.uniform(-0.08, 0.08, size=2) * size
    coefficients = _affine(rng, (big / 2, big / 2), size / 2 + shift * jitter, scale, 20 * jitter, 0.25 * jitter)
    mask = mask.transform((size, size), Image.AFFINE, coefficients, resample=Image.BILINEAR)
    return _paint(mask, rng, size, photos, clean, thin=width > 3)


def render_shapes(classes, samples_per_class, seed, size=64, clean=False, photos=BASE_PHOTOS):
    """Render samples of shape classes (from :func:`shape_classes`); return ``(images, labels)`` as
    :func:`render_glyphs` does."""
    if samples_per_class < 1:
        raise CbrError(f"samples_per_class must be at least 1, got {samples_per_class}")
    images = np.empty((len(classes) * samples_per_class, size, size, 3), np.uint8)
    labels = np.repeat(np.arange(len(classes), dtype=np.int32), samples_per_class)
    for i, (_, key) in enumerate(classes):
        for j in range(samples_per_class):
            images[i * samples_per_class + j] = render_shape(key, _sample_rng(seed, [101, *key], j), size,
                                                             photos, clean)
    return images, labels


def photo_classes(split, rows=2, columns=3):
    """Return photo "instance classes" as a list of ``(label, (photo, row, column, rows, columns))``.

    Each photo of the split (``"base"`` or ``"novel"``) is cut into a grid of ``rows x columns`` regions;
    a class is one region, e.g. ``("astronaut_r0_c1", ("astronaut", 0, 1, 2, 3))``.
    """
    photos = {"base": BASE_PHOTOS, "novel": NOVEL_PHOTOS}.get(split)
    if photos is None:
        raise CbrError(f"unknown photo split {split!r}; use 'base' or 'novel'")
    if rows < 1 or columns < 1:
        raise CbrError(f"a photo grid needs at least one row and one column, got {rows}x{columns}")
    return [(f"{photo}_r{r}_c{c}", (photo, r, c, rows, columns))
            for photo in photos for r in range(rows) for c in range(columns)]


def render_photos(classes, samples_per_class, seed, size=64):
    """Render jittered crops of photo regions (from ``photo_classes``); return ``(images, labels)``.

    A sample is the region's centre crop moved by up to 15% of its size, rescaled 0.8-1.25x, rotated up to
    15 degrees, with colour, contrast, blur and noise changes - the same object seen again, roughly.
    """
    images = np.empty((len(classes) * samples_per_class, size, size, 3), np.uint8)
    labels = np.repeat(np.arange(len(classes), dtype=np.int32), samples_per_class)
    for i, (_, (name, row, column, rows, columns)) in enumerate(classes):
        photo = Image.fromarray(_photo(name))
        height, width = photo.height, photo.width
        extent = min(height / rows, width / columns)
        centre = np.array([(column + 0.5) * width / columns, (row + 0.5) * height / rows])
        key = [sum(ord(ch) * 131 ** k for k, ch in enumerate(name)) % (2 ** 31), row, column, rows, columns]
        for j in range(samples_per_class):
            rng = _sample_rng(seed, key, j)
            scale = size / extent * rng.uniform(0.8, 1.25)
            moved = centre + rng.uniform(-0.15, 0.15, size=2) * extent
            coefficients = _affine(rng, moved, (size / 2, size / 2), scale, 15, 0.1)
            crop = photo.transform((size, size), Image.AFFINE, coefficients, resample=Image.BILINEAR)
            if rng.random() < 0.3:
                crop = crop.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
            image = np.asarray(crop, dtype=np.float32)
            gain = rng.uniform(0.7, 1.3, size=3) * rng.uniform(0.7, 1.2)
            image = (image - image.mean()) * gain + image.mean() + rng.uniform(-30, 30)
            images[i * samples_per_class + j] = _finish(rng, image) if rng.random() < 0.5 else \
                np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return images, labels


def write_albums(folder, classes, samples_per_class, seed, clean=True):
    """Write glyph samples as an album: ``folder/<label>/<label>_<i>.png``, one folder per class.

    Existing files of the same names are replaced (each PNG is written to a temporary file and renamed).
    Returns the list of written paths, sorted.
    """
    images, labels = render_glyphs(classes, samples_per_class, seed, clean=clean)
    paths = []
    for index, (image, label) in enumerate(zip(images, labels)):
        name = classes[label][0]
        class_folder = os.path.join(folder, name)
        os.makedirs(class_folder, exist_ok=True)
        path = os.path.join(class_folder, f"{name}_{index % samples_per_class}.png")
        write_png(image, path)
        paths.append(path)
    return sorted(paths)


def write_png(image, path):
    """Write a uint8 RGB array as a PNG at ``path`` (:func:`cbr_lite.files.write_atomically`)."""
    stream = io.BytesIO()
    # optimize=False and no metadata keep the bytes identical run after run.
    Image.fromarray(image).save(stream, format="PNG")
    write_atomically(path, stream.getvalue())
