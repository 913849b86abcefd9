"""`edgevl serve` on loopback: concurrent clients, SSE streaming, the embedded engine and a tiny GGUF model, clear
4xx answers to bad requests, a full queue, clients that leave in the middle of an answer."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from conftest import noise_image
from PIL import Image
from edgevl.drawing import render_table, render_text

from edgevl.engines.base import Engine
from edgevl.request import Request
from edgevl.server import EngineWorker, ServerSettings, create_app, uvicorn_config

SETTINGS = ServerSettings(model_name="test-model")
LINES = ["Invoice 2024-118", "Total due: 1,234.50 EUR"]


@contextmanager
def running_server(engine: Engine, settings: ServerSettings = SETTINGS) -> Iterator[str]:
    """The app on a free loopback port, served by uvicorn in a thread; yields the API's base URL."""
    worker = EngineWorker(engine, settings.queue_size)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn_config(create_app(worker, settings), settings))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "the server did not start"
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        worker.close()
        listener.close()


def data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def chat(image: Image.Image | None = None, text: str | None = None, **fields) -> dict:
    content = []
    if image is not None:
        content.append({"type": "image_url", "image_url": {"url": data_uri(image)}})
    if text is not None:
        content.append({"type": "text", "text": text})
    return {"model": "test-model", "messages": [{"role": "user", "content": content}], **fields}


def read_sse(response: httpx.Response) -> tuple[str, list[dict]]:
    """The streamed text and every event, checking the stream ends with [DONE]."""
    events, ended = [], False
    for line in response.iter_lines():
        if line.startswith("data: "):
            if line == "data: [DONE]":
                ended = True
                continue
            events.append(json.loads(line[len("data: "):]))
    assert ended
    text = "".join(choice["delta"].get("content", "") for event in events for choice in event["choices"])
    return text, events


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]["message"]


# ---- the embedded engine ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def classic_server() -> Iterator[str]:
    from edgevl.engines.classic import ClassicOcrEngine

    with ClassicOcrEngine(threads=1) as engine, running_server(engine) as url:
        yield url


def test_embedded_engine_reads_text_and_tables_for_concurrent_clients(classic_server):
    text_image, table_image = render_text(LINES), render_table([["Name", "Qty"], ["Apple", "3"]])

    def ocr(_: int) -> str:
        with httpx.Client(timeout=120) as client:
            response = client.post(f"{classic_server}/chat/completions", json=chat(text_image, edgevl_task="ocr"))
            assert response.status_code == 200, response.text
            return response.json()["choices"][0]["message"]["content"]

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(ocr, range(6)))
    assert answers == ["\n".join(LINES)] * 6
    with httpx.Client(timeout=120) as client:
        request = chat(table_image, edgevl_task="table", stream=True)
        with client.stream("POST", f"{classic_server}/chat/completions", json=request) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            text, events = read_sse(response)
        assert "<td>Apple</td>" in text and events[-1]["choices"][0]["finish_reason"] == "stop"


def test_embedded_engine_takes_the_layout_field(classic_server):
    wrapped = ["A sentence long enough that it", "wraps onto a second line here."]
    image = render_text(wrapped, line_spacing=1.3)
    with httpx.Client(timeout=120) as client:
        def answer(**fields) -> httpx.Response:
            return client.post(f"{classic_server}/chat/completions", json=chat(image, edgevl_task="ocr", **fields))

        assert answer().json()["choices"][0]["message"]["content"] == "\n".join(wrapped)
        joined = answer(edgevl_layout="paragraphs").json()["choices"][0]["message"]["content"]
        assert joined == " ".join(wrapped)
        assert "edgevl_layout must be one of auto, paragraphs, raw" in error_of(answer(edgevl_layout="columns"), 400)


def test_embedded_engine_cannot_caption_and_says_so(classic_server):
    response = httpx.post(f"{classic_server}/chat/completions", json=chat(render_text(LINES), "Describe it"))
    assert "does ocr and table only" in error_of(response, 400)
    models = httpx.get(f"{classic_server}/models").json()["data"]
    assert models[0]["id"] == "test-model" and models[0]["edgevl_tasks"] == ["ocr", "table"]
    assert httpx.get(classic_server.removesuffix("/v1") + "/health").json()["status"] == "ok"


# ---- the tiny GGUF model -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gguf_server(qwen2vl_gguf) -> Iterator[str]:
    from edgevl.engines.llamacpp import LlamaCppEngine

    with LlamaCppEngine(qwen2vl_gguf("f16", "f16"), threads=1) as engine, running_server(engine) as url:
        yield url


@pytest.mark.slow
def test_model_answers_alike_streamed_or_not_for_concurrent_clients(gguf_server):
    request = chat(noise_image(80, 60), "What is in the image?", max_tokens=8, seed=1)

    def ask(stream: bool) -> str:
        with httpx.Client(timeout=120) as client:
            if not stream:
                answer = client.post(f"{gguf_server}/chat/completions", json=request).json()
                assert answer["usage"]["completion_tokens"] == 8 and answer["choices"][0]["finish_reason"] == "length"
                return answer["choices"][0]["message"]["content"]
            body = {**request, "stream": True, "stream_options": {"include_usage": True}}
            with client.stream("POST", f"{gguf_server}/chat/completions", json=body) as response:
                text, events = read_sse(response)
            assert events[-1]["usage"]["completion_tokens"] == 8 and events[-1]["usage"]["prompt_tokens"] > 20
            return text

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, [False, True] * 4))
    assert len(set(answers)) == 1 and answers[0]  # greedy: the same answer every time


@pytest.mark.slow
def test_model_honours_stop_and_runs_tasks(gguf_server):
    image = noise_image(80, 60)
    full = httpx.post(f"{gguf_server}/chat/completions", json=chat(image, "Hi", max_tokens=8), timeout=120)
    text = full.json()["choices"][0]["message"]["content"]
    stop = text[len(text) // 2:][:2]
    cut = httpx.post(f"{gguf_server}/chat/completions", json=chat(image, "Hi", max_tokens=8, stop=[stop]), timeout=120)
    assert cut.json()["choices"][0]["message"]["content"] == text[:text.index(stop)]
    ocr = httpx.post(f"{gguf_server}/chat/completions", json=chat(image, max_tokens=4, edgevl_task="ocr"), timeout=120)
    assert ocr.status_code == 200 and ocr.json()["usage"]["completion_tokens"] == 4


# ---- bad requests ------------------------------------------------------------------------------------------------

class EchoEngine(Engine):
    """Answers with the prompt word by word, over and over if it starts with "forever"; `gate`, when given, holds
    every request until it is set."""

    family = "qwen2vl"
    description = "echo engine"

    def __init__(self, gate: threading.Event | None = None) -> None:
        super().__init__()
        self.gate = gate

    def stream(self, request: Request) -> Iterator[str]:
        if self.gate is not None:
            assert self.gate.wait(timeout=60)
        while True:
            for word in request.prompt.split():
                yield word + " "
                time.sleep(0.001)
            if not request.prompt.startswith("forever"):
                return


def test_bad_requests_get_clear_4xx_answers(tmp_path):
    allowed = tmp_path / "images"
    allowed.mkdir()
    render_text(["ok"]).save(allowed / "ok.png")
    render_text(["secret"]).save(tmp_path / "outside.png")
    settings = replace(SETTINGS, api_key="k3y", max_request_bytes=200_000, max_image_pixels=1_000_000,
                       local_files=allowed)
    image = noise_image(64, 48)
    with running_server(EchoEngine(), settings) as url, httpx.Client(timeout=60) as client:
        def post(body: object, key: str | None = "k3y", **kwargs) -> httpx.Response:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            if isinstance(body, (bytes, str)):
                headers["Content-Type"] = "application/json"
                return client.post(f"{url}/chat/completions", content=body, headers=headers, **kwargs)
            return client.post(f"{url}/chat/completions", json=body, headers=headers, **kwargs)

        assert post(chat(image, "say hello")).json()["choices"][0]["message"]["content"] == "say hello "
        assert "missing API key" in error_of(post(chat(image, "hi"), key=None), 401)
        assert "wrong API key" in error_of(post(chat(image, "hi"), key="nope"), 401)
        assert error_of(client.get(f"{url}/models"), 401)
        assert "larger than this server's limit" in error_of(post(chat(noise_image(400, 400), "hi")), 413)
        big = Image.new("RGB", (1500, 1000), "white")  # compresses well: a small request, too many pixels
        assert "more than the 1 MP limit" in error_of(post(chat(big, "hi")), 400)
        assert "not valid JSON" in error_of(post(b"{nope"), 400)
        assert "messages must be a non-empty list" in error_of(post({"messages": "hi"}), 400)
        assert "max_tokens must be an integer" in error_of(post(chat(image, "hi", max_tokens="10")), 400)
        assert "temperature must be between" in error_of(post(chat(image, "hi", temperature=5)), 400)
        assert "stream must be true or false" in error_of(post(chat(image, "hi", stream="yes")), 400)
        assert "stop must be a string" in error_of(post(chat(image, "hi", stop=[1])), 400)
        assert "edgevl_task must be one of" in error_of(post(chat(image, "hi", edgevl_task="draw")), 400)
        assert "n must be 1" in error_of(post(chat(image, "hi", n=3)), 400)
        assert "no text" in error_of(post(chat(image)), 400)
        assert "needs an image" in error_of(post(chat(None, "hi", edgevl_task="ocr")), 400)
        assert "not supported" in error_of(post({"messages": [{"role": "assistant", "content": "hi"}]}), 400)
        part = {"role": "user", "content": [{"type": "video", "video": "x"}]}
        assert "must be a text or image_url part" in error_of(post({"messages": [part]}), 400)

        def with_url(url_text: str) -> dict:
            return {"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url_text}}, {"type": "text", "text": "hi"}]}]}

        assert "not valid base64" in error_of(post(with_url("data:image/png;base64,@@@")), 400)
        assert "not an image format" in error_of(post(with_url("data:image/png;base64,aGVsbG8=")), 400)
        assert "not fetched" in error_of(post(with_url("https://example.com/a.png")), 400)
        assert "outside the folder" in error_of(post(with_url(str(tmp_path / "outside.png"))), 403)
        linked = allowed / "link.png"
        linked.symlink_to(tmp_path / "outside.png")
        assert "outside the folder" in error_of(post(with_url(f"file://{linked}")), 403)
        assert post(with_url(f"file://{allowed / 'ok.png'}")).status_code == 200

    with running_server(EchoEngine()) as url:  # no --local-files: files are refused
        response = httpx.post(f"{url}/chat/completions", json=with_url(str(allowed / "ok.png")))
        assert "local files are refused" in error_of(response, 400)


def test_a_full_queue_answers_429_at_once():
    gate = threading.Event()
    with running_server(EchoEngine(gate), replace(SETTINGS, queue_size=1)) as url, ThreadPoolExecutor(2) as pool:
        request = chat(noise_image(32, 32), "waiting in line")
        held = [pool.submit(httpx.post, f"{url}/chat/completions", json=request, timeout=60) for _ in range(2)]
        deadline = time.monotonic() + 30
        while httpx.get(url.removesuffix("/v1") + "/health").json()["requests"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        refused = httpx.post(f"{url}/chat/completions", json=request, timeout=10)
        assert "server busy" in error_of(refused, 429) and refused.headers["retry-after"] == "1"
        gate.set()
        assert [future.result().status_code for future in held] == [200, 200]


def test_a_client_that_leaves_mid_stream_frees_the_engine():
    with running_server(EchoEngine()) as url, httpx.Client(timeout=60) as client:
        body = chat(noise_image(32, 32), "forever and ever", stream=True)
        with client.stream("POST", f"{url}/chat/completions", json=body) as response:
            next(response.iter_lines())  # read a little, then hang up
        # the engine runs one request at a time: this one is answered only if the endless one was stopped
        answer = client.post(f"{url}/chat/completions", json=chat(noise_image(32, 32), "next one"))
        assert answer.json()["choices"][0]["message"]["content"] == "next one "
