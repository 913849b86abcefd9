"""`edgevl convert` checks the disk before it starts (converters/disk_space.py): the estimate against the sizes the
README measured at real size (from sparse checkpoints: the released shapes, no values) and against what the tiny
converters write; the refusal in one line, before anything is written, from the library, the CLI and the GUI."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import pytest

from edgevl.errors import EdgevlError
from edgevl.manifest import read_manifest

pytest.importorskip("gguf")  # the convert extra

from edgevl.converters import disk_space, onnx_files  # noqa: E402 - needs gguf
from edgevl.converters.disk_space import DiskNeeds, require_room  # noqa: E402

GB = 10**9


def disk_with(monkeypatch, free: float) -> list[Path]:
    """shutil.disk_usage as the check sees it, reporting `free` bytes; returns the folders it was asked about."""
    asked: list[Path] = []

    def usage(path):
        asked.append(Path(path))
        return shutil._ntuple_diskusage(10**13, 10**13 - math.ceil(free), math.ceil(free))

    monkeypatch.setattr(disk_space.shutil, "disk_usage", usage)
    return asked


def test_refuses_in_one_line_naming_the_folder_the_sizes_and_what_to_do(monkeypatch, tmp_path):
    asked = disk_with(monkeypatch, 12.3 * GB)
    with pytest.raises(EdgevlError) as refused:
        require_room(tmp_path / "models" / "qwen2-vl-7b-onnx", DiskNeeds(files=int(7.3 * GB), scratch=int(16.6 * GB)))
    message = str(refused.value)
    assert "\n" not in message
    assert f"not enough disk space in {tmp_path}:" in message  # the nearest folder that exists: models/ is made later
    assert "needs about 26.3 GB free there (7.3 GB of model files + 16.6 GB of scratch, removed at the end" in message
    assert "12.3 GB is free; free some space or choose an output folder on a disk with more room" in message
    assert asked == [tmp_path]


def test_passes_with_room_and_the_margin(monkeypatch, tmp_path):
    needs = DiskNeeds(files=6 * GB, scratch=0)
    disk_with(monkeypatch, 6 * GB * disk_space.MARGIN)
    require_room(tmp_path / "out", needs)
    disk_with(monkeypatch, 6 * GB)  # exactly the estimate: no head room for what it does not count
    with pytest.raises(EdgevlError, match=r"about 6\.6 GB free there \(6\.0 GB of model files, plus 10% head room\)"):
        require_room(tmp_path / "out", needs)


# ---- real size: sparse checkpoints with the released shapes -------------------------------------------------------

@pytest.fixture(scope="module")
def real_size(tmp_path_factory):
    """Name -> a sparse bf16 checkpoint at released widths (headers and a hole: no disk, no values)."""
    pytest.importorskip("transformers")
    from edgevl.testing.minicpmv import MINICPMV_26, build_minicpmv_checkpoint
    from edgevl.testing.qwen2vl import QWEN2VL_2B, QWEN2VL_7B, build_qwen2vl_checkpoint

    root = tmp_path_factory.mktemp("sparse")
    return {
        "qwen2-vl-2b": build_qwen2vl_checkpoint(root / "2b", QWEN2VL_2B, dtype="bfloat16", sparse=True),
        "qwen2-vl-7b": build_qwen2vl_checkpoint(root / "7b", QWEN2VL_7B, dtype="bfloat16", sparse=True),
        # as the README measured it: MiniCPM-V 2.6's widths with 4 of the 28 LLM layers
        "minicpm-v-2.6-4-layers": build_minicpmv_checkpoint(
            root / "minicpmv", "2.6", dataclasses.replace(MINICPMV_26, num_hidden_layers=4), dtype="bfloat16",
            sparse=True),
    }


def estimated(checkpoint: Path, to: str, quant: str) -> DiskNeeds:
    from edgevl.converters import open_converter
    from edgevl.converters.onnx_files import Int4Options

    vision = "fp32" if quant == "fp32" else "f16" if to == "gguf" else "fp16"
    return disk_space.estimate(open_converter(checkpoint), to, quant, vision, Int4Options())


@pytest.mark.slow
@pytest.mark.parametrize("model, to, quant, measured_gb", [
    # the README's "Real size" tables: files on disk (GGUF: text + mmproj f16)
    ("qwen2-vl-2b", "gguf", "q4_k_m", 2.32),
    ("qwen2-vl-2b", "gguf", "f16", 4.43),
    ("qwen2-vl-2b", "onnx", "int4", 2.91),
    ("qwen2-vl-2b", "onnx", "fp16", 4.89),
    ("qwen2-vl-2b", "onnx", "fp32", 9.78),
    ("qwen2-vl-7b", "gguf", "q4_k_m", 4.683 + 1.353),
    ("qwen2-vl-7b", "onnx", "int4", 7.26),
    ("minicpm-v-2.6-4-layers", "gguf", "q4_k_m", 2.33),
    ("minicpm-v-2.6-4-layers", "onnx", "int4", 3.29),
    ("minicpm-v-2.6-4-layers", "onnx", "fp16", 5.02),
])
def test_estimate_matches_the_measured_real_sizes(real_size, model, to, quant, measured_gb):
    assert estimated(real_size[model], to, quant).files / GB == pytest.approx(measured_gb, rel=0.02)


@pytest.mark.slow
def test_scratch_at_real_size(real_size):
    """The 7B's ONNX export stages its weights once more in bf16 (README: 16.6 GB); q4_k_m's intermediate is the
    language model in the checkpoint's bf16; f16 and q8_0 are written straight."""
    assert estimated(real_size["qwen2-vl-7b"], "onnx", "int4").scratch / GB == pytest.approx(16.6, rel=0.01)
    assert estimated(real_size["qwen2-vl-7b"], "gguf", "q4_k_m").scratch / GB == pytest.approx(15.24, rel=0.01)
    assert estimated(real_size["qwen2-vl-7b"], "gguf", "q8_0").scratch == 0


@pytest.mark.slow
def test_convert_refuses_before_writing_anything(real_size, monkeypatch, tmp_path, capsys):
    from edgevl.cli import main
    from edgevl.converters import convert

    disk_with(monkeypatch, 20 * GB)
    output = tmp_path / "models" / "qwen2-vl-7b-onnx"
    with pytest.raises(EdgevlError, match=r"needs about 26\.2 GB free there \(7\.3 GB of model files \+ 16\.6 GB"):
        convert(real_size["qwen2-vl-7b"], output, to="onnx")
    assert list(tmp_path.iterdir()) == []

    assert main(["convert", str(real_size["qwen2-vl-7b"]), "-o", str(output), "--to", "onnx"]) == 1
    assert f"not enough disk space in {tmp_path}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ---- the tiny converters: the estimate against the files they write ---------------------------------------------

def written(folder: Path) -> int:
    return sum(entry.bytes for entry in read_manifest(folder).files.values())


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["f32", "q8_0", "q4_k_m"])
def test_estimate_matches_the_tiny_gguf_files(qwen2vl_checkpoint, qwen2vl_gguf, quant):
    assert estimated(qwen2vl_checkpoint, "gguf", quant).files == pytest.approx(written(qwen2vl_gguf(quant)), rel=0.02)


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["int4", "fp16", "fp32"])
def test_estimate_matches_the_tiny_onnx_files(qwen2vl_checkpoint, qwen2vl_onnx, quant):
    assert estimated(qwen2vl_checkpoint, "onnx", quant).files == pytest.approx(written(qwen2vl_onnx(quant)), rel=0.02)


@pytest.mark.slow
@pytest.mark.parametrize("version", ["2.6", "2.5"])
def test_estimate_matches_the_tiny_minicpmv_files(minicpmv_checkpoint, minicpmv_gguf, minicpmv_onnx, version):
    """MiniCPM-V's ONNX vision graph leaves out the mmproj's key position table (the engine computes it): the
    estimate counts it, a little over, never under."""
    checkpoint = minicpmv_checkpoint(version)
    gguf_files = written(minicpmv_gguf(version, "q4_k_m"))
    assert estimated(checkpoint, "gguf", "q4_k_m").files == pytest.approx(gguf_files, rel=0.02)
    onnx_files = written(minicpmv_onnx(version, "int4"))
    assert onnx_files <= estimated(checkpoint, "onnx", "int4").files <= onnx_files * 1.03

@pytest.mark.slow
def test_estimate_matches_the_scratch_written(qwen2vl_checkpoint, tmp_path, monkeypatch):
    """The K-quant's intermediate GGUF and the ONNX export's staged graphs, measured where they are written - with
    exactly the room the check asks for."""
    import edgevl.converters as converters
    from edgevl.converters import convert

    staged: dict[str, int] = {}
    quantize, write_graph = converters.quantize_with_llama_cpp, onnx_files.write_graph

    def quantized(source, *args):
        staged["gguf"] = source.stat().st_size
        return quantize(source, *args)

    def graph_written(exported, *args):
        staged.setdefault("onnx", sum(path.stat().st_size for path in exported.parent.iterdir()))
        return write_graph(exported, *args)

    monkeypatch.setattr(converters, "quantize_with_llama_cpp", quantized)
    monkeypatch.setattr(onnx_files, "write_graph", graph_written)
    for to, quant in (("gguf", "q4_k_m"), ("onnx", "int4")):
        needs = estimated(qwen2vl_checkpoint, to, quant)
        disk_with(monkeypatch, needs.total * disk_space.MARGIN)
        convert(qwen2vl_checkpoint, tmp_path / to, to=to, quant=quant)
        assert needs.scratch == pytest.approx(staged[to], rel=0.02)
