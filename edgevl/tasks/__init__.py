"""Tasks: what users ask of an image (OCR, table, caption, free question).

A task builds the `Request` an engine runs and parses the engine's answer into a result object; it never
imports an engine. Use `get_task(name)`:

    task = get_task("table")
    request = task.build_request([image], engine.family)
    result = task.parse("".join(engine.stream(request)))
    print(result.render("csv"))
"""

from __future__ import annotations

from edgevl.errors import EdgevlError
from edgevl.tasks.ask import AnswerResult, AskTask
from edgevl.tasks.base import Result, Task, TextResult
from edgevl.tasks.caption import CaptionResult, CaptionTask
from edgevl.tasks.extract import ExtractResult, ExtractTask
from edgevl.tasks.ocr import OcrResult, OcrTask
from edgevl.tasks.table import TableResult, TableTask
from edgevl.tasks.tables import Table

TASKS: dict[str, Task] = {task.name: task for task in (OcrTask(), TableTask(), CaptionTask(), AskTask(), ExtractTask())}


def get_task(name: str) -> Task:
    """The task called `name` ("ocr", "table", "caption", "ask" or "extract")."""
    if name not in TASKS:
        raise EdgevlError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


__all__ = [
    "AnswerResult",
    "AskTask",
    "CaptionResult",
    "CaptionTask",
    "ExtractResult",
    "ExtractTask",
    "OcrResult",
    "OcrTask",
    "Result",
    "Table",
    "TableResult",
    "TableTask",
    "Task",
    "TextResult",
    "get_task",
    "TASKS",
]
