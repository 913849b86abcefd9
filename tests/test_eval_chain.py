"""The whole `edgevl eval` chain as a user types it: synthetic set -> run two models -> report."""

from __future__ import annotations

import json

import pytest
from conftest import require_eval_extra

from edgevl.cli import main
from edgevl.eval.datasets import load_dataset

require_eval_extra()

from edgevl.eval.report import score_run  # noqa: E402
from test_eval_synth import needs_cjk_font  # noqa: E402


@needs_cjk_font
@pytest.mark.slow
def test_synth_then_run_the_embedded_engine_and_a_tiny_model(capsys, qwen2vl_gguf, tmp_path):
    dataset, out = tmp_path / "synth", tmp_path / "report"
    tiny = qwen2vl_gguf("q4_k_m", "f16")
    assert main(["eval", "synth", "--out", str(dataset), "--n", "8", "--lang", "zh,en", "--seed", "1"]) == 0
    assert main(["eval", "synth", "--out", str(dataset), "--n", "8", "--force"]) == 0  # --force replaces a set
    status = main(["eval", "run", str(dataset), "-m", "default", "-m", str(tiny), "-o", str(out),
                   "--max-tokens", "4", "--image-tokens", "64", "--threads", "1"])
    printed = capsys.readouterr().out
    assert status == 0
    assert "OCR" in printed and "Tables" in printed and "default" in printed and tiny.name in printed

    samples = load_dataset(dataset)
    for label in ("default", tiny.name):
        lines = (out / "predictions" / f"{label}.jsonl").read_text(encoding="utf-8").splitlines()
        assert sorted(json.loads(line)["id"] for line in lines) == sorted(sample.id for sample in samples)
    default, model = score_run(samples, out, ["default", tiny.name])
    # The embedded engine reads clean synthetic text almost perfectly, which also shows that the labels (cut
    # lines included) match the images; the random tiny model reads nothing but is timed in tokens.
    assert default.tasks["ocr"].metrics["CER"] < 0.05 and default.tasks["table"].metrics["TEDS"] > 0.7
    assert model.tasks["ocr"].tokens_per_second > 0 and model.info["quant"] == "q4_k_m"
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Summary" in report and "charts/ocr.png" in report and "## Worst samples" in report
    assert (out / "charts" / "table.png").is_file() and (out / "report.html").is_file()

    # Running again finds every prediction and only rebuilds the report.
    assert main(["eval", "run", str(dataset), "-m", "default", "-m", str(tiny), "-o", str(out),
                 "--max-tokens", "4", "--image-tokens", "64", "--threads", "1", "--whitespace", "remove"]) == 0
    assert "whitespace remove" in (out / "report.md").read_text(encoding="utf-8")


def test_eval_errors_are_one_line(capsys, tmp_path):
    assert main(["eval", "run", str(tmp_path / "nowhere"), "-o", str(tmp_path / "out")]) == 1
    assert "no such dataset folder" in capsys.readouterr().err
    assert main(["eval", "synth", "--out", str(tmp_path / "set"), "--lang", "fr"]) == 1
    assert "unknown language fr" in capsys.readouterr().err
