"""History as its own view: earlier results newest first, with their own selection and their own result pane.

Choosing an entry never touches the queue; edits made here (a corrected table cell, fixed OCR text) are saved
to the history at once, so the entry opens with them next time.
"""

from __future__ import annotations

from datetime import datetime

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView, QHBoxLayout, QHeaderView, QMessageBox, QPushButton, QSplitter, QTreeWidget,
    QTreeWidgetItem, QVBoxLayout, QWidget,
)

from edgevl.gui.history import History, HistoryEntry
from edgevl.gui.i18n import task_labels, tr
from edgevl.gui.widgets.image_queue import ImagePreview
from edgevl.gui.widgets.result_view import ResultView
from edgevl.tasks import Result

PREVIEW_CHARS = 120
TEXT_COLUMN = 2


class HistoryView(QWidget):
    copy_requested = Signal(str)  # the text of the shown entry, for the window's clipboard

    def __init__(self, history: History, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._history = history
        self.list = QTreeWidget()
        self.list.setColumnCount(3)
        self.list.setHeaderLabels([tr("Date"), tr("Task"), tr("Text")])
        self.list.setRootIsDecorated(False)
        self.list.setIconSize(QSize(40, 40))
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        header = self.list.header()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(TEXT_COLUMN, QHeaderView.ResizeMode.Stretch)
        header.setStretchLastSection(True)
        self.list.currentItemChanged.connect(self._on_current_changed)

        self.preview = ImagePreview()
        self.result_view = ResultView()
        self.result_view.edited.connect(self._save_edit)
        self.result_view.start_streaming(tr("Choose an entry to see its result."))
        copy = QPushButton(tr("&Copy"))
        copy.clicked.connect(lambda: self.copy_requested.emit(self.result_view.copy_text()))
        clear = QPushButton(tr("Clear history"))
        clear.clicked.connect(self.ask_to_clear)
        buttons = QHBoxLayout()
        buttons.addWidget(copy)
        buttons.addStretch(1)
        buttons.addWidget(clear)

        shown = QSplitter(Qt.Orientation.Vertical)
        shown.addWidget(self.preview)
        shown.addWidget(self.result_view)
        shown.setSizes([160, 340])
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self.list)
        splitter.addWidget(shown)
        splitter.setSizes([580, 420])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 0)
        layout.addWidget(splitter, 1)
        layout.addLayout(buttons)
        self.reload()

    def reload(self) -> None:
        self.result_view.flush_edits()
        self.list.clear()
        for entry in self._history.entries():
            self.list.addTopLevelItem(self._row(entry))

    def add(self, entry: HistoryEntry) -> None:
        self.list.insertTopLevelItem(0, self._row(entry))

    def entry_edited(self, entry_id: int) -> None:
        """The queue view saved an edit of `entry_id`: show the new text in its row."""
        for index in range(self.list.topLevelItemCount()):
            row = self.list.topLevelItem(index)
            assert row is not None, "index < topLevelItemCount()"
            if row.data(0, Qt.ItemDataRole.UserRole).id == entry_id:
                self._fill(row, self._history.entry(entry_id))

    def ask_to_clear(self) -> None:
        answer = QMessageBox.question(self, tr("Clear history"), tr("Delete all saved results?"))
        if answer == QMessageBox.StandardButton.Yes:
            self.clear()

    def clear(self) -> None:
        self._history.clear()
        self.list.clear()
        self.preview.show_pixmap(QPixmap())
        self.result_view.start_streaming(tr("Choose an entry to see its result."))

    def _row(self, entry: HistoryEntry) -> QTreeWidgetItem:
        row = QTreeWidgetItem()
        self._fill(row, entry)
        return row

    def _fill(self, row: QTreeWidgetItem, entry: HistoryEntry) -> None:
        first_line = next((line for line in entry.restore().text.splitlines() if line.strip()), "")
        first_line = " ".join(first_line.replace("|", " ").split())  # a Markdown table row reads as words
        if len(first_line) > PREVIEW_CHARS:
            first_line = first_line[:PREVIEW_CHARS] + "..."
        thumbnail = QPixmap()
        thumbnail.loadFromData(entry.thumbnail, "PNG")
        row.setIcon(0, QIcon(thumbnail))
        row.setText(0, _when(entry.created))
        row.setText(1, task_labels().get(entry.task, entry.task))
        row.setText(TEXT_COLUMN, first_line)
        for column in range(3):
            row.setToolTip(column, f"{entry.created:%Y-%m-%d %H:%M}\n{entry.source}\n{entry.engine}")
        row.setData(0, Qt.ItemDataRole.UserRole, entry)

    def _on_current_changed(self, current: QTreeWidgetItem | None, _previous: QTreeWidgetItem | None) -> None:
        if current is not None:
            self._show(current)

    def _show(self, row: QTreeWidgetItem) -> None:
        entry: HistoryEntry = row.data(0, Qt.ItemDataRole.UserRole)
        thumbnail = QPixmap()
        thumbnail.loadFromData(entry.thumbnail, "PNG")
        self.preview.show_pixmap(thumbnail)
        self.result_view.show_result(entry.restore(), key=entry.id)

    def _save_edit(self, entry_id: int | None, result: Result | None) -> None:
        if entry_id is None or result is None:
            return
        self._history.save_edit(entry_id, result)
        self.entry_edited(entry_id)


def _when(created: datetime) -> str:
    """As short as it can be while clear: the time for today, no year for this year (leaves room for the text)."""
    now = datetime.now()
    if created.date() == now.date():
        return f"{created:%H:%M}"
    return f"{created:%m-%d %H:%M}" if created.year == now.year else f"{created:%Y-%m-%d %H:%M}"
