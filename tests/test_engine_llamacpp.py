"""The llama.cpp engine beyond parity: streaming, stop strings, memory over repeated calls, damaged models."""

from __future__ import annotations

import shutil

import pytest
from conftest import noise_image

from edgevl.engines.base import StopFilter
from edgevl.engines.llamacpp import LlamaCppEngine
from edgevl.errors import EdgevlError, ModelError
from edgevl.manifest import read_manifest
from edgevl.request import Request, Sampling
from edgevl.system import rss_bytes


def ocr_request(max_tokens: int = 16, **sampling) -> Request:
    return Request("ocr", (noise_image(120, 90),), "Read the text.",
                   sampling=Sampling(max_tokens=max_tokens, **sampling))


@pytest.mark.slow
def test_streams_pieces_and_honours_max_tokens(qwen2vl_gguf):
    with LlamaCppEngine(qwen2vl_gguf("q4_k_m", "f16"), threads=1) as engine:
        pieces = list(engine.stream(ocr_request(max_tokens=12)))
        assert len(pieces) > 1 and engine.last_stats.generated_tokens == 12
        assert engine.last_stats.image_encode_ms > 0 and engine.last_stats.prompt_tokens > 20
        sampled = "".join(engine.stream(ocr_request(max_tokens=12, temperature=0.8, seed=3)))
        assert isinstance(sampled, str)


def test_stop_filter_cuts_and_holds_back_partial_stops():
    stops = StopFilter(("END",))
    assert stops.feed("abc E") == "abc "
    assert stops.feed("N") == ""
    assert stops.feed("D and more") == "" and stops.stopped
    passthrough = StopFilter(("END",))
    assert passthrough.feed("EN") == "" and passthrough.flush() == "EN"


@pytest.mark.slow
def test_memory_does_not_grow_over_repeated_calls(qwen2vl_gguf):
    with LlamaCppEngine(qwen2vl_gguf("f16", "f16"), threads=1) as engine:
        request = ocr_request(max_tokens=8)
        for _ in range(3):
            "".join(engine.stream(request))
        after_3 = rss_bytes()
        for _ in range(27):
            "".join(engine.stream(request))
        after_30 = rss_bytes()
    assert after_30 <= after_3 * 1.05, f"RSS grew from {after_3 / 1e6:.1f} MB to {after_30 / 1e6:.1f} MB"


@pytest.mark.slow
def test_close_frees_the_model(qwen2vl_gguf):
    folder = qwen2vl_gguf("f16", "f16")
    LlamaCppEngine(folder, threads=1).close()  # warm up allocator pools once
    before = rss_bytes()
    for _ in range(5):
        engine = LlamaCppEngine(folder, threads=1)
        "".join(engine.stream(ocr_request(max_tokens=4)))
        engine.close()
        engine.close()  # twice is harmless
    assert rss_bytes() <= before * 1.10


@pytest.mark.slow
def test_truncated_model_file_is_reported(qwen2vl_gguf, tmp_path):
    folder = shutil.copytree(qwen2vl_gguf("f16", "f16"), tmp_path / "model")
    text = read_manifest(folder).path(folder, "text")
    text.write_bytes(text.read_bytes()[:1000])
    with pytest.raises(ModelError, match="truncated"):
        LlamaCppEngine(folder)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(ModelError, match="not an edgevl model folder"):
        LlamaCppEngine(tmp_path)


@pytest.mark.slow
def test_damaged_file_of_right_size_is_reported(qwen2vl_gguf, tmp_path):
    folder = shutil.copytree(qwen2vl_gguf("f16", "f16"), tmp_path / "model")
    mmproj = read_manifest(folder).path(folder, "mmproj")
    mmproj.write_bytes(b"\0" * mmproj.stat().st_size)
    with pytest.raises(ModelError, match="checksum mismatch"):  # before llama.cpp sees it
        LlamaCppEngine(folder)


@pytest.mark.slow
def test_prompt_longer_than_context_is_refused(qwen2vl_gguf):
    with LlamaCppEngine(qwen2vl_gguf("f16", "f16"), context_size=256, image_max_tokens=1000, threads=1) as engine:
        big = Request("ocr", (noise_image(900, 900),), "Read the text.")
        with pytest.raises(EdgevlError, match="context holds"):
            list(engine.stream(big))


@pytest.mark.slow
@pytest.mark.parametrize("vision_quant", ["f16", "q8_0"])
def test_onnx_vision_encoder_matches_libmtmds(qwen2vl_gguf, vision_quant):
    """The optional CPU vision encoder (ONNX Runtime, float32) and libmtmd's own give the same answer: the same
    first-token logits up to f16 rounding, the same greedy tokens, the same image tokens (several sizes)."""
    import numpy as np

    folder = qwen2vl_gguf("f16", vision_quant)
    requests = [Request("ocr", images, "Read the text.", sampling=Sampling(max_tokens=8))
                for images in [(noise_image(120, 90),), (noise_image(56, 300, seed=2), noise_image(200, 60, seed=3))]]
    with LlamaCppEngine(folder, threads=1) as mtmd_engine:
        expected = [(mtmd_engine.first_token_logits(r), list(mtmd_engine.generate_token_ids(r))) for r in requests]
    with LlamaCppEngine(folder, threads=1, onnx_vision=True) as engine:
        assert engine._vision is not None
        for request, (logits, tokens) in zip(requests, expected):
            ours = engine.first_token_logits(request)
            assert float(ours @ logits / np.linalg.norm(ours) / np.linalg.norm(logits)) >= 0.9999
            assert list(engine.generate_token_ids(request)) == tokens


@pytest.mark.slow
def test_onnx_vision_encoder_refuses_other_projectors(qwen2vl_gguf):
    from edgevl.engines.qwen2vl_vision import Qwen2VLVision

    folder = qwen2vl_gguf("f16", "f16")
    text = read_manifest(folder).path(folder, "text")
    with pytest.raises(ModelError, match="not a Qwen2-VL projector"):
        Qwen2VLVision(text, threads=1)
