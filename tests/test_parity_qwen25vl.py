"""Qwen2.5-VL's converted GGUF against transformers fp32: Qwen2-VL's parity tests (same image cases, same
bounds), pointed at the tiny Qwen2.5-VL checkpoint, whose vision encoder has windowed and full-attention blocks.
The image cases span one window (up to 4x4 image tokens) to several with partial windows at the right and
bottom edges (the over-budget tall and wide screenshots), which is where window handling can differ."""

from __future__ import annotations

import pytest
from test_parity_qwen2vl import (  # noqa: F401 - pytest collects the imported tests and the engine fixture
    f32_engine, test_f32_greedy_tokens_match_reference, test_f32_logits_match_reference,
    test_image_changes_the_answer, test_quantized_logits_stay_close,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def family_gguf(qwen25vl_gguf):
    return qwen25vl_gguf


@pytest.fixture(scope="module")
def family_reference(qwen25vl_reference):
    return qwen25vl_reference
