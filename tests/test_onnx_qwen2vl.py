"""ONNX export and the ONNX Runtime engine against transformers fp32, and the cost of fp16 / int4."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import noise_image
from parity import MAX_TOKENS, MIN_TOKENS, PROMPT, cosine, images_for, ocr_request

from edgevl import api
from edgevl.engines.onnx import OnnxEngine
from edgevl.errors import BackendUnavailable, EdgevlError
from edgevl.families.qwen2vl import qwen2vl_rope_positions
from edgevl.manifest import read_manifest
from edgevl.request import Request, Sampling
from edgevl.system import rss_bytes

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # every test exports the tiny checkpoint

SHAPES = ["smaller-than-56px", "needs-resize", "tall-screenshot-over-budget", "two-images"]


# the parity tests name the family's fixtures through these two, so that another Qwen-VL family's module can
# import them and point them at its own checkpoint (tests/test_onnx_qwen25vl.py)
@pytest.fixture(scope="module")
def family_onnx(qwen2vl_onnx):
    return qwen2vl_onnx


@pytest.fixture(scope="module")
def family_reference(qwen2vl_reference):
    return qwen2vl_reference


@pytest.fixture(scope="module")
def fp32_engine(family_onnx):
    with OnnxEngine(family_onnx("fp32"), image_max_tokens=MAX_TOKENS, threads=1) as engine:
        yield engine


@pytest.mark.parametrize("case", SHAPES)
def test_fp32_matches_reference(case, fp32_engine, family_reference):
    images = images_for(case)
    ours = fp32_engine.first_token_logits(ocr_request(images))
    reference = family_reference.first_token_logits(list(images), PROMPT, MIN_TOKENS, MAX_TOKENS)
    print(f"{case}: max|d| {np.abs(ours - reference).max():.2e}")
    assert np.abs(ours - reference).max() <= 1e-4
    tokens = list(fp32_engine.generate_token_ids(ocr_request(images)))
    assert tokens == family_reference.greedy_tokens(list(images), PROMPT, MIN_TOKENS, MAX_TOKENS, 24)


@pytest.mark.parametrize("quant, min_cosine", [("fp16", 0.999), ("int4", 0.98)])
def test_smaller_variants_stay_close_to_fp32(quant, min_cosine, family_onnx, fp32_engine):
    similarities, top1 = [], []
    with OnnxEngine(family_onnx(quant), image_max_tokens=MAX_TOKENS, threads=1) as engine:
        for case in SHAPES:
            ours = engine.first_token_logits(ocr_request(images_for(case)))
            full = fp32_engine.first_token_logits(ocr_request(images_for(case)))
            similarities.append(cosine(ours, full))
            top1.append(int(ours.argmax() == full.argmax()))
    sizes = {role: entry.bytes for role, entry in read_manifest(family_onnx(quant)).files.items()}
    print(f"{quant}: cosine min {min(similarities):.5f}, top-1 agreement {sum(top1)}/{len(top1)}, bytes {sizes}")
    assert min(similarities) >= min_cosine


def test_int4_is_matmulnbits_and_smaller(qwen2vl_onnx):
    decoder = onnx.load(str(read_manifest(qwen2vl_onnx("int4")).path(qwen2vl_onnx("int4"), "decoder")))
    assert {node.op_type for node in decoder.graph.node} >= {"MatMulNBits"}
    size = {quant: read_manifest(qwen2vl_onnx(quant)).total_bytes() for quant in ("fp32", "fp16", "int4")}
    assert size["int4"] < size["fp16"] < size["fp32"]


def test_rope_positions_match_transformers(qwen2vl_reference):
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel

    images = images_for("two-images")
    inputs = qwen2vl_reference.inputs(list(images), PROMPT, MIN_TOKENS, MAX_TOKENS)
    model: Qwen2VLModel = qwen2vl_reference.model.model
    expected, _ = model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"], inputs["image_grid_thw"])
    ours = qwen2vl_rope_positions(inputs["input_ids"][0].tolist(), model.config.image_token_id,
                                  [tuple(g) for g in inputs["image_grid_thw"].tolist()])
    np.testing.assert_array_equal(ours, expected[:, 0].numpy())


def test_streams_text_through_the_api(qwen2vl_onnx):
    with api.open_engine(qwen2vl_onnx("int4"), threads=1) as engine:
        assert isinstance(engine, OnnxEngine)
        run = api.stream_task(engine, "caption", [noise_image(64, 64)], max_tokens=8)
        pieces = list(run)
        assert pieces and engine.last_stats.generated_tokens <= 8 and run.result().text == "".join(pieces).strip()


def test_memory_does_not_grow_over_repeated_calls(qwen2vl_onnx):
    with OnnxEngine(qwen2vl_onnx("int4"), threads=1) as engine:
        for _ in range(3):
            list(engine.generate_token_ids(ocr_request(images_for("smaller-than-56px"), max_tokens=8)))
        after_3 = rss_bytes()
        for _ in range(27):
            list(engine.generate_token_ids(ocr_request(images_for("smaller-than-56px"), max_tokens=8)))
    assert rss_bytes() <= after_3 * 1.05


def test_cuda_asked_without_provider_says_how_to_get_it(qwen2vl_onnx):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
        OnnxEngine(qwen2vl_onnx("int4"), device="cuda")


def test_unknown_onnx_quant(qwen2vl_checkpoint, tmp_path):
    with pytest.raises(EdgevlError, match="unknown ONNX quant 'q4_k_m'"):
        api_convert = __import__("edgevl.converters", fromlist=["convert"]).convert
        api_convert(qwen2vl_checkpoint, tmp_path / "out", to="onnx", quant="q4_k_m")
    assert not (tmp_path / "out").exists()


def test_exported_decoder_handles_prefill_and_steps(qwen2vl_onnx, qwen2vl_reference):
    """The decoder graph was traced with 3 cached + 2 new tokens; it must be exact for 0 cached and 1 new too."""
    with OnnxEngine(qwen2vl_onnx("fp32"), threads=1) as engine:
        text_only = Request("ask", (), "Hello there, how are you?", sampling=Sampling(max_tokens=6))
        ours = list(engine.generate_token_ids(text_only))
    inputs = qwen2vl_reference.tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "Hello there, how are you?"}]}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        reference = qwen2vl_reference.model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert ours == reference[0, inputs["input_ids"].shape[1]:].tolist()[:len(ours)]
