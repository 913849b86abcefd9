"""`edgevl serve`: one loaded model behind an OpenAI-compatible HTTP API (chat completions with images, SSE).

    edgevl serve --model ~/edgevl-models/qwen2-vl-2b-q4 --port 8088
    curl http://127.0.0.1:8088/v1/chat/completions -d '{"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}},
        {"type": "text", "text": "What is the total?"}]}], "stream": true}'

Endpoints: POST /v1/chat/completions, GET /v1/models, GET /health (no key needed, for load balancers).

Engines are not thread-safe, so one thread (`EngineWorker`) runs every request on the one model, one after the
other; at most `queue_size` requests wait for it and the next ones get 429 at once instead of piling up.

The user's text is the prompt (task "ask"). The extension field `"edgevl_task": "ocr" | "table" | "caption" |
"ask"` names the task instead: engines use it to choose the image budget, and the embedded OCR engine, which has
no prompt, to choose what to do; a message without text gets the task's own prompt. `edgevl batch --endpoint`
drives this server that way. Answers are the engine's raw text, as from a local engine: the client's task
parses them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from edgevl.engines.base import Engine
from edgevl.engines.remote import EDGEVL_OWNER
from edgevl.errors import EdgevlError
from edgevl.images import load_image
from edgevl.request import Request, Sampling, Stats
from edgevl.tasks import TASKS, get_task

log = logging.getLogger(__name__)
MAX_STOP_STRINGS = 4  # as OpenAI's API


@dataclass(frozen=True)
class ServerSettings:
    model_name: str
    api_key: str | None = None
    max_request_bytes: int = 50_000_000
    max_image_pixels: int = 50_000_000
    queue_size: int = 32
    #: image parts may name files under this folder (resolved, so links cannot lead out); None refuses files
    local_files: Path | None = None
    max_tokens_limit: int = 16384


class ApiError(Exception):
    """An answer other than 200, in OpenAI's error format."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "code": self.status}}


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


# ---- the engine thread ------------------------------------------------------------------------------------------

@dataclass
class Job:
    """One request on its way through the engine thread; `items` receives text pieces, then a Stats or an error."""

    request: Request
    items: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)


class EngineWorker:
    """Runs requests on one engine in one thread of its own, one at a time; at most `queue_size` wait."""

    def __init__(self, engine: Engine, queue_size: int) -> None:
        self.engine = engine
        self.capacity = queue_size + 1  # the one running, and those waiting
        self.admitted = 0  # only touched on the event loop's thread
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgevl-engine")
        self._closing = threading.Event()

    async def run(self, request: Request) -> AsyncGenerator[str | Stats, None]:
        """The answer's pieces, then the request's Stats. Leaving early (a client that went away) stops the
        generation at its next piece, so the engine moves on to the next request."""
        if self.admitted >= self.capacity:
            raise ApiError(429, f"server busy: {self.admitted - 1} requests are waiting already (the limit); "
                                "retry later", "server_busy", {"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        job = Job(request)
        self.admitted += 1
        done = loop.run_in_executor(self._executor, self._produce, job, loop)
        done.add_done_callback(lambda _: self._release())
        try:
            while True:
                item = await job.items.get()
                if isinstance(item, BaseException):
                    raise _api_error(item)
                yield item
                if isinstance(item, Stats):
                    return
        finally:
            job.cancelled.set()

    def _produce(self, job: Job, loop: asyncio.AbstractEventLoop) -> None:
        """In the engine thread: stream the request into the job's queue."""
        def put(item: object) -> None:
            loop.call_soon_threadsafe(job.items.put_nowait, item)

        if job.cancelled.is_set():  # its client went away while it waited
            return
        try:
            with closing(self.engine.stream(job.request)) as pieces:
                for piece in pieces:
                    if job.cancelled.is_set() or self._closing.is_set():
                        return
                    put(piece)
            put(self.engine.last_stats)
        except Exception as error:  # handed to the request's coroutine, which answers with it
            put(error)

    def _release(self) -> None:
        self.admitted -= 1

    def close(self) -> None:
        """Drop waiting requests, stop the running one at its next piece, and wait for the thread."""
        self._closing.set()
        self._executor.shutdown(wait=True, cancel_futures=True)


def _api_error(error: BaseException) -> ApiError:
    if isinstance(error, ApiError):
        return error
    if isinstance(error, EdgevlError):  # the request cannot be answered as asked (too long for the context...)
        return bad_request(str(error))
    log.error("the engine failed", exc_info=error)
    return ApiError(500, f"the engine failed: {type(error).__name__}: {error}", "server_error")


# ---- OpenAI requests -> edgevl requests -------------------------------------------------------------------------

@dataclass(frozen=True)
class ChatRequest:
    request: Request
    stream: bool
    include_usage: bool


def parse_chat_request(body: Any, engine: Engine, settings: ServerSettings) -> ChatRequest:
    """Check an OpenAI chat completion request and turn it into an edgevl Request (ApiError 400 if it is wrong)."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    task = body.get("edgevl_task", "ask")
    if not isinstance(task, str) or task not in TASKS:
        raise bad_request(f"edgevl_task must be one of {', '.join(TASKS)}, not {task!r}")
    tasks = " and ".join(sorted(engine.tasks))
    if task not in engine.tasks:
        raise bad_request(f"this server's engine ({engine.description}) does {tasks} only: set \"edgevl_task\" to "
                          f"one of them, or serve a vision-language model (edgevl serve --model ...) for {task!r}")
    if body.get("n") not in (None, 1):
        raise bad_request("n must be 1: edgevl gives one answer per request")
    # the cheap checks first: images are decoded last
    max_tokens = _field(body, "max_completion_tokens", int, get_task(task).max_tokens(), 1, settings.max_tokens_limit)
    sampling = Sampling(
        max_tokens=_field(body, "max_tokens", int, max_tokens, 1, settings.max_tokens_limit),
        temperature=float(_field(body, "temperature", (int, float), 0.0, 0, 2)),
        top_p=float(_field(body, "top_p", (int, float), 1.0, 0.0001, 1)),
        seed=_field(body, "seed", int, 0, 0, 2**32 - 1),
        stop=_stop_strings(body.get("stop")),
    )
    stream = _field(body, "stream", bool, False)
    options = body.get("stream_options") or {}
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    system, prompt, images = _read_messages(body.get("messages"), settings)
    if not images and task != "ask":
        raise bad_request(f"the {task} task needs an image: add an image_url part to the user message")
    if not prompt:
        if task == "ask":
            raise bad_request("the user message has no text: ask a question, or set edgevl_task")
        prompt = get_task(task).prompt(engine.family)
    return ChatRequest(Request(task, tuple(images), prompt, system, sampling), stream, include_usage)


def _read_messages(messages: Any, settings: ServerSettings) -> tuple[str | None, str, list[Image.Image]]:
    """The system text, the users' text and images (edgevl answers one question: no assistant turns)."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list of {role, content} objects")
    system: str | None = None
    texts: list[str] = []
    images: list[Image.Image] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object with role and content")
        role = message.get("role")
        if role == "system":
            system = "\n".join(_message_parts(message.get("content"), where, settings, images=None))
        elif role == "user":
            texts += _message_parts(message.get("content"), where, settings, images)
        else:
            raise bad_request(f"{where}: role {role!r} is not supported; edgevl answers a single question "
                              "(system and user messages only)")
    return system, "\n".join(texts).strip(), images


def _message_parts(content: Any, where: str, settings: ServerSettings,
                   images: list[Image.Image] | None) -> list[str]:
    """The texts of a message's content; its images are appended to `images` (None: no images allowed here)."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise bad_request(f"{where}.content must be a string or a list of parts")
    texts = []
    for index, part in enumerate(content):
        part_where = f"{where}.content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url" and images is not None:
            images.append(_image_from_part(part.get("image_url"), part_where, settings))
        else:
            allowed = "text" if images is None else "text or image_url"
            raise bad_request(f"{part_where} must be a {allowed} part, like {{\"type\": \"text\", \"text\": \"...\"}}")
    return texts


def _image_from_part(image_url: Any, where: str, settings: ServerSettings) -> Image.Image:
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str):
        raise bad_request(f"{where}: image_url must be {{\"url\": \"data:image/png;base64,...\"}}")
    try:
        if url.startswith("data:"):
            return load_image(_data_uri_bytes(url, where), max_pixels=settings.max_image_pixels)
        if url.startswith(("http://", "https://")):
            raise bad_request(f"{where}: image URLs are not fetched (this server makes no outgoing connections); "
                              "send the image as a data URI")
        return load_image(_local_file(url, where, settings), max_pixels=settings.max_image_pixels)
    except EdgevlError as error:  # ImageError: corrupt, empty, too many pixels
        raise bad_request(f"{where}: {error}") from None


def _data_uri_bytes(url: str, where: str) -> bytes:
    header, comma, data = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise bad_request(f"{where}: an image data URI must be base64, like data:image/png;base64,...")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{where}: the image data URI is not valid base64") from None


def _local_file(url: str, where: str, settings: ServerSettings) -> Path:
    if settings.local_files is None:
        raise bad_request(f"{where}: local files are refused (start the server with --local-files DIR to allow "
                          "files under DIR); send the image as a data URI")
    path = Path(url.removeprefix("file://")).expanduser().resolve()
    if not path.is_relative_to(settings.local_files.resolve()):
        raise ApiError(403, f"{where}: {url} is outside the folder this server reads images from")
    return path


def _field(body: dict[str, Any], name: str, kinds: type | tuple[type, ...], default: Any,
           low: float | None = None, high: float | None = None) -> Any:
    """body[name] checked for type and range; `default` when absent or null."""
    value = body.get(name)
    if value is None:
        return default
    # bool is an int in Python, but `"max_tokens": true` is a mistake
    if not isinstance(value, kinds) or (isinstance(value, bool) and kinds is not bool):
        names: dict[type | tuple[type, ...], str] = {int: "an integer", bool: "true or false"}
        expected = names.get(kinds, "a number")
        raise bad_request(f"{name} must be {expected}, not {json.dumps(value)}")
    # a range is given only for numeric kinds
    if low is not None and high is not None and not low <= cast(float, value) <= high:
        raise bad_request(f"{name} must be between {low:g} and {high:g}, not {value}")
    return value


def _stop_strings(stop: Any) -> tuple[str, ...]:
    stops = [stop] if isinstance(stop, str) else stop or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > MAX_STOP_STRINGS:
        raise bad_request(f"stop must be a string or a list of at most {MAX_STOP_STRINGS} strings")
    return tuple(stops)


# ---- edgevl answers -> OpenAI answers ---------------------------------------------------------------------------

@dataclass
class Completion:
    """The fields every answer object of one request shares."""

    model: str
    max_tokens: int
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    def envelope(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, **fields}

    def finish_reason(self, stats: Stats) -> str:
        return "length" if stats.generated_tokens >= self.max_tokens else "stop"

    def chunk(self, delta: dict[str, str], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return _sse(self.envelope("chat.completion.chunk", choices=[choice]))

    def usage_chunk(self, stats: Stats) -> str:
        return _sse(self.envelope("chat.completion.chunk", choices=[], usage=usage(stats)))


def usage(stats: Stats) -> dict[str, int]:
    return {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.generated_tokens,
            "total_tokens": stats.prompt_tokens + stats.generated_tokens}


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _event_stream(completion: Completion, first: str | Stats, rest: AsyncGenerator[str | Stats, None],
                        include_usage: bool) -> AsyncIterator[str]:
    """SSE events: the role, a chunk per piece, the finish reason, usage if asked, [DONE]. An engine failure
    after the first piece can no longer change the status: it becomes an error event, as vLLM sends it."""
    yield completion.chunk({"role": "assistant", "content": ""})
    item = first
    try:
        while isinstance(item, str):
            yield completion.chunk({"content": item})
            item = await rest.__anext__()
    except ApiError as error:
        yield _sse(error.body())
        return
    finally:
        await rest.aclose()
    yield completion.chunk({}, completion.finish_reason(item))
    if include_usage:
        yield completion.usage_chunk(item)
    yield "data: [DONE]\n\n"


# ---- the application --------------------------------------------------------------------------------------------

def create_app(worker: EngineWorker, settings: ServerSettings) -> Starlette:
    async def chat_completions(http: HttpRequest) -> Response:
        _check_key(http, settings)
        body = await _read_body(http, settings.max_request_bytes)
        # decoding JSON and images takes a while for big ones: in a thread, so that other clients' streams go on
        chat = await run_in_threadpool(lambda: parse_chat_request(_parse_json(body), worker.engine, settings))
        completion = Completion(settings.model_name, chat.request.sampling.max_tokens)
        answer = worker.run(chat.request)
        # Wait for the first piece before answering: a failure until then (a full queue, a prompt too long for
        # the context) still gets its proper status instead of a 200 with an error inside.
        first = await answer.__anext__()
        if chat.stream:
            return StreamingResponse(_event_stream(completion, first, answer, chat.include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        pieces = [first] + [item async for item in answer]
        stats = pieces.pop()
        assert isinstance(stats, Stats), "the worker ends each answer with its Stats"
        message = {"role": "assistant", "content": "".join(piece for piece in pieces if isinstance(piece, str))}
        choice = {"index": 0, "message": message, "finish_reason": completion.finish_reason(stats)}
        return JSONResponse(completion.envelope("chat.completion", choices=[choice], usage=usage(stats)))

    async def models(http: HttpRequest) -> Response:
        _check_key(http, settings)
        model = {"id": settings.model_name, "object": "model", "created": 0, "owned_by": EDGEVL_OWNER,
                 "edgevl_family": worker.engine.family, "edgevl_tasks": sorted(worker.engine.tasks),
                 "edgevl_engine": worker.engine.description}
        return JSONResponse({"object": "list", "data": [model]})

    async def health(http: HttpRequest) -> Response:
        return JSONResponse({"status": "ok", "model": settings.model_name, "requests": worker.admitted,
                             "capacity": worker.capacity})

    async def api_error(http: HttpRequest, error: Exception) -> Response:
        assert isinstance(error, ApiError)
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={ApiError: api_error},
    )


def _check_key(http: HttpRequest, settings: ServerSettings) -> None:
    if settings.api_key is None:
        return
    scheme, _, key = http.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key:
        raise ApiError(401, "missing API key: send the header Authorization: Bearer KEY", "authentication_error")
    if not hmac.compare_digest(key.encode(), settings.api_key.encode()):
        raise ApiError(401, "wrong API key", "authentication_error")


async def _read_body(http: HttpRequest, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to be over the limit, before it is all read."""
    too_large = ApiError(413, f"the request is larger than this server's limit of {limit / 1e6:g} MB "
                              "(edgevl serve --max-request-mb)")
    declared = http.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in http.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as error:
        raise bad_request(f"the request body is not valid JSON ({error})") from None


def serve(worker: EngineWorker, settings: ServerSettings, host: str, port: int,
          on_ready: Callable[[str], None], access_log: bool = False) -> None:
    """Serve until Ctrl+C. The socket is bound first, so that port 0 works and `on_ready` gets the real URL."""
    import uvicorn

    ipv6 = ":" in host
    listener = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        raise EdgevlError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    url_host = f"[{host}]" if ipv6 else host
    on_ready(f"http://{url_host}:{listener.getsockname()[1]}/v1")
    config = uvicorn.Config(create_app(worker, settings), log_level="info" if access_log else "warning",
                            access_log=access_log, timeout_graceful_shutdown=10)
    with listener:
        uvicorn.Server(config).run(sockets=[listener])
