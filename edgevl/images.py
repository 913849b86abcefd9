"""Reading user images safely: one place that turns a path or bytes into an RGB `PIL.Image`.

Corrupt, empty, truncated and absurdly large files get an `ImageError` that names the file, instead of a
Pillow traceback or a process killed for memory.
"""

from __future__ import annotations

import io
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import cast
from collections.abc import Iterable, Iterator

from PIL import Image, ImageOps, UnidentifiedImageError

from edgevl.errors import ImageError

#: Larger images are refused before they are decoded (a 10000 x 10000 screenshot is 100 MP).
MAX_PIXELS = 120_000_000
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def expand_image_files(paths: Iterable[Path], extensions: Iterable[str] = IMAGE_EXTENSIONS) -> Iterator[Path]:
    """Files as given; folders become the images inside them (recursively, sorted), chosen by extension."""
    wanted = {extension.lower() for extension in extensions}
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix.lower() in wanted and p.is_file())
        else:
            yield path


def load_image(source: str | Path | bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an image file (or its bytes) to RGB, honouring EXIF rotation; transparency becomes white.

    The pixel count is checked from the header, before anything is decoded - or, for a file, read past it."""
    name = _name(source)
    with _opened(source) as image:
        _check_pixels(name, image.size, max_pixels)
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise ImageError(f"{name}: the image is corrupt or truncated ({error})") from None
        ImageOps.exif_transpose(image, in_place=True)  # no copy of an upright image (50 MP: 150 MB)
        return to_rgb(image)


def image_size(source: str | Path | bytes, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) from the header alone; ImageError as load_image would raise it for a bad header."""
    with _opened(source) as image:
        _check_pixels(_name(source), image.size, max_pixels)
        return image.size


def _name(source: str | Path | bytes) -> str:
    return "image bytes" if isinstance(source, bytes) else str(source)


@contextmanager
def _opened(source: str | Path | bytes) -> Iterator[Image.Image]:
    """The image with only its header read (Pillow decodes on load())."""
    name = _name(source)
    if isinstance(source, bytes) and not source:
        raise ImageError(f"{name}: the data is empty")
    try:
        with warnings.catch_warnings():
            # edgevl applies its own pixel limit, with a message that says what to do
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else Path(source))
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a folder, not an image") from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"{name}: far too many pixels ({error}); crop or downscale it first") from None
    except UnidentifiedImageError:
        empty = not isinstance(source, bytes) and Path(source).stat().st_size == 0
        raise ImageError(f"{name}: " + ("the file is empty" if empty else
                         "not an image format edgevl can read (PNG, JPEG, WebP, BMP, TIFF, GIF)")) from None
    except OSError as error:
        raise ImageError(f"{name}: cannot be read ({error.strerror or error})") from None
    except (SyntaxError, ValueError, EOFError) as error:  # ValueError also for a NUL byte in a path
        raise ImageError(f"{name}: not a readable image ({error})") from None
    with image:
        yield image


def _check_pixels(name: str, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageError(f"{name}: {width}x{height} is {width * height / 1e6:.0f} megapixels, more than the "
                         f"{max_pixels / 1e6:.0f} MP limit; crop or downscale it first")


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy of any Pillow image; transparent pixels are put on white, as screenshots are read by people."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in WIDE_GREY_MODES:
        image = eight_bit_grey(image)
    return image.convert("RGB")


#: greyscale of more than 8 bits: 16-bit PNG and TIFF scans ("I;16...", "I" in older Pillows) and float TIFFs
WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def eight_bit_grey(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float greyscale image scaled to 8 bits. Pillow's own conversion clips at 255 instead,
    which turns everything but the darkest text white. The full scale of "I" and "F" images is not stored, so it
    is read from the values: above 255 means 16 bits, at most 1 means 0-1 floats."""
    grey = image.convert("F")
    _, top = cast(tuple[float, float], grey.getextrema())  # one band: (lowest, highest)
    full_scale = 65535 if image.mode.startswith("I;16") or top > 255 else 1 if top <= 1 else 255
    return grey.point(lambda value: value * (255 / full_scale)).convert("L")
