"""The answer: text streaming in while the engine works, then the parsed result.

Text results (OCR, captions, answers) stay in an editable text box. Tables get an editable grid and a Markdown
tab; the grid is the source of truth, so a corrected cell shows up in the Markdown tab, the exports and the
spreadsheet copy (tab-separated text). Ctrl+V in the grid pastes text (tab-separated rows fill several cells),
Ctrl+C copies the selected cells. Extracted fields get a form (Fields tab) beside their JSON; Copy copies the
JSON.

Each shown result carries a key (a queue outcome, a history entry): the user's edits are announced with that key
by `edited`, a moment after typing stops, so the owner can save them where they belong.
"""

from __future__ import annotations

from pathlib import Path

from typing import Any, cast

from PySide6.QtCore import QEvent, QTimer, Signal
from PySide6.QtGui import QFontDatabase, QGuiApplication, QKeyEvent, QKeySequence, QTextCursor
from PySide6.QtWidgets import (
    QComboBox, QHBoxLayout, QLabel, QPlainTextEdit, QTableWidget, QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget,
)

from edgevl.gui.i18n import tr
from edgevl.gui.widgets.fields_view import FieldsView
from edgevl.tasks import ExtractResult, Result, Table, TableResult, TextResult

#: Export formats offered for each kind of result, with their file name filters.
FILE_TYPES = {
    "text": ("Text", "*.txt"),
    "md": ("Markdown", "*.md"),
    "csv": ("CSV", "*.csv"),
    "json": ("JSON", "*.json"),
    "html": ("HTML", "*.html"),
    "tsv": ("TSV", "*.tsv"),
}


#: Edits are announced this long after the last keystroke (one save per pause, not per key).
EDIT_DELAY_MS = 400


class TableGrid(QTableWidget):
    """A table grid where Ctrl+V and Ctrl+C work on cells (the window's image paste must not take Ctrl+V)."""

    def event(self, event: QEvent) -> bool:
        # a ShortcutOverride event is a key event
        if event.type() == QEvent.Type.ShortcutOverride and _is_copy_or_paste(cast(QKeyEvent, event)):
            event.accept()  # this widget handles the key itself
            return True
        return super().event(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.matches(QKeySequence.StandardKey.Paste):
            self.paste_text(QGuiApplication.clipboard().text())
        elif event.matches(QKeySequence.StandardKey.Copy):
            QGuiApplication.clipboard().setText(self.selected_text())
        else:
            super().keyPressEvent(event)

    def paste_text(self, text: str) -> None:
        """Tab-separated rows from the current cell on, as far as the grid reaches."""
        top, left = max(0, self.currentRow()), max(0, self.currentColumn())
        for row_offset, line in enumerate(text.rstrip("\n").split("\n")):
            for column_offset, cell in enumerate(line.rstrip("\r").split("\t")):
                row, column = top + row_offset, left + column_offset
                if row < self.rowCount() and column < self.columnCount():
                    self.setItem(row, column, QTableWidgetItem(cell))

    def selected_text(self) -> str:
        cells = sorted((index.row(), index.column()) for index in self.selectedIndexes())
        rows: dict[int, list[str]] = {}
        for row, column in cells:
            item = self.item(row, column)
            rows.setdefault(row, []).append(item.text() if item is not None else "")
        return "\n".join("\t".join(cells) for cells in rows.values())


def _is_copy_or_paste(event: QKeyEvent) -> bool:
    return event.matches(QKeySequence.StandardKey.Paste) or event.matches(QKeySequence.StandardKey.Copy)


class ResultView(QWidget):
    changed = Signal()  # the result was replaced or edited
    edited = Signal(object, object)  # (key, result with the edits), EDIT_DELAY_MS after the last edit

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._result: Result | None = None
        self._key: Any = None
        self._tables: list[Table] = []
        self._filling_grid = False  # cellChanged fires while the grid is filled; those are not edits
        self._edit_timer = QTimer(self, singleShot=True, interval=EDIT_DELAY_MS)
        self._edit_timer.timeout.connect(lambda: self.edited.emit(self._key, self.result))

        self.text = QPlainTextEdit()
        self.text.setTabChangesFocus(True)  # Tab moves on, as everywhere else in the window
        self.text.setPlaceholderText(tr("Capture a region, drop or paste an image, or open a file."))
        self.text.textChanged.connect(self._on_text_edited)
        self.grid = TableGrid()
        self.grid.cellChanged.connect(self._on_cell_edited)
        self.grid.horizontalHeader().setStretchLastSection(True)
        self.markdown = QPlainTextEdit()
        self.markdown.setTabChangesFocus(True)
        self.markdown.setReadOnly(True)
        self.markdown.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.table_picker = QComboBox()
        self.table_picker.currentIndexChanged.connect(self._show_table)

        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.text, tr("Text"))
        self.tabs.addTab(self._table_page(), tr("Table"))
        self.tabs.addTab(self.markdown, tr("Markdown"))
        self.fields = FieldsView()
        self.tabs.addTab(self.fields, tr("Fields"))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)
        self._show_tabs(table=False)

    def _table_page(self) -> QWidget:
        self.picker_row = QWidget()  # shown only when the answer holds several tables
        picker_layout = QHBoxLayout(self.picker_row)
        picker_layout.setContentsMargins(0, 0, 0, 0)
        picker_layout.addWidget(QLabel(tr("Table:")))
        picker_layout.addWidget(self.table_picker, 1)
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addWidget(self.picker_row)
        layout.addWidget(self.grid)
        return page

    # ---- streaming --------------------------------------------------------------------------------------------

    def start_streaming(self, placeholder: str = "", key: Any = None) -> None:
        """Clear the view for a new answer; the raw text streams into the Text tab. `placeholder` is what the
        empty box says (default: how to add an image)."""
        self.flush_edits()
        self._result, self._tables, self._key = None, [], key
        self._show_tabs(table=False)
        self.text.setPlaceholderText(placeholder or tr("Capture a region, drop or paste an image, or open a file."))
        self.text.blockSignals(True)
        self.text.setPlainText("")
        self.text.blockSignals(False)
        self.changed.emit()

    def append(self, piece: str) -> None:
        self.text.moveCursor(QTextCursor.MoveOperation.End)
        self.text.insertPlainText(piece)
        self.text.ensureCursorVisible()

    # ---- results ----------------------------------------------------------------------------------------------

    def show_result(self, result: Result | None, key: Any = None) -> None:
        """Show a parsed result (None: an empty view); edits to it are announced with `key`."""
        self.flush_edits()
        self._result, self._key = result, key
        self._tables = [Table(list(t.header), [list(row) for row in t.rows]) for t in getattr(result, "tables", [])]
        is_table, is_fields = isinstance(result, TableResult), isinstance(result, ExtractResult)
        self._show_tabs(table=is_table, fields=is_fields)
        self.text.blockSignals(True)  # setting the text is not an edit
        self.text.setPlainText(result.render("json") if isinstance(result, ExtractResult) else
                               result.text if result is not None and not is_table else "")
        self.text.blockSignals(False)
        if isinstance(result, ExtractResult):
            self.fields.show_data(result.data)
        if is_table:
            self.table_picker.blockSignals(True)
            self.table_picker.clear()
            self.table_picker.addItems([tr("{number} of {count}", number=i + 1, count=len(self._tables))
                                        for i in range(len(self._tables))])
            self.table_picker.blockSignals(False)
            self.picker_row.setVisible(len(self._tables) > 1)
            self._show_table(0)
        self.changed.emit()

    @property
    def result(self) -> Result | None:
        """The result with the user's edits."""
        if isinstance(self._result, TableResult):
            return TableResult(tables=self._tables, raw=self._result.raw)
        return self._result

    @property
    def is_table(self) -> bool:
        return isinstance(self._result, TableResult) and bool(self._tables)

    def formats(self) -> tuple[str, ...]:
        """Export formats of the current result (none while there is none)."""
        return self._result.formats if self._result is not None else ()

    def rendered(self, fmt: str) -> str:
        result = self.result
        assert result is not None, "rendered while there is no result"
        return result.render(fmt)

    def copy_text(self) -> str:
        """What "Copy" copies: the Markdown of tables, the JSON of extracted fields, else the (edited) text."""
        if isinstance(self._result, ExtractResult):
            return self.rendered("json")
        return self.rendered("md") if isinstance(self._result, TableResult) else self.text.toPlainText()

    def export(self, fmt: str, path: Path) -> None:
        """Write the result in `fmt` to `path` (a final line break added, as text files have)."""
        path.write_text(self.rendered(fmt) + "\n", encoding="utf-8")

    def flush_edits(self) -> None:
        """Announce a pending edit now (before the view shows something else, or the window closes)."""
        if self._edit_timer.isActive():
            self._edit_timer.stop()
            self.edited.emit(self._key, self.result)

    # ---- internals --------------------------------------------------------------------------------------------

    def _show_tabs(self, table: bool, fields: bool = False) -> None:
        self.tabs.setTabVisible(0, not table)
        self.tabs.setTabVisible(1, table)
        self.tabs.setTabVisible(2, table)
        self.tabs.setTabVisible(3, fields)
        self.tabs.setCurrentIndex(3 if fields else 1 if table else 0)

    def _show_table(self, index: int) -> None:
        table = self._tables[index] if 0 <= index < len(self._tables) else Table([], [])
        self._filling_grid = True
        self.grid.clear()
        self.grid.setColumnCount(len(table.header))
        self.grid.setRowCount(len(table.rows))
        self.grid.setHorizontalHeaderLabels(table.header)
        for row_index, row in enumerate(table.rows):
            for column, cell in enumerate(row):
                self.grid.setItem(row_index, column, QTableWidgetItem(cell))
        self.grid.resizeColumnsToContents()
        self._filling_grid = False
        self._update_markdown()

    def _on_cell_edited(self, row: int, column: int) -> None:
        if self._filling_grid:
            return
        table = self._tables[self.table_picker.currentIndex()]
        cell = self.grid.item(row, column)
        assert cell is not None, "an edited cell exists"
        table.rows[row][column] = cell.text()
        self._update_markdown()
        self.changed.emit()
        self._edit_timer.start()

    def _on_text_edited(self) -> None:
        if isinstance(self._result, TextResult):
            self._result = type(self._result)(self.text.toPlainText())
            self.changed.emit()
            self._edit_timer.start()

    def _update_markdown(self) -> None:
        result = self.result
        self.markdown.setPlainText(result.render("md") if result is not None else "")

