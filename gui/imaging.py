"""Conversions between Pillow images (what edgevl takes) and Qt images (what widgets show), and thumbnails."""

from __future__ import annotations

import io

from PIL import Image
from PySide6.QtGui import QImage, QPixmap

from edgevl.images import to_rgb


def to_qimage(image: Image.Image) -> QImage:
    rgb = to_rgb(image)
    data = rgb.tobytes()
    # copy(): the QImage must own its pixels, `data` is freed when this function returns
    return QImage(data, rgb.width, rgb.height, 3 * rgb.width, QImage.Format.Format_RGB888).copy()


def to_pixmap(image: Image.Image) -> QPixmap:
    return QPixmap.fromImage(to_qimage(image))


def from_qimage(image: QImage) -> Image.Image:
    """An RGB Pillow copy; transparency is flattened onto white like `edgevl.images` does for files."""
    if image.hasAlphaChannel():
        rgba = image.convertToFormat(QImage.Format.Format_RGBA8888)
        return to_rgb(_frombuffer("RGBA", rgba))
    return _frombuffer("RGB", image.convertToFormat(QImage.Format.Format_RGB888))


def _frombuffer(mode: str, image: QImage) -> Image.Image:
    # Qt pads every line to 4 bytes: tell Pillow the real line length
    return Image.frombuffer(mode, (image.width(), image.height()), bytes(image.constBits()), "raw", mode,
                            image.bytesPerLine(), 1).copy()


def thumbnail_png(image: Image.Image, size: int = 160) -> bytes:
    small = image.copy()
    small.thumbnail((size, size))
    buffer = io.BytesIO()
    small.save(buffer, "PNG")
    return buffer.getvalue()
