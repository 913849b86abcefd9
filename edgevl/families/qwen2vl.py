"""Qwen2-VL: image preprocessing, image placeholders and M-RoPE positions, model-card defaults and engines.

Qwen2-VL sees an image as a grid of 28x28 pixel cells (14 px patches merged 2x2); each cell is one image token.
The reference resizes with "smart resize" (multiples of 28, pixel count within [min, max], aspect kept) using
PIL bicubic. llama.cpp's mtmd has its own resize and does not read the checkpoint's limits, so edgevl resizes
here with the reference rule and hands mtmd an image it keeps as is - both sides then see the same grid.
The tasks' default prompt wording was written for Qwen2-VL, so it has no wording of its own.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any
from collections.abc import Sequence

from PIL import Image

from edgevl.errors import ImageError
from edgevl.families.base import EncodedImages, Family, OnnxImages

# numpy is imported inside the functions that compute with it: the registry of families (model cards, the desktop app's
# start-up) must not pay numpy's import, ~0.15 s
if TYPE_CHECKING:
    import numpy as np

    from edgevl.families.base import RunVision

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


def qwen2vl_patches(
    image: Image.Image, mean: Sequence[float], std: Sequence[float], patch: int = 14, temporal: int = 2, merge: int = 2
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """An already resized image as Qwen2-VL's flattened patches [h*w, 3*temporal*patch*patch] and its (t, h, w)
    grid - the layout of Qwen2VLImageProcessor: a still image is repeated over the temporal patch, patches are
    ordered block by block of merge x merge."""
    import numpy as np

    # rescale in float64 then round to float32, normalise in float32: the reference's exact arithmetic
    pixels = (np.asarray(image.convert("RGB"), dtype=np.float64) * (1 / 255)).astype(np.float32)
    normalised = (pixels - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    frames = np.repeat(normalised.transpose(2, 0, 1)[None], temporal, axis=0)  # [temporal, 3, H, W]
    grid_h, grid_w = image.height // patch, image.width // patch
    blocks = frames.reshape(temporal, 3, grid_h // merge, merge, patch, grid_w // merge, merge, patch)
    flat = blocks.transpose(2, 5, 3, 6, 1, 0, 4, 7).reshape(grid_h * grid_w, 3 * temporal * patch * patch)
    return np.ascontiguousarray(flat), (1, grid_h, grid_w)


def qwen2vl_rope_positions(
    input_ids: Sequence[int], image_token_id: int, grids: Sequence[tuple[int, ...]], merge: int = 2
) -> np.ndarray:
    """M-RoPE position ids [3, seq] (time, row, column): text counts up in all three; an image's tokens sit on
    its grid, and the text after it continues from the largest position the image used, plus one."""
    import numpy as np
    ids = np.asarray(input_ids)
    positions = np.zeros((3, len(ids)), dtype=np.int64)
    grids_left = iter(grids)
    index, next_position = 0, 0
    while index < len(ids):
        if ids[index] != image_token_id:
            positions[:, index] = next_position
            index, next_position = index + 1, next_position + 1
            continue
        _, grid_h, grid_w = next(grids_left)
        rows, cols = grid_h // merge, grid_w // merge
        count = rows * cols
        positions[0, index:index + count] = next_position
        positions[1, index:index + count] = next_position + np.repeat(np.arange(rows), cols)
        positions[2, index:index + count] = next_position + np.tile(np.arange(cols), rows)
        index, next_position = index + count, next_position + max(rows, cols)
    return positions


#: Qwen2-VL-2B's vision tower (32 layers, width 1280, MLP 5120; 3x2x14x14 patches; a 2x2 merger into the 1536-wide
#: text model) and the arithmetic speed it ran at on 2 AVX2 cores: 7.73 TFLOP in 63 s for 1000 image tokens (issue
#: 19; benchmarks/README.md, "bench_cpu_peak.py")
VISION_LAYERS, VISION_WIDTH, VISION_PATCH_VALUES, TEXT_WIDTH = 32, 1280, 3 * 2 * 14 * 14, 1536
CPU_2_CORES_GFLOPS = 122.8


def vision_flops(image_tokens: int, layers: int = VISION_LAYERS) -> dict[str, float]:
    """Qwen2-VL-2B's vision encoder's FLOP (a multiply-add is 2) for one image of `image_tokens` tokens (4 patches
    each), by part. Per layer and patch the linear layers (QKV 3 w^2, output w^2, MLP 2 x 4 w^2 multiply-adds) cost
    24 w^2; attention (Q K^T and the weighted sum of V, all heads together w wide) 4 w per pair of patches - the
    square term that makes large budgets slow. Norms, GELU, softmax and RoPE are left out (under 1 %)."""
    patches, width = 4 * image_tokens, VISION_WIDTH
    return {
        "patch embedding": 2.0 * patches * VISION_PATCH_VALUES * width,
        "layers: matrix products": layers * 24.0 * width ** 2 * patches,
        "layers: attention": layers * 4.0 * width * patches ** 2,
        "merger": image_tokens * 2.0 * (4 * width) * (4 * width + TEXT_WIDTH),
    }


def vision_encode_seconds(image_tokens: int, gflops: float = CPU_2_CORES_GFLOPS) -> float:
    """Expected Qwen2-VL-2B vision-encoder time for an image of `image_tokens` tokens at `gflops` (default: the
    measured 2-core CPU)."""
    return sum(vision_flops(image_tokens).values()) / (gflops * 1e9)


def image_placeholder(image_tokens: int) -> str:
    """One image's text in the prompt: its image-pad tokens between the vision start and end tokens."""
    return "<|vision_start|>" + "<|image_pad|>" * image_tokens + "<|vision_end|>"


class Qwen2VLOnnxImages(OnnxImages):
    """The exported vision graph takes one image's patches and grid; its features replace the image-pad tokens,
    which sit on M-RoPE's 3-D grid."""

    position_axes = 3

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def encode(self, images: Sequence[Image.Image], budget: tuple[int, int], run_vision: RunVision) -> EncodedImages:
        import numpy as np
        config = self.config
        merge_area = config["merge_size"] ** 2
        features, grids = [], []
        for image in images:
            resized = resize_for_qwen2vl(image, *budget)
            pixels, grid = qwen2vl_patches(resized, config["image_mean"], config["image_std"], config["patch_size"],
                                           config["temporal_patch_size"], config["merge_size"])
            features.append(run_vision({"pixel_values": pixels, "image_grid_thw": np.asarray([grid], dtype=np.int64)}))
            grids.append(grid)
        none = np.zeros((0, config["hidden_size"]), dtype=np.float32)
        markers = [image_placeholder(h * w // merge_area) for _, h, w in grids]
        return EncodedImages(np.concatenate(features or [none]), markers, grids)

    def position_ids(self, input_ids: Sequence[int], encoded: EncodedImages) -> np.ndarray:
        return qwen2vl_rope_positions(input_ids, self.config["image_token_id"], encoded.layouts,
                                      self.config["merge_size"])


class Qwen2VL(Family):
    """GGUF: llama.cpp with libmtmd, fed images already resized here. ONNX: the three exported graphs, fed by
    Qwen2VLOnnxImages."""

    name = "qwen2vl"
    settings = {
        "chat_template": "chatml",
        "system_prompt": "You are a helpful assistant.",
        # Image budget in image tokens (one token = a 28x28 pixel patch after the 2x2 merge). The Qwen team
        # recommends about 1024-2048 tokens for OCR; more costs O(n^2) encoder time and can make small models loop.
        "image_min_tokens": 4,
        "image_max_tokens": {"default": 1280, "ocr": 1536, "table": 2048, "caption": 768},
        "patch_size": 14,
        "merge_size": 2,
    }
    engines = {"gguf": "edgevl.engines.llamacpp:LlamaCppEngine", "onnx": "edgevl.engines.onnx:OnnxEngine"}
    imported_gguf = (("qwen2vl", "qwen2vl_merger"),)  # as llama.cpp's convert_hf_to_gguf.py writes them

    def resize(self, image: Image.Image, budget: tuple[int, int]) -> Image.Image:
        return resize_for_qwen2vl(image, *budget)

    def onnx_images(self, config: dict[str, Any]) -> OnnxImages:
        return Qwen2VLOnnxImages(config)
