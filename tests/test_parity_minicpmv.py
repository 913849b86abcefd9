"""MiniCPM-V 2.6 and 2.5 converted to GGUF and run by edgevl's llama.cpp engine, against the transformers-parts
reference (edgevl.testing.minicpmv) on the same tiny checkpoint: prompt tokens, next-token logits, greedy
tokens and the cost of each quant level - for an image seen whole, a wide screenshot cut into a row of slices
and a tall one cut into a column."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import noise_image
from parity import cosine

from edgevl.engines.llamacpp_minicpmv import MiniCPMVLlamaCppEngine
from edgevl.request import Request, Sampling

VERSIONS = ("2.6", "2.5")
PROMPT = "Read all the text in the image."
IMAGE_CASES = {
    "small-one-slice": (320, 240),  # under one 448x448 area: upscaled, seen whole
    "wide-screenshot": (1400, 420),  # 3 slices side by side: checks slice order
    "tall-screenshot": (300, 1500),  # 4 slices stacked
}
#: (text quant, vision quant, lowest cosine to the reference's next-token logits)
QUANTS = [("f16", "f16", 0.999), ("q8_0", "f16", 0.999), ("q4_k_m", "f16", 0.98), ("q4_k_m", "q8_0", 0.98)]


def image_for(case: str) -> object:
    width, height = IMAGE_CASES[case]
    return noise_image(width, height, seed=width)


def request_for(image, max_tokens: int = 24) -> Request:
    # no system turn for 2.5 (its release has none), the model's default for 2.6: both as the reference
    return Request("ocr", (image,), PROMPT, sampling=Sampling(max_tokens=max_tokens))


pytestmark = pytest.mark.slow  # every test converts the tiny checkpoint and runs the reference

@pytest.fixture(scope="module", params=VERSIONS)
def version(request):
    return request.param


@pytest.fixture(scope="module")
def f32_engine(version, minicpmv_gguf):
    with MiniCPMVLlamaCppEngine(minicpmv_gguf(version, "f32"), threads=2) as engine:
        yield engine


@pytest.mark.parametrize("case", IMAGE_CASES)
def test_f32_prompt_and_logits_match_reference(case, version, f32_engine, minicpmv_reference):
    reference, image = minicpmv_reference(version), image_for(case)
    expected_ids, pieces = reference.input_ids([image], PROMPT)
    ours = f32_engine.first_token_logits(request_for(image))
    expected = reference.first_token_logits([image], PROMPT)
    grid = reference.slices(image)[1]
    print(f"{version} {case}: grid {grid}, {len(pieces)} pieces, {len(expected_ids)} prompt tokens, "
          f"max|d| {np.abs(ours - expected).max():.2e} (logit std {expected.std():.2f})")
    assert f32_engine.last_stats.prompt_tokens == len(expected_ids)
    assert np.abs(ours - expected).max() <= 2e-3
    assert list(np.argsort(-ours)[:5]) == list(np.argsort(-expected)[:5])


@pytest.mark.parametrize("case", IMAGE_CASES)
def test_f32_greedy_tokens_match_reference(case, version, f32_engine, minicpmv_reference):
    image = image_for(case)
    expected = minicpmv_reference(version).greedy_tokens([image], PROMPT, 24)
    ours = list(f32_engine.generate_token_ids(request_for(image)))
    assert ours == expected


def test_prompt_tokens_are_the_reference_tokenizers(version, f32_engine, minicpmv_reference):
    """llama.cpp's tokenizer on the GGUF vocabulary gives the reference tokenizer's ids, markers included."""
    reference, image = minicpmv_reference(version), image_for("wide-screenshot")
    expected_ids, _ = reference.input_ids([image], PROMPT)
    placeholder = reference.placeholder(reference.slices(image)[1], 0) + "\n"
    assert f32_engine.tokenize(f32_engine.prompt(request_for(image), [placeholder])) == expected_ids


def test_the_image_and_its_slice_order_change_the_answer(version, f32_engine):
    """Guards against a dropped image and against slices fed in the wrong order: mirroring the wide image
    keeps every slice's content set but changes their order and the overview."""
    wide = image_for("wide-screenshot")
    logits = f32_engine.first_token_logits(request_for(wide))
    other = f32_engine.first_token_logits(request_for(noise_image(*wide.size, seed=99)))
    mirrored = f32_engine.first_token_logits(request_for(wide.transpose(0)))
    assert np.abs(logits - other).max() > 1e-2
    assert np.abs(logits - mirrored).max() > 1e-2


@pytest.mark.parametrize("budget_in_pieces, pieces", [(None, 5), (4, 4), (2, 1)])
def test_image_token_budget_caps_the_slices(budget_in_pieces, pieces, version, minicpmv_gguf):
    """--image-tokens: each piece costs 64 (2.6) or 96 (2.5) tokens; the tall image has 1 + 4 pieces at most,
    and under two slices' worth an image is seen whole."""
    budget = budget_in_pieces and budget_in_pieces * {"2.6": 64, "2.5": 96}[version]
    with MiniCPMVLlamaCppEngine(minicpmv_gguf(version, "f32"), threads=2, image_max_tokens=budget) as engine:
        encoded = []
        encode = engine.vision.encode
        engine.vision.encode = lambda piece: encoded.append(piece.size) or encode(piece)
        engine.first_token_logits(request_for(image_for("tall-screenshot")))
    assert len(encoded) == pieces


@pytest.mark.parametrize("quant, vision_quant, min_cosine", QUANTS)
def test_quantized_logits_stay_close(quant, vision_quant, min_cosine, version, minicpmv_gguf, minicpmv_reference):
    image = image_for("wide-screenshot")
    expected = minicpmv_reference(version).first_token_logits([image], PROMPT)
    with MiniCPMVLlamaCppEngine(minicpmv_gguf(version, quant, vision_quant), threads=2) as engine:
        ours = engine.first_token_logits(request_for(image))
    similarity = cosine(ours, expected)
    print(f"{version} {quant} text + {vision_quant} vision: cosine {similarity:.5f}, "
          f"max|d| {np.abs(ours - expected).max():.2e}")
    assert similarity >= min_cosine
