"""Reading one image file into the ``uint8 (height, width, 3)`` RGB array the rest of cbr-lite uses.

Photos arrive rotated by EXIF tags, as grayscale, palette, RGBA, 16-bit or CMYK, truncated, or as text
files with an image suffix; each either becomes a correct RGB array or a :class:`CbrError` naming the file.
:func:`resize` then brings it to a model's input size exactly as MediaPipe does on the device.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cbr_lite.errors import CbrError, first_line
from cbr_lite.files import open_regular_file

#: Larger images are refused before decoding: a few-kilobyte file can claim billions of pixels, and a real
#: one costs memory while it is read (measured at the limit: 0.8 GB peak for an RGB PNG, 0.9 GB for RGBA).
#: A 64-megapixel phone photo (9248 x 6936) fits.
MAX_PIXELS = 65_000_000
#: Larger files are refused before they are read (a 48-megapixel camera's JPEG is about 20 MB).
MAX_FILE_BYTES = 512 * 2**20
#: Smaller images carry too little to describe anything (a 1x1 "image" is one colour).
MIN_SIDE = 8


def load_image(path) -> np.ndarray:
    """Read an image file as ``uint8 (height, width, 3)`` RGB, upright as its EXIF orientation says.

    Transparent pixels are composited onto white (as icons are usually shown); 16-bit images are
    scaled to 8 bits, not clipped. Raises :class:`CbrError` with the path for anything unreadable.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings(), open_regular_file(path, "image file", MAX_FILE_BYTES) as file:
            # Pillow warns from 89.5 million pixels; our own limit (MAX_PIXELS) decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise CbrError(
                        f"{path}: {width}x{height} pixels is larger than the {MAX_PIXELS:,}-pixel limit "
                        "(a decompression bomb?); resize it first"
                    )
                image.load()
                ImageOps.exif_transpose(image, in_place=True)  # in place: no second copy of a large image
                rgb = to_rgb_array(image)
    except CbrError:
        raise
    except PermissionError:
        raise CbrError(f"{path}: permission denied; make the file readable") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Pillow refuses such sizes itself while reading the header, before our own check sees them.
        raise CbrError(
            f"{path}: too many pixels to read safely, a decompression bomb? ({first_line(error)}); resize it first"
        ) from None
    except UnidentifiedImageError:
        raise CbrError(f"{path}: not a readable image (not in a format Pillow knows)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise CbrError(f"{path}: corrupt or truncated image ({first_line(error)})") from None
    if min(rgb.shape[:2]) < MIN_SIDE:
        raise CbrError(
            f"{path}: {rgb.shape[1]}x{rgb.shape[0]} pixels is too small; images need at least "
            f"{MIN_SIDE} pixels on each side"
        )
    return rgb


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert a decoded PIL image of any mode to a ``uint8 (height, width, 3)`` RGB array."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image)
        top = 65535 if image.mode.startswith("I;16") or values.max() > 255 else 255
        # round(v * 255 / top) in integers (no float64 copies of a large image; v / 257 is never a tie).
        scaled = np.clip(values, 0, top).astype(np.uint32)
        scaled *= 255
        scaled += top // 2
        scaled //= top
        return np.repeat(scaled.astype(np.uint8)[:, :, None], 3, axis=2)
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max() > 255 else 255.0
        gray = np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        del rgba
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8)


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a ``uint8`` RGB array to ``size = (height, width)`` exactly as MediaPipe does on a phone.

    MediaPipe Tasks' ``ImageClassifier`` (``ImageToTensorCalculator``, OpenCV converter) stretches the
    whole image to the model's input (no crop, no letterbox) with ``cv::warpPerspective``, bilinear,
    edge pixels repeated. We reproduce its arithmetic, so the model sees the very same pixels in the
    notebook, in ``cbr-lite classify`` and on the device (``tests/test_mediapipe_parity.py`` measures it):

    - output pixel ``(x, y)`` reads the source point ``(x * W / w, y * H / h)``: the grids meet at the
      top-left *corner* (Pillow and ``tf.image`` align pixel centres, which shifts the image by up to
      half a pixel);
    - no antialiasing: a shrunk pixel blends only the 2x2 source pixels around its point (a 4000-pixel
      photo shrunk to 224 keeps 1 pixel in 18 along each axis, so fine textures alias);
    - fixed point: the point is rounded to 1/32 pixel (computed in double precision as OpenCV does, see
      :func:`_source_points`), the four weights are integers and the sum is rounded to the nearest
      integer (halves up);
    - a point past the last row or column (when enlarging) reads the edge pixel again.

    >>> resize(np.array([[[0] * 3, [100] * 3]], dtype=np.uint8), (1, 4))[0, :, 0].tolist()
    [0, 50, 100, 100]
    """
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    in_height, in_width = image.shape[:2]
    x, y = _source_points(in_height, in_width, height, width)
    # Integer pixel and 1/32 fraction of each point; the second tap is clamped to the edge (replicate).
    x0, fx = x >> 5, (x & 31)[..., None]
    y0, fy = y >> 5, (y & 31)[..., None]
    x1, y1 = np.minimum(x0 + 1, in_width - 1), np.minimum(y0 + 1, in_height - 1)
    x0, y0 = np.minimum(x0, in_width - 1), np.minimum(y0, in_height - 1)
    def taps(rows, columns):  # the output-sized gather first, then int32 (not a copy of a whole photo)
        return image[rows, columns].astype(np.int32)

    # Weights (32 - f) * (32 - g) ... sum to 1024; OpenCV scales them to 2^15 and rounds (v + 2^14) >> 15,
    # which is the same as rounding v / 1024 with halves up.
    total = ((taps(y0, x0) * (32 - fx) + taps(y0, x1) * fx) * (32 - fy)
             + (taps(y1, x0) * (32 - fx) + taps(y1, x1) * fx) * fy)
    return ((total + 512) >> 10).astype(np.uint8)


@functools.lru_cache(maxsize=64)
def _source_points(in_height: int, in_width: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The source point of every output pixel in 1/32 pixels, ``(x, y)`` int arrays ``(height, width)``.

    Ideally ``round(32 * x * W / w)``. When ``w`` (or ``h``) is a multiple of 64 that is sometimes exactly
    half-way (e.g. 11 pixels -> 64: ``32 * 3 * 11 / 64 = 16.5``), and then the last bit of OpenCV's
    double-precision arithmetic decides. So we repeat it step by step: ``cv::getPerspectiveTransform``
    solves for the rectangle -> rectangle map by LU decomposition, ``cv::warpPerspective`` inverts it
    (3x3 cofactors) and evaluates it per pixel in blocks of columns, rounding half to even.
    """
    # cv::boxPoints of the whole image (bottom-left, top-left, top-right, bottom-right), float32, and
    # the output rectangle's corners, as MediaPipe's OpenCV converter lists them.
    w, h = np.float32(in_width), np.float32(in_height)
    source = [(0, h), (0, 0), (w, 0), (w, h)]
    target = [(0, height), (0, 0), (width, 0), (width, height)]
    m = _invert_3x3(_perspective_transform(source, target))
    # warpPerspective's tiles: 16 rows (or fewer) by 1024 // 16 columns; within a tile the column
    # offset is added to the value at the tile's first column.
    tile_rows = min(16, height)
    tile_cols = min(1024 // tile_rows, width)
    columns = np.arange(width)
    start = (columns // tile_cols * tile_cols).astype(np.float64)[None, :]
    offset = (columns % tile_cols).astype(np.float64)[None, :]
    rows = np.arange(height, dtype=np.float64)[:, None]
    x0 = m[0] * start + m[1] * rows + m[2]
    y0 = m[3] * start + m[4] * rows + m[5]
    w0 = m[6] * start + m[7] * rows + m[8]
    weight = w0 + m[6] * offset
    scale = np.divide(32.0, weight, out=np.zeros_like(weight), where=weight != 0)
    limit = (-2.0**31, 2.0**31 - 1)
    x = np.rint(np.clip((x0 + m[0] * offset) * scale, *limit)).astype(np.int64)
    y = np.rint(np.clip((y0 + m[3] * offset) * scale, *limit)).astype(np.int64)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def _perspective_transform(source, target) -> list[float]:
    """``cv::getPerspectiveTransform``: the 3x3 map (row-major) of 4 points onto 4, by LU with pivoting."""
    a = [[0.0] * 8 for _ in range(8)]
    b = [0.0] * 8
    for i, ((sx, sy), (tx, ty)) in enumerate(zip(source, target)):
        sx, sy, tx, ty = (np.float32(v) for v in (sx, sy, tx, ty))
        # The products are float32 there (Point2f), then stored as double.
        a[i][:3] = a[i + 4][3:6] = [float(sx), float(sy), 1.0]
        a[i][6:] = [float(-sx * tx), float(-sy * tx)]
        a[i + 4][6:] = [float(-sx * ty), float(-sy * ty)]
        b[i], b[i + 4] = float(tx), float(ty)
    for i in range(8):  # Gaussian elimination as OpenCV's LUImpl does it
        pivot = max(range(i, 8), key=lambda j: (abs(a[j][i]), -j))
        a[i], a[pivot] = a[pivot], a[i]
        b[i], b[pivot] = b[pivot], b[i]
        d = -1.0 / a[i][i]
        for j in range(i + 1, 8):
            alpha = a[j][i] * d
            for k in range(i + 1, 8):
                a[j][k] += alpha * a[i][k]
            b[j] += alpha * b[i]
    for i in range(7, -1, -1):
        s = b[i]
        for k in range(i + 1, 8):
            s -= a[i][k] * b[k]
        b[i] = s / a[i][i]
    return b + [1.0]


def _invert_3x3(m: list[float]) -> list[float]:
    """``cv::invert`` of a 3x3 double matrix: cofactors times the reciprocal determinant, in its order."""
    def c(r, k):
        return m[3 * r + k]

    d = 1.0 / (c(0, 0) * (c(1, 1) * c(2, 2) - c(1, 2) * c(2, 1))
               - c(0, 1) * (c(1, 0) * c(2, 2) - c(1, 2) * c(2, 0))
               + c(0, 2) * (c(1, 0) * c(2, 1) - c(1, 1) * c(2, 0)))
    return [(c(1, 1) * c(2, 2) - c(1, 2) * c(2, 1)) * d, (c(0, 2) * c(2, 1) - c(0, 1) * c(2, 2)) * d,
            (c(0, 1) * c(1, 2) - c(0, 2) * c(1, 1)) * d, (c(1, 2) * c(2, 0) - c(1, 0) * c(2, 2)) * d,
            (c(0, 0) * c(2, 2) - c(0, 2) * c(2, 0)) * d, (c(0, 2) * c(1, 0) - c(0, 0) * c(1, 2)) * d,
            (c(1, 0) * c(2, 1) - c(1, 1) * c(2, 0)) * d, (c(0, 1) * c(2, 0) - c(0, 0) * c(2, 1)) * d,
            (c(0, 0) * c(1, 1) - c(0, 1) * c(1, 0)) * d]
