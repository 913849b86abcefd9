"""Bad images get a clear ImageError naming the file; good ones arrive as upright RGB."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from edgevl.errors import ImageError
from edgevl.images import load_image, to_rgb


def save(image: Image.Image, path, fmt: str = "PNG", **params):
    image.save(path, fmt, **params)
    return path


def test_missing_empty_folder_and_garbage(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)
    (tmp_path / "text.png").write_text("this is not an image")
    with pytest.raises(ImageError, match="text.png: not an image format"):
        load_image(tmp_path / "text.png")


def test_truncated_file(tmp_path):
    path = save(Image.effect_noise((300, 200), 40).convert("RGB"), tmp_path / "photo.jpg", "JPEG")
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(path)


def test_huge_image_is_refused_before_decoding(tmp_path):
    path = save(Image.new("1", (12000, 11000)), tmp_path / "huge.png")  # 132 MP, a few KB on disk
    with pytest.raises(ImageError, match="132 megapixels"):
        load_image(path)
    assert load_image(path, max_pixels=200_000_000).size == (12000, 11000)


def test_transparency_becomes_white_and_modes_become_rgb(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert load_image(save(rgba, tmp_path / "clear.png")).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("L", (2, 2), 7)).getpixel((0, 0)) == (7, 7, 7)



@pytest.mark.parametrize("mode, values, grey", [
    ("I;16", [0, 32896, 65535], [0, 128, 255]),   # a 16-bit PNG scan, as Pillow 10+ opens it
    ("I", [0, 32896, 65535], [0, 128, 255]),      # the same, as older Pillows open it
    ("I", [0, 128, 255], [0, 128, 255]),          # 8-bit values in a 32-bit image
    ("F", [0.0, 0.5, 1.0], [0, 127, 255]),        # a float TIFF of 0-1
])
def test_wide_greyscale_is_scaled_to_8_bits_not_clipped(tmp_path, mode, values, grey):
    """Pillow's own conversion of 16-bit greyscale clips at 255: a scanned page would turn white but for its
    darkest strokes."""
    image = Image.new(mode, (3, 1))
    image.putdata(values)
    assert [to_rgb(image).getpixel((x, 0)) for x in range(3)] == [(g, g, g) for g in grey]
    if mode == "I;16":
        assert load_image(save(image, tmp_path / "scan16.png")).getpixel((1, 0)) == (128, 128, 128)

def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    path = save(image, tmp_path / "phone.jpg", "JPEG", exif=exif.tobytes())
    assert load_image(path).size == (20, 40)


def test_bytes_input():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), "blue").save(buffer, "PNG")
    assert load_image(buffer.getvalue()).size == (8, 6)
    with pytest.raises(ImageError, match="image bytes"):
        load_image(b"\x89PNG broken")
