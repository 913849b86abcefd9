"""The converted GGUF, run by our llama.cpp engine, against transformers fp32 on the same checkpoint:
next-token logits, greedy tokens, and the cost of each quant level - with images in the prompt.

Image budgets are set low (64 tokens) so that small test images land both below and above the budget."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import noise_image
from parity import IMAGE_CASES, MAX_TOKENS, MIN_TOKENS, PROMPT, cosine, images_for, ocr_request

from edgevl.engines.llamacpp import LlamaCppEngine


pytestmark = pytest.mark.slow  # every test converts the tiny checkpoint and runs the reference


# the tests below name the family's fixtures through these two, so that another Qwen-VL family's module can
# import the tests and point them at its own checkpoint (tests/test_parity_qwen25vl.py)
@pytest.fixture(scope="module")
def family_gguf(qwen2vl_gguf):
    return qwen2vl_gguf


@pytest.fixture(scope="module")
def family_reference(qwen2vl_reference):
    return qwen2vl_reference


@pytest.fixture(scope="module")
def f32_engine(family_gguf):
    with LlamaCppEngine(family_gguf("f32"), image_max_tokens=MAX_TOKENS) as engine:
        yield engine


@pytest.mark.parametrize("case", IMAGE_CASES)
def test_f32_logits_match_reference(case, f32_engine, family_reference):
    images = images_for(case)
    ours = f32_engine.first_token_logits(ocr_request(images))
    reference = family_reference.first_token_logits(list(images), PROMPT, MIN_TOKENS, MAX_TOKENS)
    print(f"{case}: max|d| {np.abs(ours - reference).max():.2e}, {f32_engine.last_stats.prompt_tokens} prompt tokens")
    assert np.abs(ours - reference).max() <= 2e-3
    assert list(np.argsort(-ours)[:5]) == list(np.argsort(-reference)[:5])


@pytest.mark.parametrize("case", ["needs-resize", "tall-screenshot-over-budget", "two-images"])
def test_f32_greedy_tokens_match_reference(case, f32_engine, family_reference):
    images = images_for(case)
    reference = family_reference.greedy_tokens(list(images), PROMPT, MIN_TOKENS, MAX_TOKENS, 24)
    ours = list(f32_engine.generate_token_ids(ocr_request(images)))
    assert ours == reference[:len(ours)] and len(ours) == 24


def test_image_changes_the_answer(f32_engine):
    """Guards against a silently dropped image ("I can't see the image"): different images, different logits."""
    first = f32_engine.first_token_logits(ocr_request((noise_image(112, 112, seed=1),)))
    second = f32_engine.first_token_logits(ocr_request((noise_image(112, 112, seed=2),)))
    assert np.abs(first - second).max() > 1e-3


@pytest.mark.parametrize("quant, vision_quant, min_cosine", [
    ("f16", "f16", 0.999), ("q8_0", "f16", 0.999), ("q4_k_m", "f16", 0.98), ("q4_k_m", "q8_0", 0.98),
])
def test_quantized_logits_stay_close(quant, vision_quant, min_cosine, family_gguf, family_reference):
    images = images_for("tall-screenshot-over-budget")
    reference = family_reference.first_token_logits(list(images), PROMPT, MIN_TOKENS, MAX_TOKENS)
    with LlamaCppEngine(family_gguf(quant, vision_quant), image_max_tokens=MAX_TOKENS) as engine:
        ours = engine.first_token_logits(ocr_request(images))
    similarity = cosine(ours, reference)
    print(f"{quant} text + {vision_quant} vision: cosine {similarity:.5f}, max|d| {np.abs(ours - reference).max():.2e}")
    assert similarity >= min_cosine
