"""Image preprocessing that must match the reference model exactly, done before any backend sees the image.

Qwen2-VL sees an image as a grid of 28x28 pixel cells (14 px patches merged 2x2); each cell is one image token.
The reference resizes with "smart resize" (multiples of 28, pixel count within [min, max], aspect kept) using
PIL bicubic. llama.cpp's mtmd has its own resize and does not read the checkpoint's limits, so edgevl resizes
here with the reference rule and hands mtmd an image it keeps as is - both sides then see the same grid.
"""

from __future__ import annotations

import math

from PIL import Image

from edgevl.errors import ImageError

QWEN2VL_CELL = 28  # patch 14 x merge 2
MAX_ASPECT_RATIO = 200  # the reference refuses more extreme images


def qwen2vl_grid_size(width: int, height: int, min_tokens: int, max_tokens: int) -> tuple[int, int]:
    """(width, height) after the reference's smart resize for a budget of [min_tokens, max_tokens] image tokens."""
    if max(width, height) / max(1, min(width, height)) > MAX_ASPECT_RATIO:
        raise ImageError(f"a {width}x{height} image is more than {MAX_ASPECT_RATIO}:1; crop it into pieces first")
    cell = QWEN2VL_CELL
    min_pixels, max_pixels = min_tokens * cell * cell, max_tokens * cell * cell
    new_h, new_w = round(height / cell) * cell, round(width / cell) * cell
    if new_h * new_w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        new_h = max(cell, math.floor(height / beta / cell) * cell)
        new_w = max(cell, math.floor(width / beta / cell) * cell)
    elif new_h * new_w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        new_h = math.ceil(height * beta / cell) * cell
        new_w = math.ceil(width * beta / cell) * cell
    return new_w, new_h


def resize_for_qwen2vl(image: Image.Image, min_tokens: int, max_tokens: int) -> Image.Image:
    size = qwen2vl_grid_size(image.width, image.height, min_tokens, max_tokens)
    return image if size == image.size else image.resize(size, Image.Resampling.BICUBIC)
