"""Reading one image file into the ``uint8 (height, width, 3)`` RGB array the rest of cbr-lite uses.

Photos arrive rotated by EXIF tags, as grayscale, palette, RGBA, 16-bit or CMYK, truncated, or as text
files with an image suffix; each either becomes a correct RGB array or a :class:`CbrError` naming the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cbr_lite.errors import CbrError

#: Larger images are refused before decoding: a few-kilobyte file can claim billions of pixels.
MAX_PIXELS = 100_000_000
#: Smaller images carry too little to describe anything (a 1x1 "image" is one colour).
MIN_SIDE = 8


def load_image(path) -> np.ndarray:
    """Read an image file as ``uint8 (height, width, 3)`` RGB, upright as its EXIF orientation says.

    Transparent pixels are composited onto white (as icons are usually shown); 16-bit images are
    scaled to 8 bits, not clipped. Raises :class:`CbrError` with the path for anything unreadable.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89.5 million pixels; our own limit (MAX_PIXELS) decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise CbrError(
                        f"{path}: {width}x{height} pixels is larger than the {MAX_PIXELS:,}-pixel limit "
                        "(a decompression bomb?); resize it first"
                    )
                image.load()
                image = ImageOps.exif_transpose(image)
                rgb = to_rgb_array(image)
    except CbrError:
        raise
    except FileNotFoundError:
        raise CbrError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CbrError(f"{path}: is a folder, not an image file") from None
    except PermissionError:
        raise CbrError(f"{path}: permission denied; make the file readable") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Pillow refuses such sizes itself while reading the header, before our own check sees them.
        raise CbrError(
            f"{path}: too many pixels to read safely, a decompression bomb? ({_first_line(error)}); resize it first"
        ) from None
    except UnidentifiedImageError as error:
        raise CbrError(f"{path}: not a readable image ({_first_line(error)})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise CbrError(f"{path}: corrupt or truncated image ({_first_line(error)})") from None
    if min(rgb.shape[:2]) < MIN_SIDE:
        raise CbrError(
            f"{path}: {rgb.shape[1]}x{rgb.shape[0]} pixels is too small; images need at least "
            f"{MIN_SIDE} pixels on each side"
        )
    return rgb


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert a decoded PIL image of any mode to a ``uint8 (height, width, 3)`` RGB array."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        gray = np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a ``uint8`` RGB array to ``size = (height, width)`` with bilinear filtering (no cropping)."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
