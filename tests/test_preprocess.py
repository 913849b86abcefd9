"""Our Qwen2-VL resize rule against transformers' own, on many sizes and budgets."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import noise_image

from edgevl.errors import ImageError
from edgevl.families.qwen2vl import qwen2vl_grid_size, resize_for_qwen2vl

SIZES = [(1, 1), (13, 9), (40, 30), (56, 56), (100, 140), (333, 77), (1920, 1080), (1080, 2400), (7000, 120)]


def reference():
    """transformers' own Qwen2-VL image processing (the test is skipped where transformers is not installed)."""
    return pytest.importorskip("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl")


@pytest.mark.parametrize("width, height", SIZES)
@pytest.mark.parametrize("min_tokens, max_tokens", [(4, 64), (4, 1536), (256, 2048)])
def test_grid_size_matches_transformers(width, height, min_tokens, max_tokens):
    expected_h, expected_w = reference().smart_resize(height, width, 28, min_tokens * 784, max_tokens * 784)
    assert qwen2vl_grid_size(width, height, min_tokens, max_tokens) == (expected_w, expected_h)


@pytest.mark.parametrize("width, height", [(150, 101), (40, 30), (700, 160)])
def test_resized_pixels_match_the_reference_processor(width, height):
    """Same pixels after our resize as inside Qwen2VLImageProcessorPil (compared as its normalised patches)."""
    image = noise_image(width, height, seed=width)
    processor = reference().Qwen2VLImageProcessorPil(min_pixels=4 * 784, max_pixels=64 * 784)
    theirs = processor(images=[image], return_tensors="np")["pixel_values"]
    ours = processor(images=[resize_for_qwen2vl(image, 4, 64)], return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(ours, theirs)


def test_extreme_aspect_ratio_is_refused():
    with pytest.raises(ImageError, match="more than 200:1"):
        qwen2vl_grid_size(10_000, 20, 4, 1536)
