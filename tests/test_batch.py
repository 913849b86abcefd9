"""The batch runner: one record per image, bad images recorded, resume after kills without loss or duplicates,
Ctrl+C, flat memory."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from collections.abc import Iterator

import pytest
from conftest import noise_image

from edgevl.batch import read_done, run_batch
from edgevl.cli import main
from edgevl.engines.base import Engine
from edgevl.errors import EdgevlError, EngineUnavailable, UnsupportedTask
from edgevl.request import Request
from edgevl.system import rss_bytes


class SizeEngine(Engine):
    """Answers with the image's size: instant and deterministic, to test the runner rather than a model."""

    family = "qwen2vl"
    description = "size engine"

    def __init__(self, delay: float = 0.0, fail_on: str | None = None) -> None:
        super().__init__()
        self.delay, self.fail_on = delay, fail_on
        self.active = 0
        self.most_active = 0
        self._lock = threading.Lock()

    def stream(self, request: Request) -> Iterator[str]:
        with self._lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            time.sleep(self.delay)
            image = request.images[0]
            if self.fail_on and image.width == int(self.fail_on):
                raise EngineUnavailable("the server went away")
            yield f"{image.width}x{image.height}"
        finally:
            with self._lock:
                self.active -= 1


def make_images(folder: Path, count: int, first_width: int = 40) -> list[Path]:
    """`count` PNGs whose widths tell them apart, spread over two sub-folders."""
    paths = []
    for index in range(count):
        path = folder / f"part{index % 2}" / f"image{index:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        noise_image(first_width + index, 30, seed=index).save(path)
        paths.append(path)
    return paths


def read_records(output: Path) -> list[dict]:
    return [json.loads(line) for line in output.read_text().splitlines()]


def test_runs_every_image_once_and_records_bad_ones(tmp_path):
    paths = make_images(tmp_path / "in", 4)
    corrupt, empty = tmp_path / "in" / "corrupt.png", tmp_path / "in" / "empty.jpg"
    corrupt.write_text("not an image")
    empty.write_bytes(b"")
    output = tmp_path / "out.jsonl"
    files = paths + [corrupt, empty]

    summary = run_batch(SizeEngine(), files, output, "caption", options={"length": "short"})

    records = {record["path"]: record for record in read_records(output)}
    assert summary.answered == 6 and summary.failed == 2 and not summary.interrupted
    assert records.keys() == {str(path.absolute()) for path in files}
    first = records[str(paths[0].absolute())]
    assert first["output"] == "40x30" and first["error"] is None and first["task"] == "caption"
    assert first["model"] == "size engine" and first["timings"]["total_ms"] >= 0
    assert "corrupt" in records[str(corrupt.absolute())]["error"]
    assert records[str(empty.absolute())]["output"] is None and "empty" in records[str(empty.absolute())]["error"]


def test_resume_repairs_a_partial_last_line_and_skips_done_images(tmp_path):
    paths = make_images(tmp_path / "in", 5)
    output = tmp_path / "out.jsonl"
    run_batch(SizeEngine(), paths[:3], output, "ocr")
    with output.open("ab") as file:  # what a kill in the middle of a write leaves
        file.write(b'{"path": "' + str(paths[3].absolute()).encode() + b'", "task": "oc')

    summary = run_batch(SizeEngine(), paths, output, "ocr", resume=True)

    assert summary.skipped == 3 and summary.answered == 2
    records = read_records(output)  # every line parses: the partial one is gone
    assert sorted(record["path"] for record in records) == sorted(str(path.absolute()) for path in paths)
    assert run_batch(SizeEngine(), paths, output, "ocr", resume=True).answered == 0


def test_refuses_to_overwrite_mix_tasks_or_read_a_damaged_file(tmp_path):
    paths = make_images(tmp_path / "in", 2)
    output = tmp_path / "out.jsonl"
    run_batch(SizeEngine(), paths, output, "ocr")
    before = output.read_bytes()
    with pytest.raises(EdgevlError, match="already exists: add --resume"):
        run_batch(SizeEngine(), paths, output, "ocr")
    with pytest.raises(EdgevlError, match="holds ocr results"):
        run_batch(SizeEngine(), paths, output, "caption", resume=True)
    assert output.read_bytes() == before
    output.write_bytes(b"garbage\n" + before)
    with pytest.raises(EdgevlError, match="line 1: not a record"):
        read_done(output, "ocr")


def test_mistakes_stop_the_run_before_the_first_image(tmp_path):
    paths = make_images(tmp_path / "in", 2)
    output = tmp_path / "out.jsonl"
    with pytest.raises(EdgevlError, match="ask needs a question"):
        run_batch(SizeEngine(), paths, output, "ask", options={"question": ""})
    reader = SizeEngine()
    reader.tasks = frozenset({"ocr", "table"})
    with pytest.raises(UnsupportedTask, match="needs a vision-language model"):
        run_batch(reader, paths, output, "caption")
    assert not output.exists()


def test_an_unavailable_engine_stops_the_run_and_resume_finishes_it(tmp_path):
    paths = make_images(tmp_path / "in", 5)
    output = tmp_path / "out.jsonl"
    with pytest.raises(EngineUnavailable):
        run_batch(SizeEngine(fail_on="42"), paths, output, "ocr")  # the third image
    assert len(read_records(output)) == 2
    run_batch(SizeEngine(), paths, output, "ocr", resume=True)
    assert len(read_records(output)) == 5 and all(record["error"] is None for record in read_records(output))


def test_concurrent_requests_answer_each_image_exactly_once(tmp_path):
    paths = make_images(tmp_path / "in", 24)
    output = tmp_path / "out.jsonl"
    engine = SizeEngine(delay=0.02)
    summary = run_batch(engine, paths + paths[:3], output, "ocr", concurrency=4)
    assert summary.answered == 24 and engine.most_active == 4
    assert sorted(record["path"] for record in read_records(output)) == sorted(str(p.absolute()) for p in paths)


def test_ctrl_c_finishes_the_images_in_flight(tmp_path):
    paths = make_images(tmp_path / "in", 10)
    output = tmp_path / "out.jsonl"

    class CtrlCOnThirdImage(SizeEngine):
        def stream(self, request: Request) -> Iterator[str]:
            if request.images[0].width == 42:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)  # the signal arrives while this image is being answered
            yield from super().stream(request)

    summary = run_batch(CtrlCOnThirdImage(), paths, output, "ocr")
    assert summary.interrupted and summary.answered == 3
    assert [record["output"] for record in read_records(output)] == ["40x30", "41x30", "42x30"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_cli_refusals_are_one_line_errors(tmp_path, capsys):
    paths = make_images(tmp_path / "in", 2)
    output = tmp_path / "out.jsonl"
    assert main(["batch", str(tmp_path / "in"), "--task", "caption", "-o", str(output)]) == 1
    assert "needs a vision-language model" in capsys.readouterr().err and not output.exists()
    assert main(["batch", str(paths[0]), "-o", str(output), "--concurrency", "4"]) == 1
    assert "--concurrency needs --endpoint" in capsys.readouterr().err
    assert main(["batch", str(tmp_path / "in"), "-o", str(output), "--ext", "webp"]) == 1
    assert "no images (webp)" in capsys.readouterr().err


@pytest.mark.slow
def test_memory_stays_flat_over_hundreds_of_images(qwen2vl_gguf, tmp_path):
    from edgevl.engines.llamacpp import LlamaCppEngine

    paths = make_images(tmp_path / "in", 300, first_width=48)
    output = tmp_path / "out.jsonl"
    rss = {}

    def measure(record: dict) -> None:
        count = len(rss.setdefault("counts", [])) + 1
        rss["counts"].append(count)
        if count in (30, 300):
            rss[count] = rss_bytes()

    with LlamaCppEngine(qwen2vl_gguf("f16", "f16"), threads=1) as engine:
        started = time.perf_counter()
        summary = run_batch(engine, paths, output, "ocr", options={"max_tokens": 2}, on_record=measure)
        elapsed = time.perf_counter() - started
    assert summary.answered == 300 and summary.failed == 0
    print(f"300 images in {elapsed:.1f} s; RSS after 30: {rss[30] / 1e6:.1f} MB, after 300: {rss[300] / 1e6:.1f} MB")
    assert rss[300] <= rss[30] * 1.05


@pytest.mark.slow
def test_resume_after_kills_at_random_moments(qwen2vl_gguf, tmp_path):
    """kill -9 the CLI at random moments, resume each time: in the end every image is in the file exactly once."""
    paths = make_images(tmp_path / "in", 60)
    (tmp_path / "in" / "part0" / "corrupt.png").write_text("not an image")
    output = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "edgevl.cli", "batch", str(tmp_path / "in"), "-o", str(output), "--resume",
               "--model", str(qwen2vl_gguf("f16", "f16")), "--threads", "1", "--max-tokens", "2"]
    moments = random.Random(7)
    kills = 0
    for _ in range(8):
        lines_before = _line_count(output)
        wanted = moments.randint(1, 6)  # new records to wait for: kills land early, late, everywhere in a run
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            if _line_count(output) >= lines_before + wanted:
                time.sleep(moments.uniform(0, 0.01))  # and at any point of a request or a write
                break
            time.sleep(0.002)
        if process.poll() is None:
            process.kill()
            kills += 1
        process.wait(timeout=60)
    final = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr

    records = read_records(output)
    expected = sorted(str(path.absolute()) for path in paths + [tmp_path / "in" / "part0" / "corrupt.png"])
    assert sorted(record["path"] for record in records) == expected  # no loss, no duplicates
    assert [record["path"].endswith("corrupt.png") for record in records if record["error"]] == [True]
    print(f"{kills} kills; {len(records)} records")
    assert kills >= 3


def _line_count(output: Path) -> int:
    return output.read_bytes().count(b"\n") if output.exists() else 0


def test_records_export_as_text_jsonl_markdown_and_csv():
    from edgevl.batch_export import render_records

    records = [{"path": "/scans/a.png", "task": "ocr", "output": "Hello\n", "error": None},
               {"path": "/scans/b.png", "task": "ocr", "output": None, "error": "b.png: the file is empty"}]
    assert render_records(records, "txt") == ("==> /scans/a.png <==\nHello\n\n"
                                              "==> /scans/b.png <==\n[b.png: the file is empty]\n\n")
    assert render_records(records, "md") == "## a.png\n\nHello\n\n## b.png\n\n*b.png: the file is empty*\n\n"
    assert render_records(records, "csv").splitlines() == [
        "path,task,output,error", '/scans/a.png,ocr,"Hello', '",', "/scans/b.png,ocr,,b.png: the file is empty"]
    assert [json.loads(line)["path"] for line in render_records(records, "jsonl").splitlines()] == [
        "/scans/a.png", "/scans/b.png"]
    with pytest.raises(ValueError, match="choose one of txt, jsonl, md, csv"):
        render_records(records, "pdf")
