"""`edgevl serve`: one loaded model behind an OpenAI-compatible HTTP API (chat completions with images, SSE).

    edgevl serve --model ~/edgevl-models/qwen2-vl-2b-q4 --port 8088
    curl http://127.0.0.1:8088/v1/chat/completions -H 'Content-Type: application/json' -d '{"messages": [
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}},
            {"type": "text", "text": "What is the total?"}]}], "stream": true}'

Endpoints: POST /v1/chat/completions, GET /v1/models, GET /health (no key needed, for load balancers).

Engines are not thread-safe, so one thread (`EngineWorker`) runs every request on the one model, one after the
other; at most `queue_size` requests wait for it and the next ones get 429 at once instead of piling up.

Hostile or careless clients meet limits, each a 4xx with a JSON error (README.md, "Server limits"): JSON bodies
only; on a loopback bind without a key, loopback Host names only (DNS rebinding); a request is admitted (or gets
429) before its body is read, so at most `queue_size + 1` bodies are in memory; images are counted and sized
from their headers before any is decoded, and decoded in the engine thread, one request at a time; headers and
body must arrive in time; a client that hangs up gives its slot back at once.

The user's text is the prompt (task "ask"). OpenAI's `response_format` (`json_schema` or `json_object`) puts a
JSON schema in the request, which the engine constrains the answer to. The extension field `"edgevl_task": "ocr" |
"table" | "caption" | "ask" | "extract"` names the task instead: engines use it to choose the image budget, and the
embedded OCR engine, which has no prompt, to choose what to do; a message without text gets the task's own prompt.
`edgevl batch --endpoint` drives this server that way. `"edgevl_layout": "auto" | "paragraphs" | "raw"` orders the
embedded engine's text (see `edgevl.layout`; default "auto"). Answers are the engine's raw text, as from a local
engine: the client's task parses them.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, cast
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from edgevl.engines.base import Engine
from edgevl.errors import EdgevlError
from edgevl.images import image_size, load_image
from edgevl.layout import DEFAULT_LAYOUT, LAYOUT_MODES
from edgevl.openai_wire import LAYOUT_FIELD, TASK_FIELD, DataUriError, data_uri_bytes, error_body, model_entry
from edgevl.request import Request, Sampling, Stats
from edgevl.tasks import TASKS, get_task

log = logging.getLogger(__name__)
MAX_STOP_STRINGS = 4  # as OpenAI's API
#: the Host names a loopback server without a key answers to (any other is a DNS-rebinding page's)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class ServerSettings:
    """The server's limits; README.md ("Server limits") documents each with its default."""

    model_name: str
    api_key: str | None = None
    max_request_bytes: int = 50_000_000
    max_image_pixels: int = 50_000_000
    #: per request, counted from the parts and the images' headers before any image is decoded
    max_images: int = 16
    max_request_pixels: int = 50_000_000
    queue_size: int = 32
    #: image parts may name files under this folder (resolved, so links cannot lead out); None refuses files
    local_files: Path | None = None
    max_tokens_limit: int = 16384
    #: Host header names answered; None answers any (set by `for_bind`: loopback without a key gets LOOPBACK_HOSTS)
    allowed_hosts: frozenset[str] | None = LOOPBACK_HOSTS
    #: seconds a connection may take to send its request headers, and then its body
    header_timeout: float = 10.0
    body_timeout: float = 60.0

    def for_bind(self, host: str) -> ServerSettings:
        """The Host check for a server listening on `host`: a loopback server without a key answers only to
        loopback names, so that a web page cannot reach it through DNS rebinding. Other binds are reached under
        names edgevl cannot know; their protection is the key."""
        guarded = is_loopback(host) and not self.api_key
        return replace(self, allowed_hosts=LOOPBACK_HOSTS if guarded else None)


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiError(Exception):
    """An answer other than 200, in OpenAI's error format."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.kind)


class ClientGone(Exception):
    """The client hung up; nobody is left to answer. The message says when."""


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


# ---- the engine thread ------------------------------------------------------------------------------------------

class Job:
    """One admitted request: it holds a slot of the worker from admission (before its body is read) until the
    engine is done with it or its client has gone, whichever comes first. `items` receives text pieces, then a
    Stats or an error. Touched on the event loop's thread only, except `cancelled`."""

    def __init__(self, worker: EngineWorker) -> None:
        self.items: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self._worker: EngineWorker | None = worker

    def release(self) -> None:
        """Give the slot back (once)."""
        if self._worker is not None:
            self._worker.admitted -= 1
            self._worker = None

    def cancel(self) -> None:
        """Nobody waits for the answer: the engine skips or stops it, and its slot is free at once."""
        self.cancelled.set()
        self.release()

    async def next_item(self, client_gone: asyncio.Future | None = None) -> str | Stats:
        """The next piece or the Stats; ClientGone if `client_gone` completes first, the request's error if any."""
        if client_gone is None:
            item = await self.items.get()
        else:
            getter = asyncio.ensure_future(self.items.get())
            await asyncio.wait({getter, client_gone}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                raise ClientGone("while its request waited for the model or was answered")
            item = getter.result()
        if isinstance(item, BaseException):
            raise _api_error(item)
        return item


class EngineWorker:
    """Runs requests on one engine in one thread of its own, one at a time; at most `queue_size` wait."""

    def __init__(self, engine: Engine, queue_size: int) -> None:
        self.engine = engine
        self.capacity = queue_size + 1  # the one running, and those waiting
        self.admitted = 0  # only touched on the event loop's thread
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgevl-engine")
        self._closing = threading.Event()

    def admit(self) -> Job:
        """A slot for a new request, or 429 at once when every slot is taken."""
        if self.admitted >= self.capacity:
            raise ApiError(429, f"server busy: {self.admitted - 1} requests are waiting already (the limit); "
                                "retry later", "server_busy", {"Retry-After": "1"})
        self.admitted += 1
        return Job(self)

    def start(self, job: Job, prepare: Callable[[], Request]) -> None:
        """Queue the job for the engine thread, which calls `prepare()` (decoding the images: so only one
        request's pixels are in memory at a time) and streams the answer into the job."""
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._executor, self._produce, job, prepare, loop)
        done.add_done_callback(lambda _: job.release())

    def _produce(self, job: Job, prepare: Callable[[], Request], loop: asyncio.AbstractEventLoop) -> None:
        """In the engine thread: stream the request into the job's queue."""
        def put(item: object) -> None:
            loop.call_soon_threadsafe(job.items.put_nowait, item)

        if job.cancelled.is_set():  # its client went away while it waited
            return
        try:
            request = prepare()
            with closing(self.engine.stream(request)) as pieces:
                for piece in pieces:
                    if job.cancelled.is_set() or self._closing.is_set():
                        return
                    put(piece)
            put(self.engine.last_stats)
        except Exception as error:  # handed to the request's coroutine, which answers with it
            put(error)

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
    """A checked request whose images are still encoded (bytes or a file): `decoded()` makes the Request."""

    request: Request
    stream: bool
    include_usage: bool
    images: tuple[bytes | Path, ...] = ()

    def decoded(self, settings: ServerSettings) -> Request:
        try:
            images = tuple(load_image(image, max_pixels=settings.max_image_pixels) for image in self.images)
        except EdgevlError as error:  # an image whose header was fine but whose data is not
            raise bad_request(str(error)) from None
        return replace(self.request, images=images)


def parse_chat_request(body: Any, engine: Engine, settings: ServerSettings) -> ChatRequest:
    """Check an OpenAI chat completion request and turn it into an edgevl request (ApiError 400 if it is wrong).
    Images are checked from their headers only (count, size, total pixels); none is decoded here."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    task = body.get(TASK_FIELD, "ask")
    if not isinstance(task, str) or task not in TASKS:
        raise bad_request(f"{TASK_FIELD} must be one of {', '.join(TASKS)}, not {_shown(task)}")
    tasks = " and ".join(sorted(engine.tasks))
    if task not in engine.tasks:
        raise bad_request(f"this server's engine ({engine.description}) does {tasks} only: set \"{TASK_FIELD}\" "
                          f"to one of them, or serve a vision-language model (edgevl serve --model ...) for {task!r}")
    if body.get("n") not in (None, 1):
        raise bad_request("n must be 1: edgevl gives one answer per request")
    # the cheap checks first: images are looked at last
    max_tokens = _field(body, "max_completion_tokens", int, get_task(task).max_tokens(), 1, settings.max_tokens_limit)
    sampling = Sampling(
        max_tokens=_field(body, "max_tokens", int, max_tokens, 1, settings.max_tokens_limit),
        temperature=float(_field(body, "temperature", (int, float), 0.0, 0, 2)),
        top_p=float(_field(body, "top_p", (int, float), 1.0, 0.0001, 1)),
        seed=_field(body, "seed", int, 0, 0, 2**32 - 1),
        stop=_stop_strings(body.get("stop")),
    )
    stream = _field(body, "stream", bool, False)
    layout = body.get(LAYOUT_FIELD, DEFAULT_LAYOUT)
    if layout not in LAYOUT_MODES:
        raise bad_request(f"{LAYOUT_FIELD} must be one of {', '.join(LAYOUT_MODES)}, not {layout!r}")
    options = body.get("stream_options") or {}
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    json_schema = _response_schema(body.get("response_format"))
    if task == "extract" and json_schema is None:
        raise bad_request("the extract task needs a response_format of type json_schema")
    system, prompt, image_urls = _read_messages(body.get("messages"), settings)
    if not image_urls and task != "ask":
        raise bad_request(f"the {task} task needs an image: add an image_url part to the user message")
    if not prompt:
        if task == "ask":
            raise bad_request(f"the user message has no text: ask a question, or set {TASK_FIELD}")
        options = {"schema": json_schema} if task == "extract" else {}
        prompt = get_task(task).prompt(engine.family, **options)
    images = _checked_images(image_urls, settings)
    return ChatRequest(Request(task, (), prompt, system, sampling, json_schema, layout=layout), stream, include_usage,
                       images)


def _response_schema(response_format: Any) -> dict[str, Any] | None:
    """The JSON schema that OpenAI's `response_format` asks the answer to follow: `{"type": "json_schema",
    "json_schema": {"name": ..., "schema": {...}}}`, or any JSON object for `{"type": "json_object"}`; None for
    free text (`{"type": "text"}` or no response_format)."""
    kind = response_format.get("type") if isinstance(response_format, dict) else response_format
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict) and schema:
            return schema
        raise bad_request("response_format.json_schema.schema must be a JSON schema object")
    raise bad_request('response_format must be {"type": "text"}, {"type": "json_object"} or '
                      '{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}')


def _read_messages(messages: Any, settings: ServerSettings) -> tuple[str | None, str, list[tuple[str, Any]]]:
    """The system text, the users' text and image parts as (where, image_url) - edgevl answers one question:
    no assistant turns."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list of {role, content} objects")
    system: str | None = None
    texts: list[str] = []
    images: list[tuple[str, Any]] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object with role and content")
        role = message.get("role")
        if role == "system":
            system = "\n".join(_message_parts(message.get("content"), where, images=None))
        elif role == "user":
            texts += _message_parts(message.get("content"), where, images)
        else:
            raise bad_request(f"{where}: role {_shown(role)} is not supported; edgevl answers a single question "
                              "(system and user messages only)")
        if len(images) > settings.max_images:
            raise bad_request(f"more than {settings.max_images} images in one request, this server's limit "
                              "(edgevl serve --max-images)")
    return system, "\n".join(texts).strip(), images


def _message_parts(content: Any, where: str, images: list[tuple[str, Any]] | None) -> list[str]:
    """The texts of a message's content; its image parts are appended to `images` (None: no images allowed)."""
    if isinstance(content, str):
        return [_text(content, f"{where}.content")]
    if not isinstance(content, list):
        raise bad_request(f"{where}.content must be a string or a list of parts")
    texts = []
    for index, part in enumerate(content):
        part_where = f"{where}.content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(_text(part["text"], part_where))
        elif kind == "image_url" and images is not None:
            images.append((part_where, part.get("image_url")))
        else:
            allowed = "text" if images is None else "text or image_url"
            raise bad_request(f"{part_where} must be a {allowed} part, like {{\"type\": \"text\", \"text\": \"...\"}}")
    return texts


def _text(text: str, where: str) -> str:
    try:
        text.encode("utf-8")  # JSON may carry lone surrogates ("\\ud800"), which no tokenizer takes
    except UnicodeEncodeError:
        raise bad_request(f"{where}: the text is not valid Unicode (a lone surrogate)") from None
    return text


def _checked_images(parts: list[tuple[str, Any]], settings: ServerSettings) -> tuple[bytes | Path, ...]:
    """Each image part's bytes or file, after checking from the headers alone that each image and all of them
    together stay within the pixel limits."""
    images, total = [], 0
    for where, image_url in parts:
        source = _image_source(image_url, where, settings)
        try:
            width, height = image_size(source, max_pixels=settings.max_image_pixels)
        except EdgevlError as error:  # ImageError: corrupt, empty, too many pixels
            raise bad_request(f"{where}: {error}") from None
        total += width * height
        if total > settings.max_request_pixels:
            raise bad_request(f"the images of this request have more than {settings.max_request_pixels / 1e6:g} "
                              "megapixels together, this server's limit (edgevl serve --max-request-mp); "
                              "send them in several requests or downscale them")
        images.append(source)
    return tuple(images)


def _image_source(image_url: Any, where: str, settings: ServerSettings) -> bytes | Path:
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str):
        raise bad_request(f"{where}: image_url must be {{\"url\": \"data:image/png;base64,...\"}}")
    if url.startswith("data:"):
        try:
            return data_uri_bytes(url)
        except DataUriError as error:
            raise bad_request(f"{where}: {error}") from None
    if url.startswith(("http://", "https://")):
        raise bad_request(f"{where}: image URLs are not fetched (this server makes no outgoing connections); "
                          "send the image as a data URI")
    return _local_file(url, where, settings)


def _local_file(url: str, where: str, settings: ServerSettings) -> Path:
    if settings.local_files is None:
        raise bad_request(f"{where}: local files are refused (start the server with --local-files DIR to allow "
                          "files under DIR); send the image as a data URI")
    try:
        path = Path(url.removeprefix("file://")).expanduser().resolve()
    except (ValueError, OSError, RuntimeError) as error:  # a NUL byte, a link loop, a ~user that does not exist
        raise bad_request(f"{where}: not a usable file path ({error})") from None
    if not path.is_relative_to(settings.local_files.resolve()):
        raise ApiError(403, f"{where}: {_shown(url)} is outside the folder this server reads images from")
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
        raise bad_request(f"{name} must be {expected}, not {_shown(value)}")
    # a range is given only for numeric kinds
    if low is not None and high is not None and not low <= cast(float, value) <= high:
        raise bad_request(f"{name} must be between {low:g} and {high:g}, not {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    """A client's value in an error message: short, whatever its size."""
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def _stop_strings(stop: Any) -> tuple[str, ...]:
    stops = [stop] if isinstance(stop, str) else stop or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > MAX_STOP_STRINGS:
        raise bad_request(f"stop must be a string or a list of at most {MAX_STOP_STRINGS} strings")
    return tuple(_text(stop, "stop") for stop in stops)


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


async def _event_stream(completion: Completion, job: Job, first: str | Stats, include_usage: bool,
                        peer: str) -> AsyncIterator[str]:
    """SSE events: the role, a chunk per piece, the finish reason, usage if asked, [DONE]. An engine failure
    after the first piece can no longer change the status: it becomes an error event, as vLLM sends it.
    A client that hangs up ends this generator (Starlette cancels it): the job is cancelled on the way out."""
    yield completion.chunk({"role": "assistant", "content": ""})
    item = first
    try:
        while isinstance(item, str):
            yield completion.chunk({"content": item})
            item = await job.next_item()
    except ApiError as error:
        yield _sse(error.body())
        return
    except asyncio.CancelledError:
        log.warning("client %s went away while its answer streamed", peer)
        raise
    finally:
        job.cancel()
    yield completion.chunk({}, completion.finish_reason(item))
    if include_usage:
        yield completion.usage_chunk(item)
    yield "data: [DONE]\n\n"


# ---- the application --------------------------------------------------------------------------------------------

def create_app(worker: EngineWorker, settings: ServerSettings) -> Starlette:
    async def chat_completions(http: HttpRequest) -> Response:
        _check_access(http, settings)
        _check_content(http, settings.max_request_bytes)
        job = worker.admit()  # before the body is read: at most `capacity` bodies are in memory at once
        client_gone = None
        try:
            body = await _read_body(http, settings)
            client_gone = asyncio.ensure_future(_client_gone(http))
            # decoding JSON and reading image headers takes a while for big ones: in a thread, so that other
            # clients' streams go on
            chat = await run_in_threadpool(parse_chat_request_bytes, body, worker.engine, settings)
            del body
            completion = Completion(settings.model_name, chat.request.sampling.max_tokens)
            worker.start(job, partial(chat.decoded, settings))
            # Wait for the first piece before answering: a failure until then (a prompt too long for the
            # context, a corrupt image) still gets its proper status instead of a 200 with an error inside.
            first = await job.next_item(client_gone)
            if chat.stream:
                client_gone.cancel()  # from here StreamingResponse watches the connection itself
                stream = _event_stream(completion, job, first, chat.include_usage, _peer(http))
                return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"},
                                         background=BackgroundTask(job.cancel))
            pieces = [first]
            while isinstance(pieces[-1], str):
                pieces.append(await job.next_item(client_gone))
            stats = pieces.pop()
            assert isinstance(stats, Stats), "the worker ends each answer with its Stats"
            message = {"role": "assistant", "content": "".join(piece for piece in pieces if isinstance(piece, str))}
            choice = {"index": 0, "message": message, "finish_reason": completion.finish_reason(stats)}
            return JSONResponse(completion.envelope("chat.completion", choices=[choice], usage=usage(stats)))
        except ClientGone as gone:
            job.cancel()
            log.warning("client %s went away %s", _peer(http), gone)
            return Response(status_code=499)  # nobody reads it; the status is nginx's for this case
        except BaseException:
            job.cancel()
            raise
        finally:
            if client_gone is not None:
                client_gone.cancel()

    async def models(http: HttpRequest) -> Response:
        _check_access(http, settings)
        engine = worker.engine
        entry = model_entry(settings.model_name, engine.family, engine.tasks, engine.description)
        return JSONResponse({"object": "list", "data": [entry]})

    async def health(http: HttpRequest) -> Response:
        _check_host(http, settings)
        return JSONResponse({"status": "ok", "model": settings.model_name, "requests": worker.admitted,
                             "capacity": worker.capacity})

    async def api_error(http: HttpRequest, error: Exception) -> Response:
        assert isinstance(error, ApiError)
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    async def http_error(http: HttpRequest, error: Exception) -> Response:
        """Starlette's own answers (404 no such path, 405 wrong method) in the same JSON shape."""
        assert isinstance(error, HTTPException)
        return JSONResponse(error_body(error.status_code, str(error.detail), "invalid_request_error"),
                            status_code=error.status_code, headers=error.headers)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={ApiError: api_error, HTTPException: http_error},
    )


def parse_chat_request_bytes(body: bytes, engine: Engine, settings: ServerSettings) -> ChatRequest:
    return parse_chat_request(_parse_json(body), engine, settings)


def _check_access(http: HttpRequest, settings: ServerSettings) -> None:
    _check_host(http, settings)
    if settings.api_key is None:
        return
    scheme, _, key = http.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key:
        raise ApiError(401, "missing API key: send the header Authorization: Bearer KEY", "authentication_error")
    if not hmac.compare_digest(key.encode(), settings.api_key.encode()):
        raise ApiError(401, "wrong API key", "authentication_error")


def _check_host(http: HttpRequest, settings: ServerSettings) -> None:
    """421 for a Host this server does not answer to: what a page that rebound its own name to 127.0.0.1 sends."""
    if settings.allowed_hosts is None:
        return
    header = http.headers.get("host", "")
    try:
        name = urlsplit(f"//{header}").hostname or ""
    except ValueError:
        name = ""
    if name not in settings.allowed_hosts:
        raise ApiError(421, f"this server answers only to {', '.join(sorted(settings.allowed_hosts))} without an API "
                            f"key, not to Host {_shown(header)} (start it with --api-key to serve other names)",
                       "misdirected_request")


def _check_content(http: HttpRequest, limit: int) -> None:
    """JSON only (415 otherwise: a web page can send text/plain without asking first); 413 for a declared body
    over the limit, before reading any of it."""
    kind = http.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "application/json":
        raise ApiError(415, f"the request must be JSON (Content-Type: application/json), not {_shown(kind or None)}",
                       "unsupported_media_type")
    declared = http.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request is larger than this server's limit of {limit / 1e6:g} MB "
                         "(edgevl serve --max-request-mb)")


async def _read_body(http: HttpRequest, settings: ServerSettings) -> bytes:
    """The body, refused (413) as soon as it is over the limit, before it is all read; 408 when it does not
    arrive in time (a slow-drip client holds a slot for `body_timeout` at most)."""
    async def read() -> bytes:
        body = bytearray()
        async for chunk in http.stream():
            body += chunk
            if len(body) > settings.max_request_bytes:
                raise _too_large(settings.max_request_bytes)
        return bytes(body)

    try:
        return await asyncio.wait_for(read(), settings.body_timeout)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {settings.body_timeout:g} s",
                       "request_timeout", {"Connection": "close"}) from None
    except ClientDisconnect:
        raise ClientGone("while sending its request") from None


async def _client_gone(http: HttpRequest) -> None:
    """Returns when the client disconnects (its body is read: the next message can only be the disconnect)."""
    while (await http.receive())["type"] != "http.disconnect":
        pass


def _peer(http: HttpRequest) -> str:
    return f"{http.client.host}:{http.client.port}" if http.client else "(unknown)"


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except RecursionError:
        raise bad_request("the request body is nested too deeply") from None
    except ValueError as error:
        raise bad_request(f"the request body is not valid JSON ({error})") from None


def uvicorn_config(app: Starlette, settings: ServerSettings, access_log: bool = False):
    """uvicorn's settings for the app: h11 with a deadline for each request's headers (uvicorn has none:
    a connection that sends nothing, or a byte at a time, would stay open for ever)."""
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol

    protocol = partial(_header_deadline_protocol(H11Protocol), header_timeout=settings.header_timeout)
    # uvicorn types `http` as a protocol class or name; any factory of protocols works (it only calls it)
    return uvicorn.Config(app, http=protocol,  # type: ignore[arg-type]
                          log_level="info" if access_log else "warning", access_log=access_log,
                          timeout_graceful_shutdown=10)


def _header_deadline_protocol(base: type) -> type:
    class HeaderDeadline(base):
        """Closes a connection whose request headers are not complete `header_timeout` s after it opened or
        after its last answer."""

        def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.header_timeout = header_timeout
            self.deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:  # headers in: the app has it
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()  # may start a pipelined request already
            if not self.transport.is_closing() and self.cycle.response_complete:
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self.deadline = self.loop.call_later(self.header_timeout, self._expired)

        def _disarm(self) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

        def _expired(self) -> None:
            self.deadline = None
            if not self.transport.is_closing():
                peer = f"{self.client[0]}:{self.client[1]}" if self.client else "(unknown)"
                log.warning("client %s dropped: no complete request headers within %g s", peer, self.header_timeout)
                self.transport.close()

    return HeaderDeadline


def serve(worker: EngineWorker, settings: ServerSettings, host: str, port: int,
          on_ready: Callable[[str], None], access_log: bool = False) -> None:
    """Serve until Ctrl+C. The socket is bound first, so that port 0 works and `on_ready` gets the real URL."""
    import uvicorn

    ipv6 = ":" in host
    listener = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except (OSError, OverflowError) as error:
        listener.close()
        raise EdgevlError(f"cannot listen on {host}:{port}: {getattr(error, 'strerror', None) or error}") from None
    url_host = f"[{host}]" if ipv6 else host
    on_ready(f"http://{url_host}:{listener.getsockname()[1]}/v1")
    with listener:
        uvicorn.Server(uvicorn_config(create_app(worker, settings), settings, access_log)).run(sockets=[listener])
