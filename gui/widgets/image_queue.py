"""The queue: images (and folders run as a batch) with one result per task each, as a list with thumbnails;
and the image preview.

An item keeps a `TaskOutcome` per task, so reading an image as a table after its OCR leaves the OCR text in
place; running a task again replaces only that task's outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap, QResizeEvent
from PySide6.QtWidgets import QLabel, QListWidget, QListWidgetItem, QSizePolicy, QStyle, QWidget

from edgevl.gui.engine_host import Answer
from edgevl.gui.i18n import task_labels, tr
from edgevl.gui.imaging import to_pixmap
from edgevl.tasks import Result

THUMBNAIL = 48


@dataclass(eq=False)
class TaskOutcome:
    """One task on one queue item: waiting, running, done, failed or cancelled."""

    task: str
    state: str = "waiting"
    answer: Answer | None = None
    result: Result | None = None  # the parsed answer with the user's edits
    error: str = ""
    streamed: str = ""  # the text streamed so far while it runs
    copy: bool = False  # put the text on the clipboard when done (screen captures)
    notify: bool = False  # and say so in a notification ("Capture to clipboard": the window stays hidden)
    history_id: int | None = None  # where edits are saved
    records: list[dict[str, Any]] = field(default_factory=list)  # a batch's records, as edgevl.batch writes them
    total: int = 0  # a batch's number of images to do

    def state_label(self) -> str:
        if self.state == "running" and self.total:
            return tr("{done} of {total}", done=len(self.records), total=self.total)
        labels = {"waiting": tr("waiting"), "running": tr("working..."), "done": tr("done"),
                  "failed": tr("failed"), "cancelled": tr("cancelled")}
        return labels[self.state]


@dataclass(eq=False)
class QueueItem:
    """An image, or a folder's images (`files`) run through the library's batch runner."""

    image: Image.Image | None
    source: str  # file name, "clipboard", "screen region", or a folder
    files: list[Path] = field(default_factory=list)
    outcomes: dict[str, TaskOutcome] = field(default_factory=dict)  # by task, in the order first run
    latest: str = ""  # the task queued last

    @property
    def is_batch(self) -> bool:
        return self.image is None

    def queue_task(self, task: str, copy: bool = False, notify: bool = False) -> TaskOutcome:
        """A fresh waiting outcome for `task`; the other tasks' outcomes stay."""
        self.outcomes.pop(task, None)
        self.outcomes[task] = TaskOutcome(task, copy=copy, notify=notify)
        self.latest = task
        return self.outcomes[task]

    def waiting(self) -> TaskOutcome | None:
        return next((outcome for outcome in self.outcomes.values() if outcome.state == "waiting"), None)

    # the latest run, which the queue row shows
    @property
    def state(self) -> str:
        return self.outcomes[self.latest].state if self.latest else "waiting"

    @property
    def answer(self) -> Answer | None:
        return self.outcomes[self.latest].answer if self.latest else None

    @property
    def error(self) -> str:
        return self.outcomes[self.latest].error if self.latest else ""

    @property
    def streamed(self) -> str:
        return self.outcomes[self.latest].streamed if self.latest else ""

    def summary(self) -> str:
        """Every task's state, e.g. "Text (OCR): done · Table: working...", the latest last."""
        labels = task_labels()
        return " · ".join(f"{labels.get(task, task)}: {outcome.state_label()}"
                          for task, outcome in self.outcomes.items())


class ImageQueue(QListWidget):
    chosen = Signal(object)  # the QueueItem the user selected

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setIconSize(QSize(THUMBNAIL, THUMBNAIL))
        self.setWordWrap(True)
        self.currentItemChanged.connect(self._on_current_changed)

    def add(self, item: QueueItem) -> None:
        if item.is_batch:
            icon = self.style().standardIcon(QStyle.StandardPixmap.SP_DirIcon)
        else:
            assert item.image is not None, "an item that is not a folder has its image"
            icon = QIcon(to_pixmap(item.image).scaled(THUMBNAIL, THUMBNAIL, Qt.AspectRatioMode.KeepAspectRatio,
                                                      Qt.TransformationMode.SmoothTransformation))
        row = QListWidgetItem(icon, "")
        row.setData(Qt.ItemDataRole.UserRole, item)
        self.addItem(row)
        self.refresh(item)

    def queue_items(self) -> list[QueueItem]:  # not items(): QListWidget has one, taking QMimeData
        return [self._item(self.item(row)) for row in range(self.count())]

    def current(self) -> QueueItem | None:
        row = self.currentItem()
        return self._item(row) if row is not None else None

    def next_waiting(self) -> QueueItem | None:
        return next((item for item in self.queue_items() if item.waiting() is not None), None)

    def select(self, item: QueueItem) -> None:
        self.setCurrentRow(self.queue_items().index(item))

    def refresh(self, item: QueueItem) -> None:
        row = self.item(self.queue_items().index(item))
        row.setText(f"{item.source}\n{item.summary()}")
        row.setToolTip(item.error)

    def _on_current_changed(self, current: QListWidgetItem | None, _previous: QListWidgetItem | None) -> None:
        if current:
            self.chosen.emit(self._item(current))

    @staticmethod
    def _item(row: QListWidgetItem) -> QueueItem:
        return row.data(Qt.ItemDataRole.UserRole)


class ImagePreview(QLabel):
    """The current image, scaled to fit, never upscaled past its own size."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._pixmap = QPixmap()
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setWordWrap(True)
        self.setMinimumSize(120, 90)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.setObjectName("preview")
        self.show_pixmap(QPixmap())

    def show_pixmap(self, pixmap: QPixmap, empty_text: str = "") -> None:
        """The image; a null pixmap shows an empty drop zone with `empty_text` (default: "Drop images here")."""
        self._pixmap = pixmap
        if pixmap.isNull():  # an empty drop zone, drawn as such
            self.setStyleSheet("QLabel#preview { border: 2px dashed palette(mid); border-radius: 8px;"
                               " color: palette(mid); margin: 8px; }")
            self.setPixmap(QPixmap())
            self.setText(empty_text or tr("Drop images here"))
        else:
            self.setStyleSheet("")
        self._rescale()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._rescale()

    def _rescale(self) -> None:
        if self._pixmap.isNull():
            return
        size = self._pixmap.size().boundedTo(self.size())
        self.setPixmap(self._pixmap.scaled(size, Qt.AspectRatioMode.KeepAspectRatio,
                                           Qt.TransformationMode.SmoothTransformation))
