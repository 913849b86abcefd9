"""The evaluation runner: resumable without duplicates, failures recorded, settings guarded; the report's scores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Iterator

import pytest
from conftest import noise_image, require_eval_extra

from edgevl.engines.base import Engine
from edgevl.errors import EdgevlError
from edgevl.eval import runner
from edgevl.eval.datasets import Sample, load_dataset
from edgevl.eval.runner import PredictionLog, RunSettings, model_labels, run_models
from edgevl.request import Request

require_eval_extra()

from edgevl.eval.report import score_run, summary_tables, write_report  # noqa: E402
from test_eval_synth import needs_cjk_font  # noqa: E402

SETTINGS = RunSettings(dataset="test")


class EchoEngine(Engine):
    """Answers every OCR request with `answer`; raises `failure` on call number `fail_at` (warm-up included)."""

    family = "classic"
    tasks = frozenset({"ocr", "table"})

    def __init__(self, answer: str = "hello", fail_at: int | None = None, failure: BaseException | None = None):
        super().__init__()
        self.answer, self.fail_at, self.failure, self.calls = answer, fail_at, failure, 0

    def stream(self, request: Request) -> Iterator[str]:
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.failure
        yield self.answer


@pytest.fixture
def samples(tmp_path) -> list[Sample]:
    for index in range(6):
        noise_image(20, 20, seed=index).save(tmp_path / f"{index}.png")
    return [Sample(f"s{index}", tmp_path / f"{index}.png", "ocr", ("hello" if index % 2 else "world",))
            for index in range(6)]


def use_engine(monkeypatch, engine: Engine | None) -> None:
    """Make the runner open `engine`, or fail the test if it opens any engine (None)."""
    def open_engine(model, **options):
        if engine is None:
            pytest.fail("the runner loaded a model although every sample was done")
        return engine
    monkeypatch.setattr(runner, "open_engine", open_engine)


def records(out: Path, label: str = "default") -> list[dict]:
    return PredictionLog(out / "predictions" / f"{label}.jsonl").records()


def test_interrupted_run_resumes_without_duplicates(monkeypatch, samples, tmp_path):
    out = tmp_path / "report"
    use_engine(monkeypatch, EchoEngine(fail_at=4, failure=KeyboardInterrupt()))  # warm-up + 2 samples, then Ctrl+C
    with pytest.raises(KeyboardInterrupt):
        run_models(samples, ["default"], out, SETTINGS)
    assert [record["id"] for record in records(out)] == ["s0", "s1"]
    second = EchoEngine()
    use_engine(monkeypatch, second)
    run_models(samples, ["default"], out, SETTINGS)
    assert [record["id"] for record in records(out)] == [f"s{index}" for index in range(6)]
    assert second.calls == 1 + 4  # warm-up, then only the four samples without a record
    use_engine(monkeypatch, None)
    run_models(samples, ["default"], out, SETTINGS)  # all done: no model is loaded
    assert len(records(out)) == 6


def test_a_line_cut_short_by_a_kill_is_dropped(monkeypatch, samples, tmp_path):
    out = tmp_path / "report"
    log = PredictionLog(out / "predictions" / "default.jsonl")
    good = {"id": "s0", "task": "ocr", "status": "ok", "prediction": "world", "seconds": 0.1}
    log.path.write_text(json.dumps(good) + "\n" + '{"id": "s1", "task": "oc')
    assert [record["id"] for record in log.records()] == ["s0"]
    assert log.path.read_text().endswith("}\n")
    use_engine(monkeypatch, EchoEngine())
    run_models(samples, ["default"], out, SETTINGS)
    assert [record["id"] for record in records(out)] == [f"s{index}" for index in range(6)]
    log.path.write_text(log.path.read_text().replace('"s3"', "'s3'", 1))
    with pytest.raises(EdgevlError, match=r"default.jsonl:4: damaged record"):
        log.records()


def test_failures_are_recorded_and_scored_as_empty_answers(monkeypatch, samples, tmp_path):
    out = tmp_path / "report"
    samples[1].image.write_bytes(b"not an image")
    use_engine(monkeypatch, EchoEngine(fail_at=3, failure=RuntimeError("decode failed")))  # warm-up, s0, s2
    run_models(samples, ["default"], out, SETTINGS)
    by_id = {record["id"]: record for record in records(out)}
    assert by_id["s1"]["status"] == "error" and "not an image format" in by_id["s1"]["error"]
    assert by_id["s2"]["error"] == "RuntimeError: decode failed"
    (result,) = score_run(samples, out, ["default"])
    ocr = result.tasks["ocr"]
    assert len(ocr.errors) == 2 and len(ocr.samples) == 6
    # s1 and s2 failed (empty answers: 5 deletions each); s0, s4 are "world" answered "hello" (4 substitutions)
    assert ocr.metrics["D"] == 10 and ocr.metrics["S"] == 8 and ocr.metrics["CER"] == pytest.approx(18 / 30)


def test_unsupported_tasks_are_reported_not_scored(monkeypatch, samples, tmp_path):
    out = tmp_path / "report"
    captions = [Sample("c0", samples[0].image, "caption", ("a picture",))]
    use_engine(monkeypatch, EchoEngine())
    run_models([*samples, *captions], ["default"], out, SETTINGS)
    assert records(out)[-1]["status"] == "unsupported"
    (result,) = write_report([*samples, *captions], tmp_path, out, ["default"])
    assert result.unsupported == ["caption"] and "caption" not in result.tasks
    assert "default cannot do: caption" in (out / "report.md").read_text()


def test_settings_and_models_must_match_to_resume(monkeypatch, samples, tmp_path):
    out = tmp_path / "report"
    use_engine(monkeypatch, EchoEngine())
    run_models(samples[:2], ["default"], out, SETTINGS)
    with pytest.raises(EdgevlError, match="another settings.*-o"):
        run_models(samples, ["default"], out, RunSettings(dataset="test", max_tokens=8))
    with pytest.raises(EdgevlError, match="both be called 'q4'"):
        model_labels(["a/q4", "b/q4"])
    assert model_labels(["default", "~/models/qwen2-vl-2b q4"]) == ["default", "qwen2-vl-2b_q4"]


def test_report_summary_and_worst_samples(monkeypatch, samples, tmp_path):
    out = tmp_path / "report"
    use_engine(monkeypatch, EchoEngine())
    run_models(samples, ["default"], out, SETTINGS)
    results = write_report(samples, tmp_path, out, ["default"], worst=2)
    header, rows = summary_tables(results)["ocr"]
    row = dict(zip(header, rows[0]))
    assert (row["n"], row["CER"], row["exact"], row["tok/s"]) == ("6", "40.00%", "50.00%", "-")
    markdown = (out / "report.md").read_text()
    assert "s0: CER 80.0% (S 4, D 0, I 0)" in markdown and "s2: CER 80.0%" in markdown and "s4" not in markdown
    assert (out / "charts" / "ocr.png").stat().st_size > 1000 and (out / "samples" / "000000.png").is_file()
    html = (out / "report.html").read_text()
    assert "<table>" in html and 'src="charts/ocr.png"' in html


@needs_cjk_font
def test_a_killed_process_resumes(tmp_path):
    """SIGKILL the real command mid-run, run it again: every sample once, none twice."""
    from edgevl.eval.synth import generate

    generate(tmp_path / "set", 16, languages=["en"], kinds=["line"])
    command = [sys.executable, "-m", "edgevl.cli", "eval", "run", str(tmp_path / "set"), "-o", str(tmp_path / "out"),
               "--threads", "1"]
    log = tmp_path / "out" / "predictions" / "default.jsonl"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if log.is_file() and log.read_bytes().count(b"\n") >= 3:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ids = [record["id"] for record in PredictionLog(log).records()]
    assert sorted(ids) == sorted(sample.id for sample in load_dataset(tmp_path / "set"))
