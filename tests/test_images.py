"""Reading images of every mode PIL writes into upright uint8 RGB, and refusing broken ones by name."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from cbr_lite.errors import CbrError
from cbr_lite.images import MAX_PIXELS, MIN_SIDE, load_image, resize, to_rgb_array

RED, BLUE = (255, 0, 0), (0, 0, 255)


def gradient(height=12, width=16):
    """A colourful image with no two equal pixels along a row, so orientation and channel order show."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 15, y * 20, 255 - x * 15], axis=-1).astype(np.uint8)


def assert_rgb(image, shape):
    assert image.dtype == np.uint8 and image.shape == (*shape, 3) and image.flags.c_contiguous


def test_rgb_png_reads_back_exactly(write_image):
    pixels = gradient()
    image = load_image(write_image("a.png", pixels))
    assert_rgb(image, (12, 16))
    np.testing.assert_array_equal(image, pixels)


def test_grayscale_becomes_three_equal_channels(write_image):
    gray = gradient()[:, :, 0]
    image = load_image(write_image("gray.png", gray))
    assert_rgb(image, gray.shape)
    for channel in range(3):
        np.testing.assert_array_equal(image[:, :, channel], gray)


def test_rgba_is_composited_onto_white(write_image):
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[:, :5] = (0, 0, 0, 0)          # fully transparent black: shows as white
    rgba[:, 5:] = (255, 0, 0, 128)      # half-transparent red over white: pink
    image = load_image(write_image("icon.png", rgba))
    assert image[0, 0].tolist() == [255, 255, 255]
    np.testing.assert_allclose(image[0, 9], [255, 127, 127], atol=1)


def test_grayscale_with_alpha_is_composited_onto_white(write_image):
    la = Image.fromarray(np.stack([np.zeros((9, 9)), np.full((9, 9), 64)], axis=-1).astype(np.uint8), "LA")
    image = load_image(write_image("la.png", la))
    np.testing.assert_allclose(image[0, 0], [191, 191, 191], atol=1)


def test_palette_image_gives_its_palette_colours(write_image):
    palette_image = Image.fromarray(gradient()).quantize(colors=8)
    expected = np.asarray(palette_image.convert("RGB"))
    image = load_image(write_image("palette.png", palette_image))
    np.testing.assert_array_equal(image, expected)
    assert Image.open(write_image("palette.gif", palette_image)).mode == "P"
    np.testing.assert_array_equal(load_image(write_image("palette.gif", palette_image)), expected)


def test_palette_transparency_becomes_white(write_image):
    palette_image = Image.new("P", (9, 9), 1)
    palette_image.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    palette_image.info["transparency"] = 1
    image = load_image(write_image("transparent.png", palette_image, transparency=1))
    assert image[4, 4].tolist() == [255, 255, 255]


def test_16_bit_grayscale_is_scaled_not_clipped(write_image):
    values = np.linspace(0, 65535, 12 * 16).reshape(12, 16).astype(np.uint16)
    path = write_image("deep.png", values)
    assert Image.open(path).mode.startswith("I")
    image = load_image(path)
    np.testing.assert_array_equal(image[:, :, 1], np.round(values / 65535 * 255).astype(np.uint8))
    # A dark 16-bit image stays dark (clipping would make it white).
    dark = load_image(write_image("dark.png", np.full((9, 9), 2000, dtype=np.uint16)))
    assert dark.max() == round(2000 / 65535 * 255)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def test_16_bit_rgb_png_keeps_its_colours(tmp_path):
    # PIL cannot write 16-bit RGB, so the file is written chunk by chunk.
    height, width = 9, 10
    pixels = np.zeros((height, width, 3), dtype=">u2")
    pixels[..., 0], pixels[..., 2] = 65535, 30000
    rows = b"".join(b"\x00" + row.tobytes() for row in pixels)
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b""))
    (tmp_path / "rgb16.png").write_bytes(data)
    image = load_image(tmp_path / "rgb16.png")
    assert_rgb(image, (height, width))
    np.testing.assert_allclose(image[0, 0], [255, 0, round(30000 / 65535 * 255)], atol=1)


@pytest.mark.parametrize("suffix", ["tif", "jpg"])
def test_cmyk_becomes_rgb(write_image, suffix):
    cmyk = Image.new("CMYK", (10, 10), (255, 0, 0, 0))  # pure cyan ink
    image = load_image(write_image(f"print.{suffix}", cmyk, **({"quality": 95} if suffix == "jpg" else {})))
    np.testing.assert_allclose(image[5, 5], [0, 255, 255], atol=2)


def test_exif_orientation_6_is_turned_upright(write_image):
    # Stored 16 high and 32 wide, red left and blue right; orientation 6 means "turn 90 degrees clockwise".
    stored = np.zeros((16, 32, 3), dtype=np.uint8)
    stored[:, :16], stored[:, 16:] = RED, BLUE
    photo = Image.fromarray(stored)
    exif = photo.getexif()
    exif[0x0112] = 6
    image = load_image(write_image("rotated.jpg", photo, exif=exif, quality=95))
    assert_rgb(image, (32, 16))
    np.testing.assert_allclose(image[4, 8], RED, atol=3)
    np.testing.assert_allclose(image[-4, 8], BLUE, atol=3)


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (9, 9), colour) for colour in (RED, BLUE)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    np.testing.assert_allclose(load_image(tmp_path / "anim.gif")[0, 0], RED, atol=2)


@pytest.mark.parametrize("size", [(1, 1), (MIN_SIDE - 1, 40), (40, MIN_SIDE - 1)])
def test_tiny_images_are_refused(write_image, size):
    path = write_image("tiny.png", np.zeros((*size, 3), dtype=np.uint8))
    with pytest.raises(CbrError, match="too small") as error:
        load_image(path)
    assert str(path) in str(error.value)
    assert load_image(write_image("ok.png", np.zeros((MIN_SIDE, MIN_SIDE, 3), dtype=np.uint8))).shape[:2] == (
        MIN_SIDE, MIN_SIDE)


def encoded(pixels, format):
    stream = io.BytesIO()
    Image.fromarray(pixels).save(stream, format=format)
    return stream.getvalue()


@pytest.mark.parametrize("name, data, message", [
    ("cut.jpg", encoded(gradient(64, 64), "JPEG")[:300], "corrupt or truncated"),
    ("cut.png", encoded(gradient(64, 64), "PNG")[:120], "corrupt or truncated"),
    ("notes.jpg", b"these are my notes, not a photo\n", "not a readable image"),
    ("empty.png", b"", "not a readable image"),
])
def test_unreadable_files_are_refused_by_path_in_one_line(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(CbrError, match=message) as error:
        load_image(path)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def test_missing_file_and_folder_are_refused(tmp_path):
    with pytest.raises(CbrError, match="missing.png: no such image file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(CbrError, match="is a folder"):
        load_image(tmp_path)


def test_unreadable_permissions_are_reported_as_such(tmp_path, monkeypatch):
    path = tmp_path / "locked.png"
    path.write_bytes(encoded(gradient(), "PNG"))

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Image, "open", refuse)
    with pytest.raises(CbrError, match="permission") as error:
        load_image(path)
    assert str(path) in str(error.value)


def png_claiming(width, height):
    """A 1x1 PNG whose header claims ``width`` x ``height`` pixels."""
    data = bytearray(encoded(np.zeros((1, 1), dtype=np.uint8), "PNG"))
    ihdr = bytearray(data[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)))
    return bytes(data)


@pytest.mark.parametrize("width, height", [(10_000, 10_001), (20_000, 10_000), (50_000, 50_000)])
def test_decompression_bombs_are_refused_before_decoding(tmp_path, width, height):
    assert width * height > MAX_PIXELS
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(width, height))
    with pytest.raises(CbrError, match="decompression bomb") as error:
        load_image(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_images_below_our_limit_are_not_called_bombs(tmp_path):
    # 64 million pixels: below MAX_PIXELS. The file holds one pixel's data, so it is refused as truncated,
    # not as a bomb.
    assert 64_000_000 < MAX_PIXELS
    path = tmp_path / "big.png"
    path.write_bytes(png_claiming(8_000, 8_000))
    with pytest.raises(CbrError, match="corrupt or truncated"):
        load_image(path)


def test_the_pixel_limit_is_ours_not_only_pillows(tmp_path, monkeypatch):
    # With Pillow's own check switched off, cbr-lite still refuses more than MAX_PIXELS.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(MAX_PIXELS // 1000 + 1, 1000))
    with pytest.raises(CbrError, match="larger than the 65,000,000-pixel limit"):
        load_image(path)


def test_to_rgb_array_handles_modes_directly():
    assert to_rgb_array(Image.new("1", (3, 2), 1)).tolist() == [[[255] * 3] * 3] * 2
    assert to_rgb_array(Image.new("F", (2, 2), 128.0))[0, 0].tolist() == [128] * 3
    assert to_rgb_array(Image.new("I", (2, 2), 60000))[0, 0].tolist() == [233] * 3


def test_resize_takes_height_then_width_and_keeps_same_size_images():
    pixels = gradient(12, 16)
    assert resize(pixels, (5, 7)).shape == (5, 7, 3)
    assert resize(pixels, (12, 16)) is pixels
    flat = np.full((12, 16, 3), 77, dtype=np.uint8)
    np.testing.assert_array_equal(resize(flat, (30, 3)), 77)
