"""Earlier results with their thumbnails, newest first; choosing one shows it again."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QMessageBox, QPushButton, QVBoxLayout, QWidget

from edgevl.gui.history import History, HistoryEntry
from edgevl.gui.i18n import task_labels, tr

PREVIEW_CHARS = 60


class HistoryPanel(QWidget):
    chosen = Signal(object)  # HistoryEntry

    def __init__(self, history: History, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._history = history
        self.list = QListWidget()
        self.list.setIconSize(QSize(48, 48))
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.itemActivated.connect(self._choose)
        self.list.itemClicked.connect(self._choose)
        clear = QPushButton(tr("Clear history"))
        clear.clicked.connect(self.ask_to_clear)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(clear)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel(tr("History")))
        layout.addWidget(self.list, 1)
        layout.addLayout(buttons)
        self.reload()

    def reload(self) -> None:
        self.list.clear()
        for entry in self._history.entries():
            self.list.addItem(self._row(entry))

    def add(self, entry: HistoryEntry) -> None:
        self.list.insertItem(0, self._row(entry))

    def ask_to_clear(self) -> None:
        answer = QMessageBox.question(self, tr("Clear history"), tr("Delete all saved results?"))
        if answer == QMessageBox.StandardButton.Yes:
            self.clear()

    def clear(self) -> None:
        self._history.clear()
        self.list.clear()

    def _row(self, entry: HistoryEntry) -> QListWidgetItem:
        first_line = next((line for line in entry.restore().text.splitlines() if line.strip()), "")
        first_line = " ".join(first_line.replace("|", " ").split())  # a Markdown table row reads as words
        if len(first_line) > PREVIEW_CHARS:
            first_line = first_line[:PREVIEW_CHARS] + "..."
        thumbnail = QPixmap()
        thumbnail.loadFromData(entry.thumbnail, "PNG")
        task = task_labels().get(entry.task, entry.task)
        row = QListWidgetItem(QIcon(thumbnail), f"{entry.created:%Y-%m-%d %H:%M} · {task}\n{first_line}")
        row.setToolTip(f"{entry.source}\n{entry.engine}")
        row.setData(Qt.ItemDataRole.UserRole, entry)
        return row

    def _choose(self, row: QListWidgetItem) -> None:
        self.chosen.emit(row.data(Qt.ItemDataRole.UserRole))
