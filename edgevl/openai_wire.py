"""What `edgevl serve` and the remote engine (`--endpoint`) agree on over OpenAI's chat completions API.

Both sides read this module, so the server never imports the client or the other way round:
- edgevl's extension fields: a request's task, and the model entry's family, tasks and engine; a model whose
  `owned_by` is `OWNER` is served by `edgevl serve`, which understands them;
- images as `data:` URIs (base64): written by the client, read back by the server;
- errors in OpenAI's shape, `{"error": {"message", "type", "code"}}`.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

from PIL import Image

#: `owned_by` of the models `edgevl serve` lists
OWNER = "edgevl"
#: request field: the task ("ocr", "table", "caption", "ask"); plain OpenAI servers never see it
TASK_FIELD = "edgevl_task"
#: request field: how the embedded engine orders the text it reads, one of edgevl.layout.LAYOUT_MODES ("auto")
LAYOUT_FIELD = "edgevl_layout"
#: model entry fields (GET /v1/models)
FAMILY_FIELD = "edgevl_family"
TASKS_FIELD = "edgevl_tasks"
ENGINE_FIELD = "edgevl_engine"


class DataUriError(ValueError):
    """A data URI that is not base64 image data; the message says what is wrong."""


def model_entry(name: str, family: str, tasks: frozenset[str], description: str) -> dict[str, Any]:
    """The /v1/models entry of a model served by edgevl."""
    return {"id": name, "object": "model", "created": 0, "owned_by": OWNER,
            FAMILY_FIELD: family, TASKS_FIELD: sorted(tasks), ENGINE_FIELD: description}


def is_edgevl(entry: dict[str, Any]) -> bool:
    return entry.get("owned_by") == OWNER


def image_data_uri(image: Image.Image, lossless: bool) -> str:
    """PNG for lossless (OCR and tables, where every pixel of small text counts), else JPEG (5-10x smaller)."""
    buffer = io.BytesIO()
    if lossless:
        image.save(buffer, "PNG")
    else:
        image.convert("RGB").save(buffer, "JPEG", quality=92)
    kind = "png" if lossless else "jpeg"
    return f"data:image/{kind};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def data_uri_bytes(url: str) -> bytes:
    """The bytes of a base64 `data:` URI (DataUriError if it is not one)."""
    header, comma, data = url.partition(",")
    if not header.startswith("data:") or not comma or not header.endswith(";base64"):
        raise DataUriError("an image data URI must be base64, like data:image/png;base64,...")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise DataUriError("the image data URI is not valid base64") from None


def error_body(status: int, message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": status}}


def error_text(answer: Any) -> str:
    """The message of an OpenAI-style error ({"error": {"message": ...}}, or vLLM's {"message": ...})."""
    if isinstance(answer, dict):
        error = answer.get("error", answer)
        if isinstance(error, dict):
            return str(error.get("message") or error)
        return str(error)
    return str(answer) or "(no message)"
