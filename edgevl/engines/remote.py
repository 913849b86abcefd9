"""An engine on the other side of an OpenAI-compatible HTTP API: vLLM, llama.cpp's server, or `edgevl serve`.

    engine = open_engine(endpoint="http://gpu-box:8000/v1", api_key=..., model_name="Qwen/Qwen2-VL-7B-Instruct")

A request becomes a streamed chat completion (SSE) with the images as base64 data URIs: PNG for OCR and tables,
where every pixel of small text counts, JPEG for captions and questions (photos are 5-10x smaller). Transient
failures (no connection, timeouts, 429, 5xx) are retried with exponential backoff until the first piece of text
has arrived; a failure after that raises, as text already handed out cannot be taken back.

Unlike local engines this one may be called from several threads at once (`edgevl batch --concurrency`): the
HTTP client is thread-safe and `last_stats` is kept per thread.

`edgevl serve` is recognised by its /v1/models answer. Requests to it also carry the task (`edgevl_task`) and
the reading order (`edgevl_layout`), so that its engine - even the embedded OCR engine, which has no prompt -
knows what to do, and the prompt family follows its model. Other servers get plain OpenAI requests (vLLM would
log a warning for every unknown field).
"""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any, TypeVar
from collections.abc import Callable, Generator, Iterator

import httpx

from edgevl.engines.base import Engine
from edgevl.errors import EdgevlError, EngineUnavailable
from edgevl.families import DEFAULT_FAMILY
from edgevl.openai_wire import (FAMILY_FIELD, LAYOUT_FIELD, TASK_FIELD, TASKS_FIELD, error_text, image_data_uri,
                                is_edgevl)
from edgevl.request import Request, Stats

#: HTTP statuses worth another try: the server is busy, restarting or behind a proxy that hiccuped.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: Failures of the connection itself that a later try may not meet (a bad URL is not one of them).
TRANSIENT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
#: Tasks whose images are sent losslessly.
LOSSLESS_TASKS = frozenset({"ocr", "table"})

T = TypeVar("T")


class TransientFailure(Exception):
    """A failed try that may succeed later; `retry_after` is the server's own advice, in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RemoteEngine(Engine):
    def __init__(
        self,
        endpoint: str,
        *,
        api_key: str | None = None,
        model_name: str | None = None,
        family: str | None = None,
        timeout: float = 600.0,
        retries: int = 5,
        backoff: float = 0.5,
    ) -> None:
        """`endpoint`: the API's base URL (".../v1"). `model_name`: default the server's first model. `family`:
        prompt wording ("qwen2vl", "minicpmv"); default the model's, as told by `edgevl serve`, else qwen2vl.
        `timeout`: seconds without a byte from the server (a busy server may queue a request for long)."""
        self._per_thread = threading.local()
        super().__init__()
        if not endpoint.startswith(("http://", "https://")):
            raise EdgevlError(f"endpoint {endpoint!r}: give an http:// or https:// URL, e.g. http://gpu-box:8000/v1")
        self.endpoint = endpoint.rstrip("/")
        self.retries, self.backoff = retries, backoff
        self._client = httpx.Client(
            base_url=self.endpoint,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        try:
            served = self._served_model(model_name)
        except BaseException:
            self.close()
            raise
        self.model_name = str(served["id"])
        self.speaks_edgevl = is_edgevl(served)
        self.family = family or served.get(FAMILY_FIELD) or DEFAULT_FAMILY
        if TASKS_FIELD in served:
            self.tasks = frozenset(served[TASKS_FIELD])
        self.description = f"{self.model_name} at {self.endpoint}"
        self.device, self.device_reason = "remote", f"runs on the server at {self.endpoint}"

    @property
    def last_stats(self) -> Stats:
        """Timings of the calling thread's last request (prefill_ms: until the first text, queueing included)."""
        return getattr(self._per_thread, "stats", None) or Stats()

    @last_stats.setter
    def last_stats(self, stats: Stats) -> None:
        self._per_thread.stats = stats

    def close(self) -> None:
        self._client.close()

    # ---- requests -----------------------------------------------------------------------------------------------

    def stream(self, request: Request) -> Generator[str, None, None]:
        body = self.chat_body(request)
        self.last_stats = stats = Stats()
        started = time.perf_counter()
        response, pieces, first = self._with_retries(lambda: self._open_stream(body, stats))
        answering = time.perf_counter()
        stats.prefill_ms = 1000 * (answering - started)
        try:
            if first is not None:
                yield first
            yield from pieces
        except httpx.TransportError as error:
            raise EdgevlError(f"{self.endpoint}: the connection broke in the middle of an answer ({error})") from None
        finally:
            stats.decode_ms = 1000 * (time.perf_counter() - answering)
            response.close()

    def chat_body(self, request: Request) -> dict[str, Any]:
        """The chat completion request: images first, then the prompt, as Qwen2-VL and MiniCPM-V are trained."""
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": image_data_uri(image, lossless=request.task in LOSSLESS_TASKS)}}
            for image in request.images
        ]
        content.append({"type": "text", "text": request.prompt})
        system = [{"role": "system", "content": request.system}] if request.system is not None else []
        sampling = request.sampling
        body: dict[str, Any] = {
            "model": self.model_name,
            "messages": [*system, {"role": "user", "content": content}],
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": sampling.seed,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if request.json_schema is not None:  # OpenAI's structured output; vLLM and llama.cpp's server honour it
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "edgevl_answer", "schema": request.json_schema, "strict": True}}
        if self.speaks_edgevl:
            body[TASK_FIELD] = request.task
            body[LAYOUT_FIELD] = request.layout
        return body

    def _open_stream(self, body: dict[str, Any], stats: Stats) -> tuple[httpx.Response, Iterator[str], str | None]:
        """Send the request and read up to the first piece of text: until then every failure can be retried."""
        response = self._client.send(self._client.build_request("POST", "/chat/completions", json=body), stream=True)
        try:
            self._check_status(response)
            pieces = self._pieces(response, stats)
            return response, pieces, next(pieces, None)
        except BaseException:
            response.close()
            raise

    def _pieces(self, response: httpx.Response, stats: Stats) -> Iterator[str]:
        """The text of the server-sent events; token counts from the usage chunk."""
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, comments, keep-alives
            data = line[len("data:"):].strip()
            if data == "[DONE]":
                return
            chunk = self._json(data)
            if "error" in chunk:
                raise EdgevlError(f"{self.endpoint}: {error_text(chunk)}")
            if chunk.get("usage"):
                stats.prompt_tokens = chunk["usage"].get("prompt_tokens") or 0
                stats.generated_tokens = chunk["usage"].get("completion_tokens") or 0
            for choice in chunk.get("choices") or ():
                text = (choice.get("delta") or {}).get("content")
                if text:
                    yield text

    def _served_model(self, wanted: str | None) -> dict[str, Any]:
        """The /v1/models entry of the model to use; also checks early that the URL and the key are right."""
        response = self._with_retries(lambda: self._checked(self._client.get("/models")))
        models = self._json(response.text).get("data") or []
        names = [str(model.get("id")) for model in models]
        if not models:
            raise EdgevlError(f"{self.endpoint} serves no model")
        if wanted is None:
            return models[0]
        if wanted not in names:
            raise EdgevlError(f"{self.endpoint} does not serve {wanted!r}; it serves: {', '.join(names)}")
        return models[names.index(wanted)]

    def _json(self, text: str) -> dict[str, Any]:
        try:
            answer = json.loads(text)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise EdgevlError(f"{self.endpoint} does not answer like an OpenAI-compatible API: {text[:200]!r}")
        return answer

    # ---- failures -----------------------------------------------------------------------------------------------

    def _with_retries(self, attempt: Callable[[], T]) -> T:
        """attempt(), tried again after transient failures with exponential backoff (and jitter, so that many
        clients do not come back at the same moment)."""
        for tries in range(1, self.retries + 2):
            try:
                return attempt()
            except (TransientFailure, *TRANSIENT_ERRORS) as failure:
                if tries > self.retries:
                    message = f"{self.endpoint}: {_describe(failure)} (gave up after {tries} tries)"
                    raise EngineUnavailable(message) from None
                advised = getattr(failure, "retry_after", None)
                backoff = self.backoff * 2 ** (tries - 1) * random.uniform(0.5, 1.5)
                time.sleep(advised if advised is not None else backoff)
        raise AssertionError("unreachable")

    def _checked(self, response: httpx.Response) -> httpx.Response:
        self._check_status(response)
        return response

    def _check_status(self, response: httpx.Response) -> None:
        if response.status_code == 200:
            return
        response.read()
        status, text = response.status_code, error_text(_json_or_text(response))
        if status in TRANSIENT_STATUSES:
            raise TransientFailure(f"HTTP {status}: {text}", _retry_after(response))
        hint = {
            401: " (check --api-key / EDGEVL_API_KEY)",
            404: " (OpenAI-compatible servers answer under /v1: is the endpoint like http://host:8000/v1?)",
        }.get(status, "")
        raise EdgevlError(f"{self.endpoint}: HTTP {status}: {text}{hint}")


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text.strip()[:500]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return min(float(value), 60.0) if value.replace(".", "", 1).isdigit() else None


def _describe(failure: BaseException) -> str:
    return str(failure) or type(failure).__name__
