"""The main window: where images come in (capture, drop, paste, open), the task and model are chosen, and the
answer streams in.

Images go into a queue and are answered one after another by the engine host; the window only reacts to the
signals of the running job. Nothing here blocks: files are decoded in a pool thread, models are loaded and run
by the host, and every failure ends as a message in the window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image
from PySide6.QtCore import QRect, QThreadPool, Qt
from PySide6.QtGui import (
    QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QGuiApplication, QIcon, QKeySequence, QPixmap,
)
from PySide6.QtWidgets import (
    QComboBox, QFileDialog, QHBoxLayout, QLabel, QLineEdit, QMainWindow, QMenu, QPushButton, QSizePolicy, QSplitter,
    QToolBar, QVBoxLayout, QWidget,
)

from edgevl import api
from edgevl.errors import ImageError
from edgevl.gui import clipboard
from edgevl.gui.capture import CaptureController
from edgevl.gui.engine_host import Answer, EngineChoice, EngineHost
from edgevl.gui.history import History, HistoryEntry
from edgevl.gui.i18n import task_labels, tr
from edgevl.gui.imaging import from_qimage, to_pixmap
from edgevl.gui.jobs import Job
from edgevl.gui.screenshot import HANDLERS, ScreenshotHandler
from edgevl.gui.settings import SETTINGS_FILE, Settings
from edgevl.gui.theme import apply_theme
from edgevl.gui.widgets.history_panel import HistoryPanel
from edgevl.gui.widgets.image_queue import ImagePreview, ImageQueue, QueueItem
from edgevl.gui.widgets.result_view import FILE_TYPES, ResultView
from edgevl.images import IMAGE_EXTENSIONS, load_image
from edgevl.tasks.caption import LENGTHS
from edgevl.tasks.extract import builtin_schemas

HISTORY_FILE = "history.sqlite3"


class MainWindow(QMainWindow):
    def __init__(self, data_dir: Path, settings: Settings | None = None, host: EngineHost | None = None,
                 screenshot_handlers: Sequence[ScreenshotHandler] = HANDLERS) -> None:
        super().__init__()
        self.data_dir = data_dir
        self.settings = settings or Settings.load(data_dir / SETTINGS_FILE)
        self.history = History(data_dir / HISTORY_FILE)
        self.host = host or EngineHost(parent=self)
        self.capture = CaptureController(self, screenshot_handlers)
        self.capture.captured.connect(lambda image: self.add_image(image, tr("screen region")))
        self.capture.failed.connect(self.show_error)
        if len(self.settings.last_region) == 5:
            index, *rect = self.settings.last_region
            self.capture.last_region = (index, QRect(*rect))
        self.job: Job | None = None  # the task running now
        self._running: QueueItem | None = None
        self._shown: QueueItem | None = None
        self._loading: set[Job] = set()  # file-decoding jobs, kept (with their signals) until they report

        self.setWindowTitle("edgevl")
        self.setWindowIcon(QIcon(str(Path(__file__).parent.parent / "resources" / "edgevl.svg")))
        self.setAcceptDrops(True)
        self.resize(1180, 720)
        self._build_actions()
        self._build_toolbar()
        self.setCentralWidget(self._build_body())
        self.refresh_models()
        self._on_task_changed()
        self.statusBar().showMessage(tr("Ready"))

    # ---- building ---------------------------------------------------------------------------------------------

    def _build_actions(self) -> None:
        def action(text: str, slot, shortcut: QKeySequence | str | None = None) -> QAction:
            created = QAction(text, self)
            created.triggered.connect(slot)
            if shortcut is not None:
                created.setShortcut(QKeySequence(shortcut))
            self.addAction(created)
            return created

        self.capture_action = action(tr("Capture region"), self.capture.select_region, "Ctrl+Shift+R")
        self.capture_again_action = action(tr("Capture again"), self.capture.capture_again, "Ctrl+Shift+A")
        self.open_action = action(tr("Open..."), self.open_files, QKeySequence.StandardKey.Open)
        self.paste_action = action(tr("Paste"), self.paste, QKeySequence.StandardKey.Paste)
        self.models_action = action(tr("Models..."), self.open_model_manager)
        self.settings_action = action(tr("Settings..."), self.open_settings)

    def _build_toolbar(self) -> None:
        toolbar = QToolBar(tr("Main"))
        toolbar.setMovable(False)
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        for action in (self.capture_action, self.capture_again_action, self.open_action, self.paste_action):
            toolbar.addAction(action)
        spacer = QWidget()
        spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        toolbar.addWidget(spacer)
        toolbar.addAction(self.models_action)
        toolbar.addAction(self.settings_action)
        self.addToolBar(toolbar)

    def _build_body(self) -> QWidget:
        self.preview = ImagePreview()
        self.queue = ImageQueue()
        self.queue.chosen.connect(self._show_item)
        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self.preview)
        left.addWidget(self.queue)
        left.setSizes([420, 220])

        self.history_panel = HistoryPanel(self.history)
        self.history_panel.chosen.connect(self._show_history_entry)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(self._build_answer_column())
        splitter.addWidget(self.history_panel)
        splitter.setSizes([300, 620, 260])
        splitter.setStretchFactor(1, 1)
        return splitter

    def _build_answer_column(self) -> QWidget:
        self.task = QComboBox()
        for name, label in task_labels().items():
            self.task.addItem(label, name)
        self.task.setCurrentIndex(max(0, self.task.findData(self.settings.task)))
        self.task.currentIndexChanged.connect(self._on_task_changed)
        self.caption_length = QComboBox()
        for length, label in zip(LENGTHS, (tr("short"), tr("medium"), tr("long"))):
            self.caption_length.addItem(label, length)
        self.caption_length.setCurrentIndex(max(0, self.caption_length.findData(self.settings.caption_length)))
        self.caption_length.currentIndexChanged.connect(self._remember_choices)
        self.schema = self._build_schema_picker()
        self.model = QComboBox()
        self.model.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.model.currentIndexChanged.connect(self._remember_choices)
        self.question = QLineEdit()
        self.question.setPlaceholderText(tr("Your question about the image"))
        self.question.returnPressed.connect(self.run_current)
        self.run_button = QPushButton(tr("Run"))
        self.run_button.setDefault(True)
        self.run_button.clicked.connect(self.run_current)
        self.cancel_button = QPushButton(tr("Cancel"))
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)

        choices = QHBoxLayout()
        choices.addWidget(QLabel(tr("Task:")))
        choices.addWidget(self.task)
        choices.addWidget(self.caption_length)
        choices.addWidget(self.schema)
        choices.addWidget(QLabel(tr("Model:")))
        choices.addWidget(self.model, 1)
        choices.addWidget(self.run_button)
        choices.addWidget(self.cancel_button)

        self.error_banner = QLabel()
        self.error_banner.setObjectName("error")
        self.error_banner.setWordWrap(True)
        self.error_banner.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_banner.setStyleSheet("QLabel#error { background: #fde2e1; color: #8a1c14; border: 1px solid #f3a59f;"
                                        " border-radius: 4px; padding: 6px; }")
        self.error_banner.hide()
        self.result_view = ResultView()
        self.result_view.changed.connect(self._update_result_buttons)

        column = QWidget()
        layout = QVBoxLayout(column)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(choices)
        layout.addWidget(self.question)
        layout.addWidget(self.error_banner)
        layout.addWidget(self.result_view, 1)
        layout.addLayout(self._build_result_buttons())
        return column

    def _build_schema_picker(self) -> QComboBox:
        """Extract's schema: the built-in ones, then any JSON schema file the user opens (the last entry)."""
        picker = QComboBox()
        for name, schema in builtin_schemas().items():
            picker.addItem(schema.get("title", name), name)
        picker.addItem(tr("Schema file..."), None)
        picker.activated.connect(self._on_schema_activated)
        return picker

    def _on_schema_activated(self, index: int) -> None:
        if self.schema.itemData(index) is not None:
            return
        path, _ = QFileDialog.getOpenFileName(self, tr("Open a JSON schema"), "", f"{tr('JSON schema')} (*.json)")
        if path:
            self.schema.insertItem(index, Path(path).name, path)
        self.schema.setCurrentIndex(index if path else 0)

    def _build_result_buttons(self) -> QHBoxLayout:
        self.copy_button = QPushButton(tr("Copy"))
        self.copy_button.clicked.connect(lambda: self.copy_to_clipboard(self.result_view.copy_text()))
        self.copy_tsv_button = QPushButton(tr("Copy for spreadsheet"))
        self.copy_tsv_button.setToolTip(tr("Tab-separated: pastes into spreadsheet cells"))
        self.copy_tsv_button.clicked.connect(lambda: self.copy_to_clipboard(self.result_view.rendered("tsv")))
        self.save_button = QPushButton(tr("Save as"))
        self.save_button.setMenu(QMenu(self.save_button))
        buttons = QHBoxLayout()
        buttons.addWidget(self.copy_button)
        buttons.addWidget(self.copy_tsv_button)
        buttons.addWidget(self.save_button)
        buttons.addStretch(1)
        self._update_result_buttons()
        return buttons

    # ---- images in ----------------------------------------------------------------------------------------------

    def add_image(self, image: Image.Image, source: str) -> QueueItem:
        """Queue an image; it is answered with the current task as soon as the ones before it are done."""
        item = QueueItem(image, source)
        self.queue.add(item)
        if self.job is None:
            self.queue.select(item)
        self.process_next()
        return item

    def add_files(self, paths: Sequence[Path]) -> Job:
        """Decode the files in a pool thread, then queue them; unreadable ones are reported by name."""
        job = Job(lambda job: [_load_or_error(path) for path in paths])
        job.signals.finished.connect(self._on_files_loaded)
        job.signals.failed.connect(self.show_error)
        for signal in (job.signals.finished, job.signals.failed):
            signal.connect(lambda *_: self._loading.discard(job))
        self._loading.add(job)
        QThreadPool.globalInstance().start(job)
        return job

    def _on_files_loaded(self, loaded: list[tuple[Path, Image.Image | str]]) -> None:
        errors = [outcome for _, outcome in loaded if isinstance(outcome, str)]
        for path, outcome in loaded:
            if not isinstance(outcome, str):
                self.add_image(outcome, path.name)
        if errors:
            self.show_error("\n".join(errors))

    def open_files(self) -> None:
        patterns = " ".join(f"*{extension}" for extension in IMAGE_EXTENSIONS)
        files, _ = QFileDialog.getOpenFileNames(self, tr("Open images"), "", f"{tr('Images')} ({patterns})")
        if files:
            self.add_files([Path(file) for file in files])

    def paste(self) -> None:
        """An image from the clipboard, or image files copied in a file manager."""
        mime = QGuiApplication.clipboard().mimeData()
        if mime is not None and mime.hasImage():
            self.add_image(from_qimage(QGuiApplication.clipboard().image()), tr("clipboard"))
        elif mime is not None and mime.hasUrls() and _local_files(mime.urls()):
            self.add_files(_local_files(mime.urls()))
        else:
            self.show_error(tr("The clipboard holds no image."))

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        mime = event.mimeData()
        if mime.hasImage() or _local_files(mime.urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        mime = event.mimeData()
        if _local_files(mime.urls()):
            self.add_files(_local_files(mime.urls()))
        elif mime.hasImage():
            self.add_image(from_qimage(mime.imageData()), tr("dropped image"))
        event.acceptProposedAction()

    # ---- running --------------------------------------------------------------------------------------------

    def run_current(self) -> None:
        """Answer the selected image again, with the task and model chosen now."""
        item = self.queue.current()
        if item is None:
            self.show_error(tr("Add an image first: capture a region, drop or paste an image, or open a file."))
            return
        if item is not self._running:
            item.state, item.answer, item.error = "waiting", None, ""
            self.queue.refresh(item)
        self.process_next()

    def process_next(self) -> None:
        """Start the next waiting image unless a job runs (or a question is missing for "Ask")."""
        if self.job is not None:
            return
        item = self.queue.next_waiting()
        if item is None:
            return
        task = self.task.currentData()
        if task == "ask" and not self.question.text().strip():
            self.show_error(tr("Type a question, then press Run."))
            self.question.setFocus()
            return
        self._start(item, task)

    def _start(self, item: QueueItem, task: str) -> None:
        self.error_banner.hide()
        item.state, item.streamed, item.error = "running", "", ""
        self.queue.refresh(item)
        self._running = item
        self.job = self.host.run_task(self._engine_choice(), task, [item.image], **self._task_options(task))
        self.job.signals.progress.connect(self._on_piece)
        self.job.signals.status.connect(self.statusBar().showMessage)
        self.job.signals.finished.connect(self._on_answer)
        self.job.signals.failed.connect(self._on_failed)
        self.job.signals.cancelled.connect(self._on_cancelled)
        self.cancel_button.setEnabled(True)
        if self._shown is item:
            self._show_item(item)

    def cancel(self) -> None:
        """Stop the running job and drop the waiting ones."""
        for item in self.queue.items():
            if item.state == "waiting":
                item.state = "cancelled"
                self.queue.refresh(item)
        if self.job is not None:
            self.job.cancel()
            self.statusBar().showMessage(tr("Cancelling..."))

    def _engine_choice(self) -> EngineChoice:
        settings = self.settings
        return EngineChoice(model=self.model.currentData() or api.DEFAULT_MODEL, threads=settings.threads or None,
                            gpu=settings.gpu, image_tokens=settings.image_tokens or None)

    def _task_options(self, task: str) -> dict:
        options: dict = {"max_tokens": self.settings.max_tokens or None}
        if task == "caption":
            options["length"] = self.caption_length.currentData()
        if task == "ask":
            options["question"] = self.question.text().strip()
        if task == "extract":
            options["schema"] = self.schema.currentData()
        return options

    def _on_piece(self, piece: str) -> None:
        self._running.streamed += piece
        if self._shown is self._running:
            self.result_view.append(piece)

    def _on_answer(self, answer: Answer) -> None:
        item = self._finish_job("done")
        item.answer = answer
        entry = self.history.add(answer.task, answer.engine, item.source, answer.raw, item.image)
        self.history_panel.add(entry)
        if self._shown is item:
            self.result_view.show_result(answer.result)
        if self.settings.auto_copy:
            self.copy_to_clipboard(answer.result.text)
        self.statusBar().showMessage(tr("Done: {engine}", engine=answer.engine))
        self.process_next()

    def _on_failed(self, message: str) -> None:
        item = self._finish_job("failed")
        item.error = message
        self.show_error(message)
        self.statusBar().showMessage(tr("Failed"))
        self.process_next()

    def _on_cancelled(self) -> None:
        self._finish_job("cancelled")
        self.statusBar().showMessage(tr("Cancelled"))
        self.process_next()

    def _finish_job(self, state: str) -> QueueItem:
        item, self._running, self.job = self._running, None, None
        item.state = state
        self.queue.refresh(item)
        self.cancel_button.setEnabled(False)
        return item

    # ---- showing --------------------------------------------------------------------------------------------

    def _show_item(self, item: QueueItem) -> None:
        self._shown = item
        self.preview.show_pixmap(to_pixmap(item.image))
        if item.answer is not None:
            self.result_view.show_result(item.answer.result)
        else:
            self.result_view.start_streaming()
            self.result_view.append(item.streamed)
        self.error_banner.setVisible(bool(item.error))
        self.error_banner.setText(item.error)

    def _show_history_entry(self, entry: HistoryEntry) -> None:
        thumbnail = QPixmap()
        thumbnail.loadFromData(entry.thumbnail, "PNG")
        self._shown = None
        self.preview.show_pixmap(thumbnail)
        self.result_view.show_result(entry.restore())
        self.error_banner.hide()

    def show_error(self, message: str) -> None:
        self.error_banner.setText(message)
        self.error_banner.show()

    def _update_result_buttons(self) -> None:
        formats = self.result_view.formats()
        self.copy_button.setEnabled(bool(formats))
        self.copy_tsv_button.setVisible(self.result_view.is_table)
        self.save_button.setEnabled(bool(formats))
        menu = self.save_button.menu()
        menu.clear()
        for fmt in formats:
            name, _ = FILE_TYPES[fmt]
            menu.addAction(name, lambda chosen=fmt: self.save_result(chosen))

    # ---- results out ----------------------------------------------------------------------------------------

    def copy_to_clipboard(self, text: str) -> None:
        if clipboard.copy_text(text):
            self.statusBar().showMessage(tr("Copied to the clipboard"), 3000)
        else:
            self.show_error(tr("Could not copy to the clipboard."))

    def save_result(self, fmt: str) -> None:
        name, pattern = FILE_TYPES[fmt]
        file, _ = QFileDialog.getSaveFileName(self, tr("Save as"), f"result{pattern[1:]}", f"{name} ({pattern})")
        if not file:
            return
        try:
            self.result_view.export(fmt, Path(file))
        except OSError as error:
            self.show_error(tr("Could not save {file}: {error}", file=file, error=error.strerror or error))

    # ---- models and settings --------------------------------------------------------------------------------

    def refresh_models(self) -> None:
        wanted = self.model.currentData() or self.settings.model
        self.model.blockSignals(True)
        self.model.clear()
        self.model.addItem(tr("Built-in OCR (no model)"), api.DEFAULT_MODEL)
        for installed in api.installed_models():
            label = f"{installed.name} ({installed.manifest.quant})"
            self.model.addItem(label, str(installed.path))
        self.model.setCurrentIndex(max(0, self.model.findData(wanted)))
        self.model.blockSignals(False)

    def open_model_manager(self) -> None:
        from edgevl.gui.widgets.model_manager import ModelManager

        manager = ModelManager(self.host, self)
        manager.models_changed.connect(self.refresh_models)
        manager.exec()

    def open_settings(self) -> None:
        from edgevl.gui.widgets.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self)
        if dialog.exec():
            self.apply_settings(dialog.chosen())

    def apply_settings(self, settings: Settings) -> None:
        self.settings = settings
        apply_theme(settings.theme)
        self.save_settings()

    def _on_task_changed(self) -> None:
        task = self.task.currentData()
        self.caption_length.setVisible(task == "caption")
        self.schema.setVisible(task == "extract")
        self.question.setVisible(task == "ask")
        self._remember_choices()

    def _remember_choices(self) -> None:
        self.settings.task = self.task.currentData()
        self.settings.model = self.model.currentData() or api.DEFAULT_MODEL
        self.settings.caption_length = self.caption_length.currentData()

    def save_settings(self) -> None:
        region = self.capture.last_region
        if region is not None:
            index, rect = region
            self.settings.last_region = [index, rect.x(), rect.y(), rect.width(), rect.height()]
        self.settings.save(self.data_dir / SETTINGS_FILE)

    def closeEvent(self, event: QCloseEvent) -> None:
        self._remember_choices()
        self.save_settings()
        self.host.shutdown()
        self.history.close()
        super().closeEvent(event)


def _load_or_error(path: Path) -> tuple[Path, Image.Image | str]:
    """The decoded image, or the reason it cannot be read (in plain words)."""
    try:
        return path, load_image(path)
    except ImageError as error:
        return path, str(error)


def _local_files(urls) -> list[Path]:
    return [Path(url.toLocalFile()) for url in urls if url.isLocalFile()]
