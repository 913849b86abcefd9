"""The images waiting for, being given, or done with an answer, as a list with thumbnails; and the preview."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap, QResizeEvent
from PySide6.QtWidgets import QLabel, QListWidget, QListWidgetItem, QSizePolicy, QWidget

from edgevl.gui.engine_host import Answer
from edgevl.gui.i18n import tr
from edgevl.gui.imaging import to_pixmap

THUMBNAIL = 48


@dataclass(eq=False)
class QueueItem:
    image: Image.Image
    source: str  # file name, "clipboard" or "screen region"
    state: str = "waiting"  # waiting, running, done, failed, cancelled
    answer: Answer | None = None
    error: str = ""
    streamed: str = ""  # the text streamed so far while it runs

    def state_label(self) -> str:
        labels = {"waiting": tr("waiting"), "running": tr("working..."), "done": tr("done"),
                  "failed": tr("failed"), "cancelled": tr("cancelled")}
        return labels[self.state]


class ImageQueue(QListWidget):
    chosen = Signal(object)  # the QueueItem the user selected

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setIconSize(QSize(THUMBNAIL, THUMBNAIL))
        self.currentItemChanged.connect(lambda current, _: current and self.chosen.emit(self._item(current)))

    def add(self, item: QueueItem) -> None:
        row = QListWidgetItem(QIcon(to_pixmap(item.image).scaled(
            THUMBNAIL, THUMBNAIL, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)), "")
        row.setData(Qt.ItemDataRole.UserRole, item)
        self.addItem(row)
        self.refresh(item)

    def items(self) -> list[QueueItem]:
        return [self._item(self.item(row)) for row in range(self.count())]

    def current(self) -> QueueItem | None:
        row = self.currentItem()
        return self._item(row) if row is not None else None

    def next_waiting(self) -> QueueItem | None:
        return next((item for item in self.items() if item.state == "waiting"), None)

    def select(self, item: QueueItem) -> None:
        self.setCurrentRow(self.items().index(item))

    def refresh(self, item: QueueItem) -> None:
        row = self.item(self.items().index(item))
        row.setText(f"{item.source}\n{item.state_label()}")
        row.setToolTip(item.error)

    @staticmethod
    def _item(row: QListWidgetItem) -> QueueItem:
        return row.data(Qt.ItemDataRole.UserRole)


class ImagePreview(QLabel):
    """The current image, scaled to fit, never upscaled past its own size."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._pixmap = QPixmap()
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumSize(160, 120)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.setObjectName("preview")
        self.show_pixmap(QPixmap())

    def show_pixmap(self, pixmap: QPixmap) -> None:
        self._pixmap = pixmap
        if pixmap.isNull():  # an empty drop zone, drawn as such
            self.setStyleSheet("QLabel#preview { border: 2px dashed palette(mid); border-radius: 8px;"
                               " color: palette(mid); margin: 8px; }")
            self.setText(tr("Drop images here"))
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
