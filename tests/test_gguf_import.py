"""`edgevl import`: GGUF files made by other tools become model folders; what edgevl cannot run is refused clearly.

The fast tests write GGUF files holding only the metadata that matters; the slow ones convert the tiny Qwen2-VL
checkpoint with llama.cpp's own converter (convert_hf_to_gguf.py from the pinned llama-cpp-python sdist) and
compare answers and logits with edgevl's own conversion of the same checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from edgevl.cli import main  # noqa: E402
from edgevl.errors import ModelError  # noqa: E402
from edgevl.gguf_import import import_gguf, pick_files  # noqa: E402
from edgevl.manifest import read_manifest  # noqa: E402
from edgevl.model_files import check_model_files  # noqa: E402



def write_text_gguf(path: Path, arch: str = "qwen2vl", width: int = 256, template: str = "<|im_start|>{{x}}",
                    file_type: int = gguf.LlamaFileType.MOSTLY_Q4_K_M, **extra) -> Path:
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name("Tiny")
    writer.add_file_type(file_type)
    writer.add_embedding_length(width)
    writer.add_block_count(2)
    if template:
        writer.add_chat_template(template)
    for key, value in extra.items():
        writer.add_uint32(key, value)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    _finish(writer)
    return path


def write_mmproj_gguf(path: Path, projector: str = "qwen2vl_merger", width: int = 256) -> Path:
    writer = gguf.GGUFWriter(path, "clip")
    writer.add_type(gguf.GGUFType.MMPROJ)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_clip_has_vision_encoder(True)
    writer.add_clip_projector_type(projector)
    writer.add_vision_projection_dim(width)
    writer.add_tensor("v.patch_embd.weight", np.zeros((4, 8), np.float16))
    _finish(writer)
    return path


def _finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture
def lm_studio_folder(tmp_path) -> Path:
    """A model's files as LM Studio keeps them: the text quant and its mmproj side by side."""
    folder = tmp_path / "lmstudio-community" / "Tiny-VL-GGUF"
    folder.mkdir(parents=True)
    write_text_gguf(folder / "Tiny-VL-Q4_K_M.gguf")
    write_mmproj_gguf(folder / "mmproj-Tiny-VL-f16.gguf")
    return folder


def test_imports_a_folder_into_a_model_folder(lm_studio_folder, tmp_path):
    folder, manifest = import_gguf(lm_studio_folder, output=tmp_path / "model")
    assert folder == tmp_path / "model"
    assert (manifest.format, manifest.family, manifest.quant, manifest.vision_quant) == ("gguf", "qwen2vl",
                                                                                         "q4_k_m", "f16")
    assert manifest.chat_template == "chatml" and manifest.card is None
    assert read_manifest(folder) == manifest
    check_model_files(folder, manifest, verify=True)
    assert manifest.source["imported"]["text"].endswith("Tiny-VL-Q4_K_M.gguf")
    assert (lm_studio_folder / "Tiny-VL-Q4_K_M.gguf").is_file()  # the original is left where it was


def test_ollama_blobs_without_extension(lm_studio_folder, tmp_path):
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    text, mmproj = blobs / "sha256-1111", blobs / "sha256-2222"
    text.write_bytes((lm_studio_folder / "Tiny-VL-Q4_K_M.gguf").read_bytes())
    mmproj.write_bytes((lm_studio_folder / "mmproj-Tiny-VL-f16.gguf").read_bytes())
    folder, manifest = import_gguf(text, mmproj, tmp_path / "model")
    assert manifest.files["text"].name == "tiny-Q4_K_M.gguf"


def test_default_output_is_in_the_models_folder(lm_studio_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEVL_MODELS", str(tmp_path / "models"))
    folder, _ = import_gguf(lm_studio_folder)
    assert folder == tmp_path / "models" / "tiny-q4_k_m"


def test_cli_import(lm_studio_folder, tmp_path, capsys):
    assert main(["import", str(lm_studio_folder / "Tiny-VL-Q4_K_M.gguf"), "--mmproj",
                 str(lm_studio_folder / "mmproj-Tiny-VL-f16.gguf"), "-o", str(tmp_path / "model")]) == 0
    assert "done:" in capsys.readouterr().err
    assert main(["import", str(lm_studio_folder), "-o", str(tmp_path / "model")]) == 1
    assert "already exists" in capsys.readouterr().err
    write_text_gguf(lm_studio_folder / "Tiny-VL-Q8_0.gguf", file_type=gguf.LlamaFileType.MOSTLY_Q8_0)
    assert main(["import", str(lm_studio_folder), "--quant", "q8_0", "-o", str(tmp_path / "q8")]) == 0
    assert read_manifest(tmp_path / "q8").quant == "q8_0"
    assert main(["import", str(lm_studio_folder), "--quant", "q6_k", "-o", str(tmp_path / "q6")]) == 1
    assert "no language model files with quant q6_k" in capsys.readouterr().err


@pytest.mark.parametrize("case, message", [
    ("not-gguf", "not a GGUF file"),
    ("swapped", "a vision projector, not a language model"),
    ("two-texts", "a language model (qwen2vl), not a vision projector"),
    ("qwen3", "Qwen3-VL is not supported yet"),
    ("minicpmv", "MiniCPM-V GGUFs made by other tools are not supported yet"),
    ("text-only-arch", "cannot run a llama language model with a qwen2vl_merger vision projector"),
    ("other-model", "projects images to 512 values, but"),
    ("no-mmproj", "give its vision projector with --mmproj"),
    ("split", "one part of a split GGUF"),
    ("odd-template", "neither ChatML nor Llama-3's"),
    ("missing", "no such file"),
])
def test_refuses_what_edgevl_cannot_run(case, message, tmp_path):
    text, mmproj = tmp_path / "text.gguf", tmp_path / "mmproj.gguf"
    write_text_gguf(text)
    write_mmproj_gguf(mmproj)
    (tmp_path / "notes.txt").write_text("hello")
    arguments = {
        "not-gguf": lambda: (tmp_path / "notes.txt", mmproj),
        "swapped": lambda: (mmproj, text),
        "two-texts": lambda: (text, text),
        "qwen3": lambda: (text, write_mmproj_gguf(tmp_path / "m.gguf", "qwen3vl_merger")),
        "minicpmv": lambda: (text, write_mmproj_gguf(tmp_path / "m.gguf", "resampler")),
        "text-only-arch": lambda: (write_text_gguf(tmp_path / "t.gguf", arch="llama"), mmproj),
        "other-model": lambda: (text, write_mmproj_gguf(tmp_path / "m.gguf", width=512)),
        "no-mmproj": lambda: (text, None),
        "split": lambda: (write_text_gguf(tmp_path / "t.gguf", **{"split.count": 2}), mmproj),
        "odd-template": lambda: (write_text_gguf(tmp_path / "t.gguf", template="[INST]{{x}}[/INST]"), mmproj),
        "missing": lambda: (tmp_path / "nothing.gguf", mmproj),
    }[case]()
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        import_gguf(*arguments, tmp_path / "model")
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("names, quant, file, expected", [
    (["M-Q4_K_M.gguf", "mmproj-M-f16.gguf"], None, None, ("M-Q4_K_M.gguf", "mmproj-M-f16.gguf")),
    (["M-Q8_0.gguf", "M-Q4_K_M.gguf", "mmproj-M-f16.gguf", "mmproj-M-Q8_0.gguf"], None, None,
     ("M-Q4_K_M.gguf", "mmproj-M-f16.gguf")),
    (["M-Q8_0.gguf", "M-Q4_K_M.gguf", "mmproj-M-f16.gguf"], "q8_0", None, ("M-Q8_0.gguf", "mmproj-M-f16.gguf")),
    (["M-Q4_K_M.gguf", "M-IQ4_K_M_L.gguf", "mmproj-M-f16.gguf"], "Q4-K-M", None,
     ("M-Q4_K_M.gguf", "mmproj-M-f16.gguf")),
    (["M-Q8_0.gguf", "M-f16.gguf", "mmproj-M-f16.gguf"], None, "M-f16.gguf", ("M-f16.gguf", "mmproj-M-f16.gguf")),
])
def test_picks_text_and_mmproj_by_name(names, quant, file, expected):
    assert pick_files(names, quant, file) == expected


@pytest.mark.parametrize("names, quant, message", [
    (["M-Q8_0.gguf", "M-Q5_K_M.gguf", "mmproj-M-f16.gguf"], None, "choose one with --quant"),
    (["M-Q8_0.gguf", "mmproj-M-f16.gguf"], "q4_k_m", "no language model files with quant q4_k_m"),
    (["M-Q8_0.gguf"], None, "no vision projector"),
    (["M-Q8_0.gguf", "mmproj-M-f32.gguf", "mmproj-M-bf16.gguf"], None, "choose one with --mmproj"),
])
def test_ambiguous_or_missing_choices_are_refused(names, quant, message):
    with pytest.raises(ModelError, match=message):
        pick_files(names, quant)


# ---- files written by llama.cpp's own converter (fixtures in conftest.py) ------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2vl", "qwen25vl"])
def test_llama_cpp_made_files_answer_like_our_conversion(family, llama_cpp_conversions, request, tmp_path):
    from parity import images_for, ocr_request

    from edgevl.api import open_engine

    text, mmproj = llama_cpp_conversions(request.getfixturevalue(f"{family}_checkpoint"))
    imported, manifest = import_gguf(text, mmproj, tmp_path / "imported")
    assert (manifest.family, manifest.quant, manifest.vision_quant, manifest.chat_template) == (
        family, "f32", "f32", "chatml")
    ours = request.getfixturevalue(f"{family}_gguf")("f32")
    for case in ("exact-grid", "tall-screenshot-over-budget", "two-images"):
        ocr = ocr_request(images_for(case))
        answers, logits = [], []
        for folder in (imported, ours):
            with open_engine(folder, threads=1) as engine:
                logits.append(engine.first_token_logits(ocr))
                answers.append("".join(engine.stream(ocr)))
        assert answers[0] == answers[1]
        np.testing.assert_allclose(logits[0], logits[1], atol=1e-4)
