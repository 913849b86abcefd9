"""`--verify`: a conversion compared with the checkpoint's reference on the drawn probes, the result stored in the
manifest and shown by `edgevl models`; a broken conversion warns; without torch or the memory, one skip line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgevl import verify
from edgevl.cli import main
from edgevl.manifest import Manifest, file_entry, read_manifest, write_manifest
from edgevl.verify import PROBE_TOKENS, Verification, compare, stored_verification, verify_conversion


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def model_folder(root: Path, checkpoint: Path, quant: str = "q4_k_m") -> Path:
    """A model folder whose manifest points at `checkpoint`, without converting anything."""
    folder = root / f"tiny-{quant}"
    folder.mkdir(parents=True)
    (folder / "text.gguf").write_bytes(b"GGUF")
    write_manifest(folder, Manifest("gguf", "qwen2vl", quant, {"text": file_entry(folder / "text.gguf")},
                                    source={"path": str(checkpoint)}))
    return folder


@pytest.fixture
def checkpoint_with_config(tmp_path) -> Path:
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")
    return folder


# ---- fast: the measures, the record, the skip paths ------------------------------------------------------------

def test_compare_counts_agreement_and_the_greedy_run():
    expected = [3, 1, 4, 1, 5]
    ours = np.zeros((5, 8))
    for step, token in enumerate(expected):
        ours[step, token] = 1.0
    ours[2] = 0
    ours[2, 7] = 1.0  # step 2 disagrees: greedy decoding would leave the reference there
    result = compare("text", ours, expected, ours[0])
    assert (result.cosine, result.top1, result.greedy_match) == (1.0, 0.8, 2)


def test_a_zero_logit_row_is_no_match():
    """An all-zero answer (a broken model) has no direction: cosine 0, not NaN (which no threshold would catch)."""
    assert compare("text", np.zeros((1, 4)), [0], np.ones(4)).cosine == 0.0


def test_thresholds_follow_the_quant_and_a_16_bit_reference():
    assert verify.thresholds_for("q8_0", "float32").cosine == 0.999
    assert verify.thresholds_for("q4_k_m", "float32") == verify.thresholds_for("int4", "float32") == verify.COARSE
    assert verify.thresholds_for("f32", "bfloat16") == verify.thresholds_for("f16", "float32")


def test_without_torch_verification_is_skipped_with_one_line(tmp_path, checkpoint_with_config, monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "torch" else real_find_spec(name, *args))
    folder = model_folder(tmp_path / "models", checkpoint_with_config)
    verification = verify_conversion(folder)
    assert verification.status == "skipped"
    assert verification.summary() == ("verification skipped: the reference needs torch (pip install "
                                      "'edgevl[export]')")
    assert stored_verification(read_manifest(folder)) == verification

    monkeypatch.setenv("EDGEVL_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("COLUMNS", "200")
    status, out, _ = run(capsys, "models")
    assert status == 0 and "skipped" in out


def test_convert_prints_the_skip_line(tmp_path, checkpoint_with_config, monkeypatch, capsys):
    pytest.importorskip("gguf")  # edgevl.converters
    import edgevl.converters

    def fake_convert(checkpoint, output, **options):
        return read_manifest(model_folder(Path(output).parent, checkpoint).rename(output))

    monkeypatch.setattr(edgevl.converters, "convert", fake_convert)
    monkeypatch.setattr(verify, "skip_reason", lambda manifest: "the reference needs torch (pip install ...)")
    status, _, err = run(capsys, "convert", str(checkpoint_with_config), "-o", str(tmp_path / "out"))
    assert status == 0
    assert "verification skipped: the reference needs torch" in err
    status, _, err = run(capsys, "convert", str(checkpoint_with_config), "-o", str(tmp_path / "out2"), "--no-verify")
    assert status == 0 and "verif" not in err and not read_manifest(tmp_path / "out2").verification


def test_imported_files_have_no_checkpoint_to_compare_with(tmp_path):
    folder = model_folder(tmp_path, tmp_path / "gone")
    assert verify_conversion(folder).status == "skipped"
    assert not read_manifest(folder).verification


def test_the_reference_falls_back_to_the_checkpoints_16_bit_dtype_or_skips(tmp_path, monkeypatch):
    """fp32 when it fits the free memory next to the model, else the checkpoint's own 16-bit dtype, else skip."""
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    pytest.importorskip("gguf")  # edgevl.converters reads the checkpoint
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"architectures": ["Qwen2VLForConditionalGeneration"]}))
    safetensors_numpy.save_file({"w": np.zeros((1000, 1000), dtype=np.float16)}, str(checkpoint / "model.safetensors"))
    manifest = read_manifest(model_folder(tmp_path, checkpoint))

    def free_memory(gigabytes: float) -> None:
        monkeypatch.setattr(verify.psutil, "virtual_memory", lambda: SimpleNamespace(available=int(gigabytes * 1e9)))

    overhead = verify.REFERENCE_BASE_BYTES / 1e9
    free_memory(overhead + 0.006)  # fp32: 4 MB x 1.2
    assert verify.reference_dtype(checkpoint, manifest) == ("float32", "")
    free_memory(overhead + 0.003)  # fp16: 2 MB x 1.2
    assert verify.reference_dtype(checkpoint, manifest) == ("float16", "")
    free_memory(overhead)
    dtype, reason = verify.reference_dtype(checkpoint, manifest)
    assert dtype is None and reason.startswith("the reference needs 1.1 GB of memory in float16")


def test_a_failing_comparison_is_a_skip_with_the_reason(tmp_path, checkpoint_with_config, monkeypatch):
    """The conversion is finished and kept: a reference that cannot run (here: no engine) does not undo it."""
    monkeypatch.setattr(verify, "skip_reason", lambda manifest: None)
    monkeypatch.setattr(verify, "reference_dtype", lambda checkpoint, manifest: ("float32", ""))
    verification = verify_conversion(model_folder(tmp_path, checkpoint_with_config))
    assert verification.status == "skipped" and verification.reason.startswith("the comparison failed (")


def test_a_record_from_another_edgevl_reads_as_not_verified(tmp_path, checkpoint_with_config):
    folder = model_folder(tmp_path, checkpoint_with_config)
    manifest = read_manifest(folder)
    assert stored_verification(manifest) is None
    verify.store(folder, Verification("skipped", "why"))
    data = json.loads((folder / "edgevl.json").read_text())
    data["verification"]["from_the_future"] = 1
    (folder / "edgevl.json").write_text(json.dumps(data))
    assert stored_verification(read_manifest(folder)) is None


# ---- slow: real conversions of the tiny checkpoint ------------------------------------------------------------

@pytest.mark.slow
def test_convert_verifies_and_stores_passing_numbers(qwen2vl_checkpoint, tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    output = tmp_path / "models" / "tiny-q8"
    status, _, err = run(capsys, "convert", str(qwen2vl_checkpoint), "-o", str(output), "--quant", "q8_0")
    print(err)
    assert status == 0 and "verified ok" in err
    verification = stored_verification(read_manifest(output))
    assert verification is not None and verification.status == "passed"
    assert verification.reference == "transformers float32, CPU"
    assert [probe["probe"] for probe in verification.probes] == ["text", "table"]
    for probe in verification.probes:
        assert probe["cosine"] >= verification.thresholds["cosine"]
        assert probe["top1"] >= verification.thresholds["top1"]
        assert 0 <= probe["greedy_match"] <= PROBE_TOKENS

    monkeypatch.setenv("EDGEVL_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("COLUMNS", "200")
    status, out, _ = run(capsys, "models")
    assert status == 0 and verification.short() in out


@pytest.mark.slow
def test_a_broken_conversion_warns(qwen2vl_checkpoint, tmp_path, monkeypatch, capsys):
    """A converter that garbles the MLP of every layer (here: its output projections negated) still writes a
    model that loads and answers; --verify is what tells."""
    pytest.importorskip("torch")
    from edgevl.converters.checkpoint import LazyTensor

    load_rows = LazyTensor.load_rows  # what every read of a checkpoint tensor goes through
    monkeypatch.setattr(LazyTensor, "load_rows", lambda tensor, start, stop: -load_rows(tensor, start, stop)
                        if "mlp.down_proj" in tensor.name else load_rows(tensor, start, stop))
    output = tmp_path / "broken"
    status, _, err = run(capsys, "convert", str(qwen2vl_checkpoint), "-o", str(output), "--quant", "f32")
    print(err)
    assert status == 0  # the folder is kept: the warning is the answer
    assert "WARNING: verified BELOW THRESHOLDS" in err
    verification = stored_verification(read_manifest(output))
    assert verification is not None and verification.status == "below"
    assert "needs cosine 0.9999" in verification.reason
