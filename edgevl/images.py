"""Reading user images safely: one place that turns a path or bytes into an RGB `PIL.Image`.

Corrupt, empty, truncated and absurdly large files get an `ImageError` that names the file, instead of a
Pillow traceback or a process killed for memory.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
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
    """Decode an image file (or its bytes) to RGB, honouring EXIF rotation; transparency becomes white."""
    name = "image bytes" if isinstance(source, bytes) else str(source)
    try:
        raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a folder, not an image") from None
    except OSError as error:
        raise ImageError(f"{name}: cannot be read ({error.strerror or error})") from None
    if not raw:
        raise ImageError(f"{name}: the file is empty")
    try:
        with warnings.catch_warnings():
            # edgevl applies its own pixel limit below, with a message that says what to do
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(
                f"{name}: {width}x{height} is {width * height / 1e6:.0f} megapixels, more than the "
                f"{max_pixels / 1e6:.0f} MP limit; crop or downscale it first"
            )
        image.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageError(f"{name}: far too many pixels ({error}); crop or downscale it first") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image format edgevl can read (PNG, JPEG, WebP, BMP, TIFF, GIF)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{name}: the image is corrupt or truncated ({error})") from None
    return to_rgb(ImageOps.exif_transpose(image))


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy of any Pillow image; transparent pixels are put on white, as screenshots are read by people."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
