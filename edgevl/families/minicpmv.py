"""MiniCPM-V 2.5 / 2.6 (and MiniCPM-o 2.6's vision and language parts): slicing, image placeholders, the vision
tower's inputs, vision settings, chat defaults, prompt wording and engines.

The image is seen as an overview (about 448x448 px, aspect kept) plus up to 9 slices of a grid chosen for the
aspect ratio, each slice about 448x448 px too; every piece becomes `query_num` tokens. The rules below follow the
released MiniCPMVImageProcessor (the same arithmetic, including Python's rounding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from PIL import Image

from edgevl.families.base import EncodedImages, Family, OnnxImages

# numpy is imported inside the functions that compute with it: the registry of families (model cards, the desktop app's
# start-up) must not pay numpy's import, ~0.15 s
if TYPE_CHECKING:
    import numpy as np

    from edgevl.families.base import RunVision

#: resampler queries (image tokens per piece) of each release
QUERY_NUM = {"2.5": 96, "2.6": 64}
#: the released processor's slice size
SLICE_SIZE = 448
RESAMPLER_HEAD_WIDTH = 128  # the release gives the resampler one head per 128 channels

MINICPMV_UNK = "<unk>"


def get_sliced_grid(
    size: tuple[int, int], max_slice_nums: int = 9, scale_resolution: int = 448
) -> tuple[int, int] | None:
    """(columns, rows) of the slice grid for an image of size (width, height), or None when the image is small
    enough to be seen whole (at most one 448x448 area). Candidates are all factorisations of n-1, n and n+1
    slices (n = the area in 448x448 units, capped at max_slice_nums; a 1x1 grid is never a candidate); the one
    whose log aspect ratio is closest to the image's wins, the first one on a tie."""
    width, height = size
    multiple = min(math.ceil(width * height / (scale_resolution * scale_resolution)), max_slice_nums)
    if multiple <= 1:
        return None
    counts = [n for n in (multiple - 1, multiple, multiple + 1) if n != 1 and n <= max_slice_nums]
    candidates = [(cols, n // cols) for n in counts for cols in range(1, n + 1) if n % cols == 0]
    log_ratio = math.log(width / height)
    return min(candidates, key=lambda grid: abs(log_ratio - math.log(grid[0] / grid[1])))


def _ensure_divide(length: float, patch_size: int) -> int:
    """The nearest multiple of patch_size (at least one patch), with Python's round like the release."""
    return max(round(length / patch_size) * patch_size, patch_size)


def find_best_resize(
    size: tuple[float, float], scale_resolution: int, patch_size: int, allow_upscale: bool = False
) -> tuple[int, int]:
    """(width, height) in whole patches: scaled to about scale_resolution² pixels with the aspect kept when the
    image is larger than that (or always, when allow_upscale), otherwise only rounded to the patch size."""
    width, height = size
    if width * height > scale_resolution * scale_resolution or allow_upscale:
        ratio = width / height
        height = int(scale_resolution / math.sqrt(ratio))
        width = int(height * ratio)
    return _ensure_divide(width, patch_size), _ensure_divide(height, patch_size)


def get_refine_size(
    size: tuple[int, int], grid: tuple[int, int], scale_resolution: int, patch_size: int,
    allow_upscale: bool = False,
) -> tuple[int, int]:
    """(width, height) the whole image is resized to before it is cut into the grid: each cell gets the best
    resize of the image's cell size, so every slice is about scale_resolution² pixels in whole patches."""
    width, height = size
    cols, rows = grid
    cell_width = _ensure_divide(width, cols) / cols
    cell_height = _ensure_divide(height, rows) / rows
    best_width, best_height = find_best_resize((cell_width, cell_height), scale_resolution, patch_size, allow_upscale)
    return best_width * cols, best_height * rows


def minicpmv_slices(
    image: Image.Image, max_slices: int = 9, scale_resolution: int = 448, patch_size: int = 14
) -> tuple[Image.Image, list[Image.Image], tuple[int, int] | None]:
    """The overview image, the slices in row-major order and the grid (columns, rows), or ([], None) for an
    image seen whole. An image seen whole may be upscaled; an overview next to slices is only ever shrunk."""
    image = image.convert("RGB")
    grid = get_sliced_grid(image.size, max_slices, scale_resolution)
    overview_size = find_best_resize(image.size, scale_resolution, patch_size, allow_upscale=grid is None)
    overview = image.resize(overview_size, Image.Resampling.BICUBIC)
    if grid is None:
        return overview, [], None
    refined = image.resize(get_refine_size(image.size, grid, scale_resolution, patch_size, allow_upscale=True),
                           Image.Resampling.BICUBIC)
    cell_width, cell_height = refined.width // grid[0], refined.height // grid[1]
    slices = [
        refined.crop((col * cell_width, row * cell_height, (col + 1) * cell_width, (row + 1) * cell_height))
        for row in range(grid[1]) for col in range(grid[0])
    ]
    return overview, slices, grid


def _grid_rows(grid: tuple[int, int] | None, piece: str) -> str:
    """One piece per slice, the pieces of a grid row side by side, rows joined by a newline."""
    if grid is None:
        return ""
    cols, rows = grid
    return "\n".join(piece * cols for _ in range(rows))


def minicpmv26_placeholder(
    grid: tuple[int, int] | None, query_num: int = 64, image_index: int = 0, use_image_id: bool = True
) -> str:
    """MiniCPM-V 2.6's text for one image: `<image_id>i</image_id>` (when the model uses image ids), the overview
    as `<image>` + query_num `<unk>` + `</image>`, then each slice as `<slice>` + query_num `<unk>` + `</slice>`."""
    image_id = f"<image_id>{image_index}</image_id>" if use_image_id else ""
    overview = "<image>" + MINICPMV_UNK * query_num + "</image>"
    return image_id + overview + _grid_rows(grid, "<slice>" + MINICPMV_UNK * query_num + "</slice>")


def minicpmv25_placeholder(grid: tuple[int, int] | None, query_num: int = 96) -> str:
    """MiniCPM-Llama3-V 2.5's text for one image: the overview as `<image>` + query_num `<unk>` + `</image>`, then
    one `<slice>`...`</slice>` block holding every slice as its own `<image>`...`</image>`."""
    piece = "<image>" + MINICPMV_UNK * query_num + "</image>"
    if grid is None:
        return piece
    return piece + "<slice>" + _grid_rows(grid, piece) + "</slice>"


def minicpmv_placeholder(version: str, grid: tuple[int, int] | None, query_num: int, image_index: int,
                         use_image_id: bool = True) -> str:
    """The placeholder text of one image for MiniCPM-V `version` ("2.5" or "2.6")."""
    if version == "2.5":
        return minicpmv25_placeholder(grid, query_num)
    return minicpmv26_placeholder(grid, query_num, image_index, use_image_id)


def minicpmv_feature_markers(version: str) -> tuple[tuple[str, str], ...]:
    """The marker pairs whose `<unk>` runs take a slice's features: `<image>` for both versions, and `<slice>`
    for 2.6 (2.5's `<slice>` wraps whole `<image>` pieces)."""
    return (("<image>", "</image>"),) + ((("<slice>", "</slice>"),) if version != "2.5" else ())


def feature_spans(token_ids: Sequence[int], starts: set[int], ends: set[int], length: int) -> list[tuple[int, int]]:
    """(start, end) of the token runs between start and end markers, in order; each must hold `length` tokens."""
    spans = list(zip([i + 1 for i, token in enumerate(token_ids) if token in starts],
                     [i for i, token in enumerate(token_ids) if token in ends]))
    wrong = [span for span in spans if span[1] - span[0] != length]
    if wrong:
        raise ValueError(f"image markers around {wrong} do not hold {length} tokens each")
    return spans


def minicpmv_patches(piece: Image.Image, mean: Sequence[float], std: Sequence[float],
                     patch: int = 14) -> tuple[np.ndarray, tuple[int, int]]:
    """One slice (whole patches) -> its normalised patches [rows*cols, 3*patch*patch] in row-major order, each
    flattened channel-first like the patch-embedding kernel, and the patch grid (rows, cols)."""
    import numpy as np
    pixels = (np.asarray(piece.convert("RGB"), dtype=np.float32) / 255 - np.asarray(mean, dtype=np.float32)) \
        / np.asarray(std, dtype=np.float32)
    rows, cols = piece.height // patch, piece.width // patch
    blocks = pixels[:rows * patch, :cols * patch].reshape(rows, patch, cols, patch, 3).transpose(0, 2, 4, 1, 3)
    return np.ascontiguousarray(blocks.reshape(rows * cols, 3 * patch * patch)), (rows, cols)


def siglip_position_ids(rows: int, cols: int, side: int = 70) -> np.ndarray:
    """NaViT SigLIP's position ids for a rows x cols patch grid: each patch's fractional coordinates bucketed
    onto the side x side table, in float32 like the reference (transformers' Idefics2 embeddings)."""
    import numpy as np
    boundaries = (np.arange(1, side) / side).astype(np.float32)

    def buckets(count: int) -> np.ndarray:
        coords = np.arange(count, dtype=np.float32) * (np.float32(1.0) / np.float32(count))
        return np.searchsorted(boundaries, np.minimum(coords, np.float32(1 - 1e-6)), side="right")

    return (buckets(rows)[:, None] * side + buckets(cols)[None, :]).reshape(-1).astype(np.int64)


def resampler_key_positions(dim: int, height: int, width: int) -> np.ndarray:
    """The resampler's key position embedding for a height x width patch grid, [height*width, dim], row-major:
    [sin(w·ω), cos(w·ω), sin(h·ω), cos(h·ω)] with ω_i = 1 / 10000^(i / (dim/4)) - the column coordinate first,
    as in the release (float32 arithmetic, like its numpy code)."""
    import numpy as np
    quarter = dim // 4
    omega = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float32) / np.float32(quarter))
    cols, rows = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    angles_w = cols.reshape(-1, 1) * omega
    angles_h = rows.reshape(-1, 1) * omega
    return np.concatenate([np.sin(angles_w), np.cos(angles_w), np.sin(angles_h), np.cos(angles_h)], axis=1)


@dataclass(frozen=True)
class VisionSettings:
    """What an engine needs to know of a converted model's vision tower (read from its files)."""

    release: str  # "2.5" or "2.6"
    query_num: int  # resampler queries = image tokens per piece
    width: int  # the language model's width
    layers: int
    heads: int
    eps: float
    patch: int
    slice_size: int
    mean: list[float]
    std: list[float]

    @property
    def resampler_heads(self) -> int:
        return self.width // RESAMPLER_HEAD_WIDTH


def vision_inputs(piece: Image.Image, settings: VisionSettings) -> dict[str, np.ndarray]:
    """One slice (or overview) in whole patches -> the vision graph's inputs: its patches, SigLIP position ids and
    the resampler's key positions. 2.5 hands the tower each slice as one row of patches, 2.6 as its grid (see
    edgevl.testing.minicpmv)."""
    patches, (rows, cols) = minicpmv_patches(piece, settings.mean, settings.std, settings.patch)
    one_row = settings.release == "2.5"
    positions = siglip_position_ids(1, rows * cols) if one_row else siglip_position_ids(rows, cols)
    return {"patches": patches, "position_ids": positions,
            "key_positions": resampler_key_positions(settings.width, rows, cols)}


def slice_limit(max_slices: int, max_tokens: int | None, query_num: int) -> int:
    """The slice limit, lowered to fit an image-token budget: every piece (overview or slice) costs query_num
    tokens, and below two slices an image is seen whole."""
    if max_tokens:
        max_slices = min(max_slices, max_tokens // query_num - 1)
    return max(1, max_slices)


def slice_images(images: Sequence[Image.Image], settings: VisionSettings,
                 max_slices: int) -> tuple[list[Image.Image], list[str]]:
    """The pieces to encode in prompt order (each image's overview, then its slices row by row) and each image's
    placeholder text, which the release follows with a newline."""
    sliced = [minicpmv_slices(image, max_slices, settings.slice_size, settings.patch) for image in images]
    markers = [minicpmv_placeholder(settings.release, grid, settings.query_num, index) + "\n"
               for index, (_, _, grid) in enumerate(sliced)]
    return [piece for overview, slices, _ in sliced for piece in (overview, *slices)], markers


class MiniCPMVOnnxImages(OnnxImages):
    """The exported vision graph encodes one piece per call; the pieces' features replace the `<unk>` runs of the
    placeholders, in order. Plain RoPE: positions count up through image and text alike."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.settings = VisionSettings(**config["vision"])

    def encode(self, images: Sequence[Image.Image], budget: tuple[int, int], run_vision: RunVision) -> EncodedImages:
        import numpy as np
        settings = self.settings
        limit = slice_limit(MiniCPMV.settings["max_slices"], budget[1], settings.query_num)
        pieces, markers = slice_images(images, settings, limit)
        features = [run_vision(vision_inputs(piece, settings)) for piece in pieces]
        none = np.zeros((0, settings.width), dtype=np.float32)
        return EncodedImages(np.concatenate(features or [none]), markers, layouts=[])  # plain RoPE needs none


def chat_defaults(release: str) -> dict[str, str]:
    """How a release is prompted (chat template, default system prompt), for checkpoints without a model card:
    2.6 and MiniCPM-o 2.6 write ChatML with Qwen2's default system prompt, 2.5 Llama-3's template with no system
    turn."""
    if release == "2.5":
        return {"chat_template": "llama3", "system_prompt": ""}
    return {"chat_template": "chatml", "system_prompt": "You are a helpful assistant."}


class MiniCPMV(Family):
    """GGUF: the language model on llama.cpp, the slices encoded on ONNX Runtime from the mmproj's weights
    (edgevl/engines/llamacpp_minicpmv.py). ONNX: the three exported graphs (converters/minicpmv_onnx.py), fed by
    MiniCPMVOnnxImages."""

    name = "minicpmv"
    settings = {
        **chat_defaults("2.6"),  # the 2.5 card says otherwise
        # Each image is an overview plus up to max_slices slices of about slice_size² pixels, 64 (2.6) or 96 (2.5)
        # image tokens each: at most 640 / 960 image tokens per image, whatever the task.
        "max_slices": 9,
        "slice_size": SLICE_SIZE,
        "patch_size": 14,
        # as an image-token budget: 2.5's 10 pieces of 96 (2.6's 64-token pieces reach max_slices first); a
        # smaller budget (--image-tokens) lowers the slice limit, see slice_limit
        "image_min_tokens": 0,
        "image_max_tokens": 10 * QUERY_NUM["2.5"],
    }
    engines = {"gguf": "edgevl.engines.llamacpp_minicpmv:MiniCPMVLlamaCppEngine",
               "onnx": "edgevl.engines.onnx:OnnxEngine"}
    prompts = {
        # MiniCPM-V likes to describe the image first; tell it plainly not to.
        "ocr": (
            "Transcribe all the text in this image exactly as written, top to bottom and left to right. Keep the "
            "original line breaks. Output only the transcribed text: no description, no comments, no formatting."
        ),
        # MiniCPM-V tends to summarise tables; insist on a literal copy of every row.
        "table": (
            "Convert the table in this image into a Markdown table, copying every row and every cell exactly as "
            "written (do not summarise or skip rows). The first row is the header, followed by a |---| separator "
            "row. Every row must have the same number of cells; leave blank cells empty. Output only the table."
        ),
        "table_strict": (
            "Convert the table in this image into a JSON list: one object per row (do not summarise or skip rows), "
            "each with the column headers as keys, written exactly as in the image, and the cell text as values; "
            "\"\" for blank cells. Answer with the JSON only."
        ),
        # Extraction (edgevl.tasks.extract fills in {document}, {fields}, {template}): MiniCPM-V answers
        # conversationally unless told plainly; say what to fill in, then the format.
        "extract": (
            "Read the {document} in this image and fill in these fields:\n{fields}\n"
            "Answer with one JSON object in exactly this format, and nothing else:\n{template}\n"
            "Copy text exactly as written; write null for a field you cannot find in the image."
        ),
    }

    def onnx_images(self, config: dict[str, Any]) -> OnnxImages:
        return MiniCPMVOnnxImages(config)
