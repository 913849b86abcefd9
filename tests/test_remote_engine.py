"""The remote engine against a real `edgevl serve` (a subprocess on a free loopback port), and against a flaky
stand-in server for retries and failures."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from collections.abc import Iterator

import pytest
from conftest import noise_image
from edgevl.drawing import render_table, render_text

from edgevl.api import open_engine, run_task
from edgevl.batch import run_batch
from edgevl.engines.remote import RemoteEngine
from edgevl.errors import EdgevlError, EngineUnavailable
from edgevl.request import Request, Sampling
from edgevl.testing.server import edgevl_serve

KEY = "test-key"


@pytest.fixture(scope="module")
def classic_endpoint() -> Iterator[str]:
    with edgevl_serve("--api-key", KEY, "--threads", "1") as url:
        yield url


def test_tasks_through_a_served_embedded_engine(classic_endpoint):
    lines = ["Remote reading works", "Line two: 42"]
    with open_engine(endpoint=classic_endpoint, api_key=KEY) as engine:
        assert engine.speaks_edgevl and engine.family == "classic" and engine.tasks == {"ocr", "table"}
        assert run_task(engine, "ocr", [render_text(lines)]).text == "\n".join(lines)
        table = run_task(engine, "table", [render_table([["Name", "Qty"], ["Pear", "10"]])])
        assert table.render("csv").splitlines() == ["Name,Qty", "Pear,10"]
        with pytest.raises(EdgevlError, match="HTTP 400: .*does ocr and table only"):
            run_task(engine, "ask", [render_text(lines)], question="Why?")


def test_the_reading_order_goes_to_the_server(classic_endpoint):
    wrapped = render_text(["This is a long sentence that", "wraps onto a second line."], line_spacing=1.3)
    with open_engine(endpoint=classic_endpoint, api_key=KEY) as engine:
        joined = run_task(engine, "ocr", [wrapped], layout="paragraphs").text
        lines = run_task(engine, "ocr", [wrapped], layout="raw").text
    assert joined == "This is a long sentence that wraps onto a second line."
    assert lines == "This is a long sentence that\nwraps onto a second line."


def test_batch_with_concurrent_requests_to_the_server(classic_endpoint, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(8):
        render_text([f"Page {index}"]).save(folder / f"page{index}.png")
    (folder / "broken.png").write_text("not an image")
    output = tmp_path / "out.jsonl"
    with open_engine(endpoint=classic_endpoint, api_key=KEY) as engine:
        summary = run_batch(engine, sorted(folder.iterdir()), output, "ocr", concurrency=4)
    records = {Path(record["path"]).name: record for record in map(json.loads, output.read_text().splitlines())}
    assert summary.answered == 9 and summary.failed == 1 and "not an image" in records["broken.png"]["error"]
    assert all(records[f"page{index}.png"]["output"] == f"Page {index}" for index in range(8))


def test_wrong_key_or_model_fail_when_opening(classic_endpoint):
    with pytest.raises(EdgevlError, match="HTTP 401: wrong API key"):
        open_engine(endpoint=classic_endpoint, api_key="wrong")
    with pytest.raises(EdgevlError, match="does not serve 'other'; it serves: default"):
        open_engine(endpoint=classic_endpoint, api_key=KEY, model_name="other")
    with pytest.raises(EdgevlError, match="give an http"):
        open_engine(endpoint="gpu-box:8000")


@pytest.mark.slow
def test_served_model_answers_as_the_local_one(qwen2vl_gguf):
    """Greedy OCR through edgevl serve (PNG, lossless) gives the local engine's answer token for token."""
    folder = qwen2vl_gguf("f16", "f16")
    image = noise_image(96, 64, seed=5)
    with open_engine(folder, threads=1) as local:
        expected = run_task(local, "ocr", [image], max_tokens=12)
        local_tokens = local.last_stats.prompt_tokens
    with edgevl_serve("--api-key", KEY, "--model", str(folder), "--threads", "1") as url, \
            open_engine(endpoint=url, api_key=KEY) as remote:
        assert remote.model_name == folder.name and remote.family == "qwen2vl"
        assert run_task(remote, "ocr", [image], max_tokens=12) == expected
        assert remote.last_stats.prompt_tokens == local_tokens and remote.last_stats.generated_tokens == 12
        caption = run_task(remote, "caption", [image], max_tokens=6, length="short")  # sent as JPEG
        assert isinstance(caption.text, str)


# ---- retries, against a stand-in server ---------------------------------------------------------------------------

class FlakyServer(ThreadingHTTPServer):
    """Answers /v1/models, and chat completions with `failures` errors (status `fail_status`) before a stream."""

    def __init__(self, failures: int, fail_status: int = 503) -> None:
        super().__init__(("127.0.0.1", 0), FlakyHandler)
        self.failures, self.fail_status = failures, fail_status
        self.chat_requests: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class FlakyHandler(BaseHTTPRequestHandler):
    server: FlakyServer

    def do_GET(self) -> None:
        self._send(200, {"object": "list", "data": [{"id": "vllm-model", "object": "model", "owned_by": "vllm"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.chat_requests.append(body)
        if len(self.server.chat_requests) <= self.server.failures:
            self._send(self.server.fail_status, {"error": {"message": "try again"}}, {"Retry-After": "0"})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for event in ({"choices": [{"delta": {"content": "Hello"}}]}, {"choices": [{"delta": {"content": " there"}}]},
                      {"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 2}}):
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def _send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        headers = {"Content-Type": "application/json", "Content-Length": str(len(data)), **(headers or {})}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def flaky_server(failures: int, fail_status: int = 503) -> Iterator[FlakyServer]:
    server = FlakyServer(failures, fail_status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def ask(engine: RemoteEngine) -> str:
    return "".join(engine.stream(Request("ask", (noise_image(16, 16),), "Hi?", sampling=Sampling(max_tokens=5))))


def test_transient_errors_are_retried_and_plain_servers_get_plain_requests():
    with flaky_server(failures=2) as server, RemoteEngine(server.url, retries=3, backoff=0.01) as engine:
        assert ask(engine) == "Hello there" and len(server.chat_requests) == 3
        assert engine.last_stats.prompt_tokens == 30 and engine.last_stats.generated_tokens == 2
        sent = server.chat_requests[-1]
        assert "edgevl_task" not in sent and sent["model"] == "vllm-model" and sent["max_tokens"] == 5
        assert sent["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_giving_up_and_errors_that_are_not_retried():
    with flaky_server(failures=10) as server, RemoteEngine(server.url, retries=2, backoff=0.01) as engine:
        with pytest.raises(EngineUnavailable, match="HTTP 503: try again .gave up after 3 tries"):
            ask(engine)
        assert len(server.chat_requests) == 3
    with flaky_server(failures=10, fail_status=400) as server, RemoteEngine(server.url, backoff=0.01) as engine:
        with pytest.raises(EdgevlError, match="HTTP 400: try again"):
            ask(engine)
        assert len(server.chat_requests) == 1
    with pytest.raises(EngineUnavailable, match="gave up after 2 tries"):
        RemoteEngine(f"http://127.0.0.1:{_closed_port()}/v1", retries=1, backoff=0.01)


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_cli_commands_with_an_endpoint(classic_endpoint, tmp_path, capsys):
    from edgevl.cli import main

    render_text(["Through the CLI"]).save(tmp_path / "shot.png")
    common = ["--endpoint", classic_endpoint, "--api-key", KEY]
    assert main(["ocr", str(tmp_path / "shot.png"), *common]) == 0
    assert capsys.readouterr().out.strip() == "Through the CLI"
    output = tmp_path / "out.jsonl"
    assert main(["batch", str(tmp_path), "-o", str(output), "--concurrency", "4", *common]) == 0
    assert json.loads(output.read_text())["output"] == "Through the CLI"
