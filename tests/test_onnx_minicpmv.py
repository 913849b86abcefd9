"""MiniCPM-V 2.6 and 2.5 exported to ONNX and run by the ONNX engine, against the transformers-parts reference
(edgevl.testing.minicpmv) on the same tiny checkpoint and the same image cases as the GGUF route: next-token
logits, greedy tokens, the cost of fp16 / int4, and the same greedy answer as the GGUF f32 engine."""

from __future__ import annotations

import numpy as np
import pytest
from parity import MINICPMV_IMAGE_CASES as IMAGE_CASES
from parity import PROMPT, cosine, minicpmv_image, ocr_request

from edgevl import api
from edgevl.engines.llamacpp_minicpmv import MiniCPMVLlamaCppEngine
from edgevl.engines.onnx import OnnxEngine
from edgevl.errors import EdgevlError
from edgevl.manifest import read_manifest
from edgevl.request import Request, Sampling

onnx = pytest.importorskip("onnx")  # the export extra
pytest.importorskip("torch")  # the reference (dev extra)

from test_convert_minicpmv import minicpm_o_checkpoint  # noqa: E402 - needs gguf and torch

from edgevl.converters import convert  # noqa: E402 - needs gguf

pytestmark = pytest.mark.slow

VERSIONS = ("2.6", "2.5")
#: (quant, lowest cosine to the reference's next-token logits over the image cases)
QUANTS = [("fp16", 0.9999), ("int4", 0.98)]


@pytest.fixture(scope="module", params=VERSIONS)
def version(request):
    return request.param


@pytest.fixture(scope="module")
def fp32_engine(version, minicpmv_onnx):
    with OnnxEngine(minicpmv_onnx(version, "fp32"), threads=2) as engine:
        yield engine


@pytest.mark.parametrize("case", IMAGE_CASES)
def test_fp32_logits_match_reference(case, version, fp32_engine, minicpmv_reference):
    reference, image = minicpmv_reference(version), minicpmv_image(case)
    expected_ids, _ = reference.input_ids([image], PROMPT)
    ours = fp32_engine.first_token_logits(ocr_request((image,)))
    expected = reference.first_token_logits([image], PROMPT)
    print(f"ONNX fp32 {version} {case}: max|d| {np.abs(ours - expected).max():.2e} "
          f"(logit std {expected.std():.2f}), {len(expected_ids)} prompt tokens")
    assert fp32_engine.last_stats.prompt_tokens == len(expected_ids)
    assert np.abs(ours - expected).max() <= 1e-4
    assert list(np.argsort(-ours)[:5]) == list(np.argsort(-expected)[:5])


@pytest.mark.parametrize("case", IMAGE_CASES)
def test_fp32_greedy_tokens_match_reference(case, version, fp32_engine, minicpmv_reference):
    image = minicpmv_image(case)
    expected = minicpmv_reference(version).greedy_tokens([image], PROMPT, 24)
    assert list(fp32_engine.generate_token_ids(ocr_request((image,)))) == expected


@pytest.mark.parametrize("quant, min_cosine", QUANTS)
def test_smaller_variants_stay_close_to_reference(quant, min_cosine, version, minicpmv_onnx, minicpmv_reference):
    similarities = []
    with OnnxEngine(minicpmv_onnx(version, quant), threads=2) as engine:
        for case in IMAGE_CASES:
            image = minicpmv_image(case)
            ours = engine.first_token_logits(ocr_request((image,)))
            similarities.append(cosine(ours, minicpmv_reference(version).first_token_logits([image], PROMPT)))
    sizes = {role: entry.bytes for role, entry in read_manifest(minicpmv_onnx(version, quant)).files.items()}
    print(f"ONNX {quant} {version}: cosine min {min(similarities):.6f} over {len(similarities)} cases, bytes {sizes}")
    assert min(similarities) >= min_cosine


def test_onnx_and_gguf_give_the_same_greedy_answer(version, fp32_engine, minicpmv_gguf):
    with MiniCPMVLlamaCppEngine(minicpmv_gguf(version, "f32"), threads=2) as gguf_engine:
        for case in IMAGE_CASES:
            request = ocr_request((minicpmv_image(case),))
            assert "".join(fp32_engine.stream(request)) == "".join(gguf_engine.stream(request))


def test_int4_is_matmulnbits_with_fp16_vision(version, minicpmv_onnx):
    folder = minicpmv_onnx(version, "int4")
    manifest = read_manifest(folder)
    decoder = onnx.load(str(manifest.path(folder, "decoder")))
    bits = {node.name: next(a.i for a in node.attribute if a.name == "bits")
            for node in decoder.graph.node if node.op_type == "MatMulNBits"}
    assert set(bits.values()) == {4, 8} and [name for name, b in bits.items() if b == 8] == ["/lm_head/MatMul_Q8"]
    vision = onnx.load(str(manifest.path(folder, "vision")))
    assert {t.data_type for t in vision.graph.initializer if len(t.dims) == 2} == {onnx.TensorProto.FLOAT16}
    size = {quant: read_manifest(minicpmv_onnx(version, quant)).total_bytes() for quant in ("fp32", "fp16", "int4")}
    print(f"ONNX sizes {version}: {size}")
    assert size["int4"] < size["fp16"] < size["fp32"]


def test_minicpm_o_exports_its_vision_and_language_parts(minicpmv_checkpoint, minicpmv_onnx, tmp_path):
    """MiniCPM-o 2.6 is 2.6's vision and language parts plus audio and speech, which the export skips: its ONNX
    folder answers as 2.6's."""
    source = minicpm_o_checkpoint(minicpmv_checkpoint("2.6"), tmp_path / "o")
    convert(source, tmp_path / "out", to="onnx", quant="fp32")
    request = ocr_request((minicpmv_image("wide-screenshot"),))
    with OnnxEngine(tmp_path / "out", threads=2) as minicpm_o, OnnxEngine(minicpmv_onnx("2.6"), threads=2) as v26:
        assert np.abs(minicpm_o.first_token_logits(request) - v26.first_token_logits(request)).max() <= 1e-6


def test_bf16_checkpoint_exports_exactly(tmp_path):
    """MiniCPM-V ships bf16: the export stages such weights as bf16 (exact) and widens them again, so the fp32
    folder answers as the reference does with the same weights in float32."""
    from edgevl.testing.minicpmv import MiniCPMVReference, build_minicpmv_checkpoint

    source = build_minicpmv_checkpoint(tmp_path / "bf16", "2.6", dtype="bfloat16")
    convert(source, tmp_path / "out", to="onnx", quant="fp32")
    image = minicpmv_image("wide-screenshot")
    with OnnxEngine(tmp_path / "out", threads=2) as engine:
        ours = engine.first_token_logits(ocr_request((image,)))
    expected = MiniCPMVReference(source).first_token_logits([image], PROMPT)
    assert np.abs(ours - expected).max() <= 1e-4


def test_text_only_question(version, fp32_engine, minicpmv_reference):
    """No image: the embedding graph gets no features, the decoder starts from an empty cache."""
    request = Request("ask", (), "Hello there, how are you?", sampling=Sampling(max_tokens=6))
    tokens = list(fp32_engine.generate_token_ids(request))
    assert tokens == minicpmv_reference(version).greedy_tokens([], "Hello there, how are you?", 6)[:len(tokens)]


def test_image_markers_in_the_question_are_refused(fp32_engine):
    request = Request("ask", (minicpmv_image("small-one-slice"),), "What is <unk> here?")
    with pytest.raises(EdgevlError, match="image placeholder tokens"):
        fp32_engine.first_token_logits(request)


def test_streams_text_through_the_api(version, minicpmv_onnx):
    with api.open_engine(minicpmv_onnx(version, "int4"), threads=2) as engine:
        run = api.stream_task(engine, "caption", [minicpmv_image("wide-screenshot")], max_tokens=8)
        pieces = list(run)
        assert pieces and engine.last_stats.generated_tokens <= 8 and run.result().text == "".join(pieces).strip()
