"""Screens as they come, fed to a text detector that works on a few megapixels at a time.

Pure functions over image arrays and text boxes, used by the embedded engine (`classic.py`):
- `tiles`: a long or large screenshot is cut into overlapping full-resolution tiles instead of being shrunk (a
  1200x9000 page shrunk to 2000 px high has illegible text); `whole_in_tile` drops the lines a tile's inner edge
  cuts, which the overlap guarantees the neighbouring tile holds whole, and `merge_boxes` drops the lines found
  twice in an overlap;
- `is_line_crop`: an image holding one tight line of text goes straight to the recogniser, which then sees every
  character (a detector box may clip the first or last one), in grey with its contrast stretched (`stretched`);
- `has_mixed_polarity`: light text on dark panels next to dark text on light ones, where a second detection pass
  on the inverted image finds what the first one missed;
- `has_small_text`: text too small for the detector, read again on the image enlarged.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np

from edgevl.layout import TextBox

#: Most pixels one detection pass sees; a larger image is cut into tiles of about this size.
TILE_PIXELS = 3_000_000
#: Longest tile side: a wider image is shrunk to this width (its tiles are then cut top to bottom).
MAX_TILE_SIDE = 4096
#: Shortest tile: tiles stay at least this high however wide the image.
MIN_TILE_HEIGHT = 1024
#: Overlap of two tiles: taller than any text line of a screenshot, so each line is whole in some tile.
TILE_OVERLAP = 256
#: A box this close to a tile's inner edge was cut by it.
EDGE_MARGIN = 2
#: Two boxes covering this share of the smaller one are the same text.
SAME_TEXT_OVERLAP = 0.5
#: A line crop: at most this high, with one band of ink filling at least this share of its height.
LINE_CROP_MAX_HEIGHT, LINE_CROP_FILL = 200, 0.4

#: Text whose boxes are mostly lower than this (about a 14 px font: small UI text, a screenshot taken at reduced
#: scale) is read again on the image enlarged ENLARGE times: the detector works on a map a quarter of the image's
#: resolution, where lines of such text run into each other (whole paragraphs came out as one box) and thin
#: strokes vanish. Larger text reads the same either way, so only small text pays for the second pass.
SMALL_TEXT_HEIGHT, ENLARGE = 20, 2

Tile = tuple[int, int, int, int]  # left, top, right, bottom


def tiles(height: int, width: int) -> list[Tile]:
    """Overlapping full-width tiles, top to bottom, covering an image of at most MAX_TILE_SIDE width."""
    rows = max(MIN_TILE_HEIGHT, min(MAX_TILE_SIDE, TILE_PIXELS // max(width, 1)))
    if height <= rows:
        return [(0, 0, width, height)]
    step = rows - TILE_OVERLAP
    count = -(-(height - TILE_OVERLAP) // step)  # ceiling division
    step = -(-(height - TILE_OVERLAP) // count)  # spread the tiles evenly, same overlap or more
    return [(0, top, width, min(height, top + step + TILE_OVERLAP)) for top in range(0, count * step, step)]


def whole_in_tile(boxes: Sequence[TextBox], tile: Tile, height: int, width: int) -> list[TextBox]:
    """The boxes (in page coordinates) no inner edge of the tile cuts; edges on the page's border cut nothing."""
    left, top, right, bottom = tile
    kept = []
    for box in boxes:
        cut = ((top > 0 and box.top <= top + EDGE_MARGIN) or (bottom < height and box.bottom >= bottom - EDGE_MARGIN)
               or (left > 0 and box.left <= left + EDGE_MARGIN) or (right < width and box.right >= right - EDGE_MARGIN))
        if not cut:
            kept.append(box)
    return kept


def merge_boxes(first: Sequence[TextBox], second: Sequence[TextBox]) -> list[TextBox]:
    """`first`, then the boxes of `second` that do not cover the same text as one already kept."""
    kept = list(first)
    for box in second:
        if not any(_shared_area(box, other) >= SAME_TEXT_OVERLAP * min(_area(box), _area(other)) for other in kept):
            kept.append(box)
    return kept


def _area(box: TextBox) -> float:
    return max(box.width, 0.0) * max(box.height, 0.0)


def _shared_area(one: TextBox, other: TextBox) -> float:
    width = min(one.right, other.right) - max(one.left, other.left)
    height = min(one.bottom, other.bottom) - max(one.top, other.top)
    return max(width, 0.0) * max(height, 0.0)


def has_small_text(boxes: Sequence[TextBox]) -> bool:
    """Whether most of the boxes are lower than SMALL_TEXT_HEIGHT pixels."""
    return bool(boxes) and statistics.median(box.height for box in boxes) < SMALL_TEXT_HEIGHT


def gray(image: np.ndarray) -> np.ndarray:
    """Luminance of a BGR image, as float32."""
    blue, green, red = (image[:, :, channel].astype(np.float32) for channel in range(3))
    return 0.114 * blue + 0.587 * green + 0.299 * red


def is_line_crop(luminance: np.ndarray) -> bool:
    """Whether the image is one line of text cropped tightly: a single band of ink rows filling its height.

    Ink is what differs from the background (the median of the border pixels) by more than a third of the
    image's contrast, so light-on-dark and low-contrast crops count too.
    """
    height, width = luminance.shape
    if height > LINE_CROP_MAX_HEIGHT or width < height / 2 or height < 8:
        return False
    border = np.concatenate([luminance[0], luminance[-1], luminance[:, 0], luminance[:, -1]])
    background = float(np.median(border))
    contrast = float(np.abs(luminance - background).max())
    if contrast < 24:
        return False  # blank
    ink = np.abs(luminance - background) > contrast / 3
    bands = _runs(ink.sum(axis=1) > max(1, width // 500))
    if not bands:
        return False
    # Lines of text are parted by rows without ink, however tightly set; a band much lower than the tallest
    # one is a line's detached dots or accents, or noise.
    top, bottom = max(bands, key=lambda band: band[1] - band[0])
    tallest = bottom - top
    if sum(end - start >= 0.3 * tallest for start, end in bands) != 1 or tallest < LINE_CROP_FILL * height:
        return False
    # Strokes are thin: ink solid over the band's whole height for longer than half its height is a panel.
    solid = _runs(ink[top:bottom].mean(axis=0) > 0.9)
    return all(end - start <= tallest / 2 for start, end in solid)


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of the runs of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def stretched(image: np.ndarray) -> np.ndarray:
    """The image in grey with its luminance stretched over the full range (2nd to 98th percentile): faded print
    and light-grey text get the contrast the recogniser was trained on."""
    luminance = gray(image)
    low, high = np.percentile(luminance, (2, 98))
    scaled = np.clip((luminance - low) * (255.0 / max(float(high - low), 1.0)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(scaled[:, :, None], 3, axis=2))


def has_mixed_polarity(luminance: np.ndarray) -> bool:
    """Whether the image has both large dark and large light areas (dark panels on a light screen, or the
    reverse), where one polarity of text is easy to miss."""
    small = luminance[:: max(1, luminance.shape[0] // 256), :: max(1, luminance.shape[1] // 256)]
    dark, light = float((small < 90).mean()), float((small > 170).mean())
    return min(dark, light) >= 0.15
