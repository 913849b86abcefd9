"""The answer: text streaming in while the engine works, then the parsed result.

Text results (OCR, captions, answers) stay in an editable text box. Tables get an editable grid and a Markdown
tab; the grid is the source of truth, so a corrected cell shows up in the Markdown tab, the exports and the
spreadsheet copy (tab-separated text). Extracted fields get a form (Fields tab) beside their JSON; Copy copies
the JSON.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtGui import QFontDatabase, QTextCursor
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


class ResultView(QWidget):
    changed = Signal()  # the result was replaced or edited

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._result: Result | None = None
        self._tables: list[Table] = []
        self._filling_grid = False  # cellChanged fires while the grid is filled; those are not edits

        self.text = QPlainTextEdit()
        self.text.setPlaceholderText(tr("Capture a region, drop or paste an image, or open a file."))
        self.text.textChanged.connect(self._on_text_edited)
        self.grid = QTableWidget()
        self.grid.cellChanged.connect(self._on_cell_edited)
        self.grid.horizontalHeader().setStretchLastSection(True)
        self.markdown = QPlainTextEdit()
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

    def start_streaming(self) -> None:
        """Clear the view for a new answer; the raw text streams into the Text tab."""
        self._result, self._tables = None, []
        self._show_tabs(table=False)
        self.text.setPlainText("")
        self.changed.emit()

    def append(self, piece: str) -> None:
        self.text.moveCursor(QTextCursor.MoveOperation.End)
        self.text.insertPlainText(piece)
        self.text.ensureCursorVisible()

    # ---- results ----------------------------------------------------------------------------------------------

    def show_result(self, result: Result | None) -> None:
        """Show a parsed result (None: an empty view)."""
        self._result = result
        self._tables = [Table(list(t.header), [list(row) for row in t.rows]) for t in getattr(result, "tables", [])]
        is_table, is_fields = isinstance(result, TableResult), isinstance(result, ExtractResult)
        self._show_tabs(table=is_table, fields=is_fields)
        self.text.blockSignals(True)  # setting the text is not an edit
        self.text.setPlainText(result.render("json") if is_fields else
                               result.text if result is not None and not is_table else "")
        self.text.blockSignals(False)
        if is_fields:
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
        return self.result.render(fmt)

    def copy_text(self) -> str:
        """What "Copy" copies: the Markdown of tables, the JSON of extracted fields, else the (edited) text."""
        if isinstance(self._result, ExtractResult):
            return self.rendered("json")
        return self.rendered("md") if isinstance(self._result, TableResult) else self.text.toPlainText()

    def export(self, fmt: str, path: Path) -> None:
        """Write the result in `fmt` to `path` (a final line break added, as text files have)."""
        path.write_text(self.rendered(fmt) + "\n", encoding="utf-8")

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
        table.rows[row][column] = self.grid.item(row, column).text()
        self._update_markdown()
        self.changed.emit()

    def _on_text_edited(self) -> None:
        if isinstance(self._result, TextResult):
            self._result = type(self._result)(self.text.toPlainText())
            self.changed.emit()

    def _update_markdown(self) -> None:
        self.markdown.setPlainText(self.result.render("md") if self._result is not None else "")

