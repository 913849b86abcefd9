"""`edgevl serve` against hostile and careless clients: every mistake is a 4xx with a JSON error and no traceback,
cross-site and rebinding requests are refused, limits hold before anything is decoded, slow and vanished
clients lose their slot at once."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator

import httpx
import pytest
from PIL import Image
from test_server import SETTINGS, EchoEngine, chat, running_server

from edgevl.server import ServerSettings, parse_chat_request

LIMITS = replace(SETTINGS, max_request_bytes=300_000, max_image_pixels=1_000_000, max_images=3,
                 max_request_pixels=1_500_000)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("served")
    (folder / "ok.png").write_bytes(png(Image.new("RGB", (40, 30), "white")))
    (folder / "folder.png").mkdir()
    return folder


@pytest.fixture(scope="module")
def server(files) -> Iterator[str]:
    with running_server(EchoEngine(), replace(LIMITS, local_files=files)) as url:
        yield url


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def with_image(url: str, text: str = "hi") -> dict:
    return {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                      {"type": "text", "text": text}]}]}


SMALL = Image.new("RGB", (32, 24), "white")
#: a PNG header that announces 30000 x 30000 pixels, with almost no data behind it
BOMB = png(Image.new("1", (30000, 30000)))
TRUNCATED = png(Image.effect_noise((200, 200), 50).convert("RGB"))[:400]
DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b"{\"a\":" * 30_000 + b"1" + b"}" * 30_000

# (id, body: dict | bytes | callable(files) -> dict, expected status, part of the message)
BAD_BODIES: list[tuple[str, Any, int, str]] = [
    ("not-json", b"{nope", 400, "not valid JSON"),
    ("empty-body", b"", 400, "not valid JSON"),
    ("invalid-utf8", b'{"messages": "\xff\xfe"}', 400, "not valid JSON"),
    ("deep-array", DEEP, 400, "nested too deeply"),
    ("deep-object", DEEP_OBJECT, 400, "nested too deeply"),
    ("huge-integer", b'{"seed": 1' + b"0" * 5000 + b"}", 400, "not valid JSON"),
    ("json-array", b"[]", 400, "must be a JSON object"),
    ("json-string", b'"hello"', 400, "must be a JSON object"),
    ("json-null", b"null", 400, "must be a JSON object"),
    ("json-number", b"42", 400, "must be a JSON object"),
    ("no-messages", {}, 400, "messages must be a non-empty list"),
    ("messages-null", {"messages": None}, 400, "messages must be a non-empty list"),
    ("messages-empty", {"messages": []}, 400, "messages must be a non-empty list"),
    ("messages-string", {"messages": "hi"}, 400, "messages must be a non-empty list"),
    ("message-string", {"messages": ["hi"]}, 400, "must be an object with role and content"),
    ("role-assistant", {"messages": [{"role": "assistant", "content": "hi"}]}, 400, "not supported"),
    ("role-missing", {"messages": [{"content": "hi"}]}, 400, "not supported"),
    ("role-list", {"messages": [{"role": [], "content": "hi"}]}, 400, "not supported"),
    ("content-number", {"messages": [{"role": "user", "content": 5}]}, 400, "must be a string or a list"),
    ("content-null", {"messages": [{"role": "user", "content": None}]}, 400, "must be a string or a list"),
    ("part-number", {"messages": [{"role": "user", "content": [5]}]}, 400, "must be a text or image_url part"),
    ("part-video", {"messages": [{"role": "user", "content": [{"type": "video"}]}]}, 400, "text or image_url"),
    ("part-text-not-string", {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}, 400,
     "text or image_url"),
    ("system-image", {"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": "x"}]},
                                   {"role": "user", "content": "hi"}]}, 400, "must be a text part"),
    ("lone-surrogate", {"messages": [{"role": "user", "content": "\ud800"}]}, 400, "not valid Unicode"),
    ("no-text", chat(SMALL), 400, "no text"),
    ("ocr-without-image", chat(None, "hi", edgevl_task="ocr"), 400, "needs an image"),
    ("task-unknown", chat(SMALL, "hi", edgevl_task="draw"), 400, "edgevl_task must be one of"),
    ("task-number", chat(SMALL, "hi", edgevl_task=3), 400, "edgevl_task must be one of"),
    ("n-2", chat(SMALL, "hi", n=2), 400, "n must be 1"),
    ("max-tokens-string", chat(SMALL, "hi", max_tokens="10"), 400, "max_tokens must be an integer"),
    ("max-tokens-bool", chat(SMALL, "hi", max_tokens=True), 400, "max_tokens must be an integer"),
    ("max-tokens-zero", chat(SMALL, "hi", max_tokens=0), 400, "max_tokens must be between"),
    ("max-tokens-negative", chat(SMALL, "hi", max_tokens=-5), 400, "max_tokens must be between"),
    ("max-tokens-huge", chat(SMALL, "hi", max_tokens=10**12), 400, "max_tokens must be between"),
    ("max-tokens-float", chat(SMALL, "hi", max_tokens=1.5), 400, "max_tokens must be an integer"),
    ("max-completion-tokens", chat(SMALL, "hi", max_completion_tokens=-1), 400, "max_completion_tokens"),
    ("temperature-high", chat(SMALL, "hi", temperature=5), 400, "temperature must be between"),
    ("temperature-negative", chat(SMALL, "hi", temperature=-0.1), 400, "temperature must be between"),
    ("temperature-nan", b'{"temperature": NaN, "messages": [{"role": "user", "content": "hi"}]}', 400,
     "temperature must be between"),
    ("temperature-infinity", b'{"temperature": Infinity, "messages": [{"role": "user", "content": "hi"}]}', 400,
     "temperature must be between"),
    ("top-p-zero", chat(SMALL, "hi", top_p=0), 400, "top_p must be between"),
    ("top-p-string", chat(SMALL, "hi", top_p="1"), 400, "top_p must be a number"),
    ("seed-negative", chat(SMALL, "hi", seed=-1), 400, "seed must be between"),
    ("seed-huge", chat(SMALL, "hi", seed=2**64), 400, "seed must be between"),
    ("stream-string", chat(SMALL, "hi", stream="yes"), 400, "stream must be true or false"),
    ("stop-number", chat(SMALL, "hi", stop=1), 400, "stop must be a string"),
    ("stop-list-of-numbers", chat(SMALL, "hi", stop=[1]), 400, "stop must be a string"),
    ("stop-too-many", chat(SMALL, "hi", stop=list("abcde")), 400, "at most 4"),
    ("image-url-number", with_image(5), 400, "image_url must be"),  # type: ignore[arg-type]
    ("image-url-object-without-url", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"link": "x"}}, {"type": "text", "text": "hi"}]}]},
     400, "image_url must be"),
    ("data-uri-not-base64", with_image("data:image/png,abc"), 400, "must be base64"),
    ("data-uri-bad-base64", with_image("data:image/png;base64,@@@"), 400, "not valid base64"),
    ("data-uri-empty", with_image("data:image/png;base64,"), 400, "empty"),
    ("data-uri-text", with_image(b64(b"hello, not an image")), 400, "not an image format"),
    ("data-uri-truncated-png", with_image(b64(TRUNCATED)), 400, "corrupt or truncated"),
    ("image-bomb", with_image(b64(BOMB)), 400, "pixels"),
    ("image-over-the-limit", with_image(b64(png(Image.new("L", (1200, 1000))))), 400, "more than the 1 MP limit"),
    ("too-many-images", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": b64(png(SMALL))}}] * 4 + [{"type": "text", "text": "hi"}]}]},
     400, "more than 3 images"),
    ("too-many-pixels-together", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": b64(png(Image.new("L", (1000, 800))))}}] * 2
        + [{"type": "text", "text": "hi"}]}]}, 400, "megapixels together"),
    ("http-url", with_image("https://example.com/a.png"), 400, "not fetched"),
    ("file-nul-byte", lambda files: with_image(f"{files}/ok\x00.png"), 400, "not a usable file path"),
    ("file-url-nul-byte", lambda files: with_image(f"file://{files}/\x00"), 400, "not a usable file path"),
    ("file-outside", with_image("/etc/passwd"), 403, "outside the folder"),
    ("file-dotdot", lambda files: with_image(f"{files}/../../etc/passwd"), 403, "outside the folder"),
    ("file-missing", lambda files: with_image(f"{files}/missing.png"), 400, "no such file"),
    ("file-is-folder", lambda files: with_image(f"{files}/folder.png"), 400, "is a folder"),
    ("ftp-url", with_image("ftp://example.com/a.png"), 403, "outside the folder"),
]


def post(url: str, body: Any, headers: dict[str, str] | None = None, **kwargs) -> httpx.Response:
    headers = {"Content-Type": "application/json", **(headers or {})}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}/chat/completions", content=content, headers=headers, timeout=60, **kwargs)


def assert_json_error(response: httpx.Response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    assert fragment in message and "\n" not in message and "Traceback" not in message


@pytest.fixture
def no_tracebacks(caplog) -> Iterator[None]:
    """Fails the test if anything was logged with a traceback or at ERROR."""
    caplog.set_level(logging.INFO)
    yield
    bad = [record for record in caplog.records if record.exc_info or record.levelno >= logging.ERROR]
    assert not bad, [record.getMessage() for record in bad]


@pytest.mark.parametrize("case", BAD_BODIES, ids=[case[0] for case in BAD_BODIES])
def test_bad_request_bodies_get_a_4xx_json_error(server, files, no_tracebacks, case):
    _, body, status, fragment = case
    assert_json_error(post(server, body(files) if callable(body) else body), status, fragment)


BAD_HEADERS = [
    ("text-plain", {"Content-Type": "text/plain"}, 415, "must be JSON"),
    ("form", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "must be JSON"),
    ("multipart", {"Content-Type": "multipart/form-data; boundary=x"}, 415, "must be JSON"),
    ("xml", {"Content-Type": "application/xml"}, 415, "must be JSON"),
    ("json-lookalike", {"Content-Type": "application/jsonp"}, 415, "must be JSON"),
    ("no-content-type", {"Content-Type": ""}, 415, "must be JSON"),
    ("rebound-name", {"Host": "attacker.example"}, 421, "answers only to"),
    ("rebound-name-with-port", {"Host": "attacker.example:8088"}, 421, "answers only to"),
    ("loopback-lookalike", {"Host": "127.0.0.1.attacker.example"}, 421, "answers only to"),
    ("other-ipv6", {"Host": "[::2]:80"}, 421, "answers only to"),
    ("broken-ipv6", {"Host": "[::1"}, 421, "answers only to"),
    ("empty-host", {"Host": ""}, 421, "answers only to"),
    ("text-plain-and-rebound", {"Host": "attacker.example", "Content-Type": "text/plain"}, 421, "answers only to"),
    ("declared-too-large", {"Content-Length": "999999999"}, 413, "larger than this server's limit"),
]


@pytest.mark.parametrize("case", BAD_HEADERS, ids=[case[0] for case in BAD_HEADERS])
def test_cross_site_and_rebinding_requests_are_refused(server, no_tracebacks, case):
    _, headers, status, fragment = case
    body = json.dumps(chat(SMALL, "hi")).encode()
    if "Content-Length" in headers:  # a lie httpx will not send: write the request by hand
        answer = raw_exchange(server, request_head(server, len(body), headers) + body)
        assert answer.startswith(f"HTTP/1.1 {status}".encode()) and fragment.encode() in answer
        return
    assert_json_error(post(server, body, headers), status, fragment)


def test_loopback_names_are_answered_and_other_paths_answer_json(server, no_tracebacks):
    for host in ("localhost:1234", "127.0.0.1", "[::1]:8088", "LOCALHOST"):
        assert post(server, chat(SMALL, "hello"), {"Host": host}).status_code == 200, host
    assert httpx.get(f"{server}/models", headers={"Host": "attacker.example"}).status_code == 421
    assert httpx.get(server.removesuffix("/v1") + "/health", headers={"Host": "evil.example"}).status_code == 421
    assert_json_error(httpx.get(f"{server}/chat/completions"), 405, "Method Not Allowed")
    assert_json_error(httpx.get(f"{server}/nothing-here"), 404, "Not Found")


def test_a_body_over_the_limit_without_content_length_is_cut_off(server, no_tracebacks):
    def chunks() -> Iterator[bytes]:
        yield b'{"messages": "'
        for _ in range(100):
            yield b"x" * 10_000

    response = httpx.post(f"{server}/chat/completions", content=chunks(), timeout=60,
                          headers={"Content-Type": "application/json"})
    assert_json_error(response, 413, "larger than this server's limit")


def test_the_bind_decides_the_host_check():
    settings = ServerSettings(model_name="m")
    assert settings.for_bind("127.0.0.1").allowed_hosts and settings.for_bind("::1").allowed_hosts
    assert settings.for_bind("localhost").allowed_hosts
    assert settings.for_bind("0.0.0.0").allowed_hosts is None  # reached under names edgevl cannot know
    assert replace(settings, api_key="k").for_bind("127.0.0.1").allowed_hosts is None  # the key protects it


def test_images_are_counted_and_sized_before_any_is_decoded(monkeypatch):
    decoded = []
    monkeypatch.setattr("edgevl.server.load_image", lambda *args, **kwargs: decoded.append(args))
    # the attack of the issue: eight 16-megapixel PNGs in a request of a few hundred kB
    big = b64(png(Image.new("1", (4000, 4000))))
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": big}}] * 8
                          + [{"type": "text", "text": "hi"}]}]}
    with pytest.raises(Exception, match="megapixels together"):
        parse_chat_request(body, EchoEngine(), replace(SETTINGS, max_image_pixels=20_000_000))
    assert decoded == []


# ---- raw connections: timeouts and clients that leave ------------------------------------------------------------

def request_head(url: str, length: int, headers: dict[str, str] | None = None) -> bytes:
    fields = {"Host": "127.0.0.1", "Content-Type": "application/json", "Content-Length": str(length),
              **(headers or {})}
    return ("POST /v1/chat/completions HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
            + "\r\n").encode()


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").removesuffix("/v1").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def raw_exchange(url: str, data: bytes) -> bytes:
    with connect(url) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and b'"}}' in answer:
                break
        return answer


def health(url: str) -> dict:
    return httpx.get(url.removesuffix("/v1") + "/health", timeout=10).json()


def wait_until(condition: Callable[[], bool], seconds: float = 10) -> float:
    """How long `condition` took to become true (fails after `seconds`)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, "timed out"
        time.sleep(0.01)
    return time.monotonic() - started


def test_slow_headers_and_slow_bodies_time_out(caplog):
    caplog.set_level(logging.WARNING)
    settings = replace(SETTINGS, header_timeout=0.5, body_timeout=0.5)
    with running_server(EchoEngine(), settings) as url:
        idle, dripping = connect(url), connect(url)
        dripping.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        assert idle.recv(100) == b"" and dripping.recv(100) == b""  # closed by the server
        assert time.monotonic() - started < 5
        slow_body = connect(url)
        slow_body.sendall(request_head(url, 1000) + b'{"messages": ')
        answer = b""
        while chunk := slow_body.recv(65536):  # the server closes after its answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5 s" in answer
        assert wait_until(lambda: health(url)["requests"] == 0) < 5
        for connection in (idle, dripping, slow_body):
            connection.close()
    dropped = [record for record in caplog.records if "no complete request headers" in record.getMessage()]
    assert len(dropped) == 2 and not any(record.exc_info for record in caplog.records)


def test_clients_that_hang_up_free_their_slot_at_once(caplog):
    """The issue's case: three clients sent a request and hung up while it waited; new ones got 429 for 12 s."""
    caplog.set_level(logging.WARNING)
    gate = threading.Event()
    with running_server(EchoEngine(gate), replace(SETTINGS, queue_size=3)) as url:
        body = json.dumps(chat(SMALL, "waiting")).encode()
        holder = threading.Thread(target=post, args=(url, chat(SMALL, "first")))
        holder.start()  # runs on the engine, held by the gate
        wait_until(lambda: health(url)["requests"] == 1)
        leavers = [connect(url) for _ in range(3)]
        for connection in leavers:
            connection.sendall(request_head(url, len(body)) + body)
        wait_until(lambda: health(url)["requests"] == 4)
        for connection in leavers:
            connection.close()
        assert wait_until(lambda: health(url)["requests"] == 1) < 2  # not when the engine reaches them
        uploader = connect(url)  # hangs up in the middle of its body
        uploader.sendall(request_head(url, len(body)) + body[:100])
        wait_until(lambda: health(url)["requests"] == 2)
        uploader.close()
        assert wait_until(lambda: health(url)["requests"] == 1) < 2
        gate.set()
        holder.join(timeout=30)
        assert post(url, chat(SMALL, "after")).json()["choices"][0]["message"]["content"] == "after "
    gone = [record.getMessage() for record in caplog.records if "went away" in record.getMessage()]
    assert len(gone) == 4, gone  # one line per client, no traceback
    assert sum("while sending its request" in line for line in gone) == 1
    assert not any(record.exc_info for record in caplog.records)


def test_a_client_that_leaves_mid_stream_is_one_log_line(caplog):
    caplog.set_level(logging.WARNING)
    with running_server(EchoEngine()) as url, httpx.Client(timeout=60) as client:
        body = chat(SMALL, "forever and ever", stream=True)
        with client.stream("POST", f"{url}/chat/completions", json=body) as response:
            next(response.iter_lines())  # read a little, then hang up
        wait_until(lambda: health(url)["requests"] == 0)
    gone = [record.getMessage() for record in caplog.records if "went away" in record.getMessage()]
    assert len(gone) == 1 and "while its answer streamed" in gone[0]
    assert not any(record.exc_info for record in caplog.records)
