"""Batch records (the JSON lines `edgevl batch` writes) as one document: plain text, JSON lines, Markdown or CSV.

    render_records(records, "md")

A record needs "path" and "output" (None when the image failed, with the reason in "error"); "task" and the rest
are kept in JSON lines and CSV. The desktop app's "Export all" writes its queue this way, batches and single
images alike.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any
from collections.abc import Iterable

EXPORT_FORMATS = {"txt": "Text", "jsonl": "JSON lines", "md": "Markdown", "csv": "CSV"}


def render_records(records: Iterable[dict[str, Any]], fmt: str) -> str:
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    records = list(records)
    if fmt == "jsonl":
        return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "task", "output", "error"])
        for record in records:
            writer.writerow([record["path"], record.get("task", ""), record["output"] or "", record.get("error") or ""])
        return buffer.getvalue()
    if fmt == "md":
        return "".join(f"## {Path(record['path']).name}\n\n{_text(record, '*{}*')}\n\n" for record in records)
    return "".join(f"==> {record['path']} <==\n{_text(record, '[{}]')}\n\n" for record in records)


def _text(record: dict[str, Any], error_form: str) -> str:
    """The output, or the error in the format's own emphasis."""
    if record["output"] is not None:
        return record["output"].strip()
    return error_form.format(record.get("error") or "no output")
