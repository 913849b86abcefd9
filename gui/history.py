"""Earlier results, kept in SQLite in the app's data folder with a small thumbnail of each image.

The raw answer is stored with its task, so a result comes back exactly as it was parsed the first time
(`restore()` parses it again: tables return as tables). The user's edits replace the stored answer, in a form
the task parses back to the edited result (HTML for tables: it keeps every cell as typed). Only the GUI thread
uses the connection.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from PIL import Image

from edgevl.gui.imaging import thumbnail_png
from edgevl.tasks import Result, TableResult, get_task

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY,
    created TEXT NOT NULL,      -- local time, ISO 8601
    task TEXT NOT NULL,         -- ocr, table, caption, ask
    engine TEXT NOT NULL,       -- the engine's description
    source TEXT NOT NULL,       -- file name, "clipboard" or "screen region"
    answer TEXT NOT NULL,       -- the raw answer, parsed again by the task when restored
    thumbnail BLOB NOT NULL     -- PNG
)
"""

SELECT = "SELECT id, created, task, engine, source, answer, thumbnail FROM results"


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    created: datetime
    task: str
    engine: str
    source: str
    answer: str
    thumbnail: bytes

    def restore(self) -> Result:
        return get_task(self.task).parse(self.answer)


class History:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
        self._db.execute(SCHEMA)

    def add(self, task: str, engine: str, source: str, answer: str, image: Image.Image) -> HistoryEntry:
        created = datetime.now().replace(microsecond=0)
        thumbnail = thumbnail_png(image)
        with self._db:
            cursor = self._db.execute(
                "INSERT INTO results (created, task, engine, source, answer, thumbnail) VALUES (?, ?, ?, ?, ?, ?)",
                (created.isoformat(), task, engine, source, answer, thumbnail),
            )
        assert cursor.lastrowid is not None, "an INSERT sets the row id"
        return HistoryEntry(cursor.lastrowid, created, task, engine, source, answer, thumbnail)

    def save_edit(self, entry_id: int, result: Result) -> None:
        with self._db:
            self._db.execute("UPDATE results SET answer = ? WHERE id = ?", (stored_answer(result), entry_id))

    def entries(self, limit: int = 500) -> list[HistoryEntry]:
        """Newest first."""
        rows = self._db.execute(f"{SELECT} ORDER BY id DESC LIMIT ?", (limit,))
        return [HistoryEntry(row[0], datetime.fromisoformat(row[1]), *row[2:]) for row in rows]

    def entry(self, entry_id: int) -> HistoryEntry:
        row = self._db.execute(f"{SELECT} WHERE id = ?", (entry_id,)).fetchone()
        return HistoryEntry(row[0], datetime.fromisoformat(row[1]), *row[2:])

    def clear(self) -> None:
        with self._db:
            self._db.execute("DELETE FROM results")
        self._db.execute("VACUUM")  # give the thumbnails' space back

    def close(self) -> None:
        self._db.close()


def stored_answer(result: Result) -> str:
    """What to store so that the task parses it back to `result`."""
    if isinstance(result, TableResult) and result.tables:
        return result.render("html")
    return result.text
