"""The main window: where images come in (capture, drop, paste, open, a whole folder), the task and model are
chosen, and the answer streams in; History is a view of its own next to it.

Images go into a queue and are answered one after another by the engine host; the window only reacts to the
signals of the running job. Each queue item keeps one result per task. Nothing here blocks: files are decoded in
a pool thread, models are loaded and run by the host, and every failure ends as a message in the window (or in
a notification while the window is hidden in the tray).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from collections.abc import Callable, Sequence

from PIL import Image
from PySide6.QtCore import QRect, QSize, QThreadPool, Qt, Signal
from PySide6.QtGui import (
    QAction, QActionGroup, QCloseEvent, QDragEnterEvent, QDropEvent, QGuiApplication, QIcon, QKeySequence, QPixmap,
)
from PySide6.QtWidgets import (
    QComboBox, QFileDialog, QHBoxLayout, QLabel, QMainWindow, QMenu, QProgressBar, QPushButton,
    QSizePolicy, QSplitter, QSystemTrayIcon, QTabBar, QTabWidget, QToolBar, QVBoxLayout, QWidget,
)

from edgevl import api
from edgevl.batch_export import EXPORT_FORMATS, render_records
from edgevl.errors import ImageError
from edgevl.gui import clipboard
from edgevl.gui.capture import CaptureController
from edgevl.gui.engine_host import Answer, EngineChoice, EngineHost, needs_model_message
from edgevl.gui.history import History
from edgevl.gui.i18n import task_labels, tr, without_mnemonic
from edgevl.gui.imaging import from_qimage, to_pixmap
from edgevl.gui.jobs import Job
from edgevl.gui.screen_fit import restore_geometry, saved_geometry
from edgevl.gui.screenshot import HANDLERS, ScreenshotHandler
from edgevl.gui.settings import SETTINGS_FILE, Settings
from edgevl.gui.theme import apply_theme
from edgevl.gui.widgets.error_banner import ErrorBanner
from edgevl.gui.widgets.history_view import HistoryView
from edgevl.gui.widgets.image_queue import ImagePreview, ImageQueue, QueueItem, TaskOutcome
from edgevl.gui.widgets.result_view import FILE_TYPES, ResultView
from edgevl.gui.widgets.task_bar import TaskBar
from edgevl.images import IMAGE_EXTENSIONS, expand_image_files, load_image
from edgevl.tasks import Result, TextResult

HISTORY_FILE = "history.sqlite3"
BATCH_FOLDER = "batches"  # the JSONL files of folder runs, in the data folder
PREFERRED_SIZE = QSize(1180, 720)
TASK_SHORTCUTS = ("Ctrl+1", "Ctrl+2", "Ctrl+3", "Ctrl+4")


class MainWindow(QMainWindow):
    notification = Signal(str, str)  # (title, message): shown by the tray icon, without raising the window
    quit_requested = Signal()

    def __init__(self, data_dir: Path, settings: Settings | None = None, host: EngineHost | None = None,
                 screenshot_handlers: Sequence[ScreenshotHandler] = HANDLERS) -> None:
        super().__init__()
        self.data_dir = data_dir
        self.settings = settings or Settings.load(data_dir / SETTINGS_FILE)
        self.history = History(data_dir / HISTORY_FILE)
        self.host = host or EngineHost(parent=self)
        self.capture = CaptureController(self, screenshot_handlers)
        self.capture.captured.connect(self._on_captured)
        self.capture.failed.connect(self._on_capture_failed)
        if len(self.settings.last_region) == 5:
            index, *rect = self.settings.last_region
            self.capture.last_region = (index, QRect(*rect))
        self.tray: QSystemTrayIcon | None = None  # where the desktop has a tray (set by edgevl.gui.tray)
        self.job: Job | None = None  # the task running now
        self._running: tuple[QueueItem, TaskOutcome] | None = None
        self._shown: QueueItem | None = None
        self._shown_task: str | None = None  # whose result of the shown item is on view
        self._loading: set[Job] = set()  # file-decoding jobs, kept (with their signals) until they report
        self._quitting = False
        self.model_actions = QActionGroup(self)  # the Models menu's entries, rebuilt by refresh_models

        self.setWindowTitle("edgevl")
        self.setWindowIcon(QIcon(str(Path(__file__).parent.parent / "resources" / "edgevl.svg")))
        self.setAcceptDrops(True)
        self._build_actions()
        self.setCentralWidget(self._build_views())
        self._build_menus()
        self._build_toolbar()
        self._build_status_bar()
        self.refresh_models()
        restore_geometry(self, self.settings.window_geometry, PREFERRED_SIZE)

    # ---- building ---------------------------------------------------------------------------------------------

    def _action(self, text: str, slot: Callable[[], Any],
                shortcut: QKeySequence | QKeySequence.StandardKey | str | None = None) -> QAction:
        action = QAction(text, self)
        action.setIconText(without_mnemonic(text))  # the toolbar's words (Qt leaves "(&R)" in Chinese ones)
        action.triggered.connect(lambda: slot())  # not `checked` as an argument
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        self.addAction(action)  # the shortcut works whatever has the focus
        return action

    def _build_actions(self) -> None:
        action = self._action
        self.open_action = action(tr("&Open images..."), self.open_files, "Ctrl+O")
        self.add_folder_action = action(tr("Add &folder..."), self.open_folder, "Ctrl+Shift+O")
        self.capture_action = action(tr("Capture &region"), self.capture.select_region, "Ctrl+Shift+R")
        self.capture_to_clipboard_action = action(tr("Capture to &clipboard"), self.capture_to_clipboard,
                                                  "Ctrl+Shift+C")
        self.capture_again_action = action(tr("Capture &again"), self.capture.capture_again, "Ctrl+Shift+A")
        self.export_all_action = action(tr("&Export all..."), self.ask_to_export_all, "Ctrl+Shift+E")
        self.history_action = action(tr("&History"), self.show_history, "Ctrl+H")
        self.close_action = action(tr("C&lose window"), self.close, "Ctrl+W")
        self.quit_action = action(tr("&Quit"), self.quit, "Ctrl+Q")
        self.copy_action = action(tr("&Copy result"), self.copy_result, "Ctrl+Shift+Y")
        self.copy_tsv_action = action(tr("Copy for &spreadsheet"),
                                      lambda: self.copy_to_clipboard(self.result_view.rendered("tsv")))
        self.paste_action = action(tr("&Paste image"), self.paste, QKeySequence.StandardKey.Paste)
        self.settings_action = action(tr("&Settings..."), self.open_settings, "Ctrl+,")
        self.run_action = action(tr("&Run"), self.run_current, "Ctrl+Return")
        self.cancel_action = action(tr("&Cancel"), self.cancel, "Esc")
        self.models_action = action(tr("&Manage models..."), self.open_model_manager, "Ctrl+M")
        self.readme_action = action(tr("&Read me"), self.show_readme, "F1")
        self.about_action = action(tr("&About edgevl"), self.show_about)

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file = bar.addMenu(tr("&File"))
        for entry in (self.open_action, self.add_folder_action, self.paste_action, None, self.capture_action,
                      self.capture_to_clipboard_action, self.capture_again_action, None, self.export_all_action,
                      self.history_action, None, self.close_action, self.quit_action):
            file.addAction(entry) if entry else file.addSeparator()
        edit = bar.addMenu(tr("&Edit"))
        for entry in (self.copy_action, self.copy_tsv_action, self.paste_action, None, self.settings_action):
            edit.addAction(entry) if entry else edit.addSeparator()
        task_menu = bar.addMenu(tr("&Task"))
        self.task_actions = self._choice_actions(task_menu, self.task, TASK_SHORTCUTS)
        task_menu.addSeparator()
        self.layout_actions = self._choice_actions(task_menu, self.layout_mode)
        task_menu.addSeparator()
        task_menu.addAction(self.run_action)
        task_menu.addAction(self.cancel_action)
        self.models_menu = bar.addMenu(tr("&Models"))
        help_menu = bar.addMenu(tr("&Help"))
        help_menu.addAction(self.readme_action)
        help_menu.addAction(self.about_action)

    def _choice_actions(self, menu: QMenu, combo: QComboBox, shortcuts: Sequence[str] = ()) -> QActionGroup:
        """One checkable menu entry per combo box item; `_check_chosen` keeps them in step with the combo box."""
        group = QActionGroup(self)
        for index in range(combo.count()):
            action = QAction(_with_mnemonic(combo.itemText(index)), group, checkable=True)
            action.triggered.connect(lambda _=False, i=index: combo.setCurrentIndex(i))
            if index < len(shortcuts):
                action.setShortcut(QKeySequence(shortcuts[index]))
            menu.addAction(action)
        self.addActions(group.actions())
        return group

    def _check_chosen(self) -> None:
        for combo, group in ((self.task, self.task_actions), (self.layout_mode, self.layout_actions),
                             (self.model, self.model_actions)):
            actions = group.actions()
            if 0 <= combo.currentIndex() < len(actions):
                actions[combo.currentIndex()].setChecked(True)

    def _build_toolbar(self) -> None:
        toolbar = QToolBar(tr("Main"))
        toolbar.setObjectName("main toolbar")
        toolbar.setMovable(False)
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        for action in (self.capture_action, self.capture_to_clipboard_action, self.capture_again_action,
                       self.open_action, self.add_folder_action, self.paste_action):
            toolbar.addAction(action)
        spacer = QWidget()
        spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        toolbar.addWidget(spacer)
        toolbar.addAction(self.models_action)
        toolbar.addAction(self.settings_action)
        self.addToolBar(toolbar)

    def _build_status_bar(self) -> None:
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(160)
        self.progress.setTextVisible(False)
        self.progress.hide()
        self.statusBar().addPermanentWidget(self.progress)
        self.statusBar().showMessage(tr("Ready"))

    def _build_views(self) -> QWidget:
        self.history_view = HistoryView(self.history)
        self.history_view.copy_requested.connect(self.copy_to_clipboard)
        self.views = QTabWidget()
        self.views.setDocumentMode(True)
        self.views.addTab(self._build_work_view(), tr("&Images"))
        self.views.addTab(self.history_view, tr("Hi&story"))  # Alt+H is the Help menu
        return self.views

    def _build_work_view(self) -> QWidget:
        self.preview = ImagePreview()
        self.queue = ImageQueue()
        self.queue.chosen.connect(self._show_item)
        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self.preview)
        left.addWidget(self.queue)
        left.setSizes([380, 240])
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(self._build_answer_column())
        splitter.setSizes([320, 860])
        splitter.setStretchFactor(1, 1)
        splitter.setChildrenCollapsible(False)
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(6, 6, 6, 0)
        layout.addWidget(self._build_task_bar())
        layout.addWidget(splitter, 1)
        return page

    def _build_task_bar(self) -> TaskBar:
        bar = self.task_bar = TaskBar(self.settings)
        bar.task_changed.connect(self._on_task_changed)
        bar.model_changed.connect(self._on_model_changed)
        bar.choices_changed.connect(self._remember_choices)
        bar.run_requested.connect(self.run_current)
        bar.cancel_button.clicked.connect(self.cancel)
        bar.run_button.setToolTip(self.run_action.shortcut().toString(QKeySequence.SequenceFormat.NativeText))
        # the controls under short names: the menus, the tests and the screenshots reach them
        self.task, self.layout_mode, self.model = bar.task, bar.layout_mode, bar.model
        self.question, self.run_button, self.cancel_button = bar.question, bar.run_button, bar.cancel_button
        return bar

    def _build_answer_column(self) -> QWidget:
        self.error_banner = ErrorBanner()
        self.result_tasks = QTabBar()  # the tasks the shown image has results for
        self.result_tasks.setDocumentMode(True)
        self.result_tasks.setExpanding(False)
        self.result_tasks.tabBarClicked.connect(self._on_result_task_clicked)
        self.result_tasks_row = QWidget()  # "Results:" and the tabs, shown when there are several
        row = QHBoxLayout(self.result_tasks_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel(tr("Results:")))
        row.addWidget(self.result_tasks, 1)
        self.result_tasks_row.hide()
        self.result_view = ResultView()
        self.result_view.changed.connect(self._update_result_buttons)
        self.result_view.edited.connect(self._save_edit)

        column = QWidget()
        layout = QVBoxLayout(column)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.error_banner)
        layout.addWidget(self.result_tasks_row)
        layout.addWidget(self.result_view, 1)
        layout.addLayout(self._build_result_buttons())
        return column

    def _build_result_buttons(self) -> QHBoxLayout:
        self.copy_button = QPushButton(tr("Copy"))
        self.copy_button.clicked.connect(self.copy_result)
        self.copy_tsv_button = QPushButton(tr("Copy for spreadsheet"))
        self.copy_tsv_button.setToolTip(tr("Tab-separated: pastes into spreadsheet cells"))
        self.copy_tsv_button.clicked.connect(self.copy_tsv_action.trigger)
        self.save_button = QPushButton(tr("Save as"))
        self.save_button.setMenu(QMenu(self.save_button))
        self.export_all_button = QPushButton(tr("Export all"))
        self.export_all_button.setToolTip(tr("Every result in the queue, folders included, in one file"))
        self.export_all_button.clicked.connect(self.ask_to_export_all)
        buttons = QHBoxLayout()
        buttons.addWidget(self.copy_button)
        buttons.addWidget(self.copy_tsv_button)
        buttons.addWidget(self.save_button)
        buttons.addStretch(1)
        buttons.addWidget(self.export_all_button)
        self._update_result_buttons()
        return buttons

    # ---- images in ----------------------------------------------------------------------------------------------

    def add_image(self, image: Image.Image, source: str, copy: bool = False, notify: bool = False) -> QueueItem:
        """Queue an image for the current task; it is answered as soon as the ones before it are done. `copy`
        puts the text on the clipboard when done; `notify` says so in a notification."""
        item = QueueItem(image, source)
        task = self.task.currentData()
        if notify and task not in ("ocr", "table"):  # nobody sees a question box from the tray
            task = "ocr"
        item.queue_task(task, copy, notify)
        self.queue.add(item)
        if self.job is None:
            self.queue.select(item)
        self.process_next()
        return item

    def add_folder(self, folder: Path) -> QueueItem | None:
        """Queue every image in `folder` (and below) as one batch on the library's batch runner."""
        files = list(expand_image_files([folder]))
        if not files:
            self.show_error(tr("No images in {folder}.", folder=folder))
            return None
        item = QueueItem(None, f"{folder.name}/", files=files)
        item.queue_task(self.task.currentData())
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

    def open_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, tr("Add a folder of images"))
        if folder:
            self.add_folder(Path(folder))

    def paste(self) -> None:
        """An image from the clipboard, or image files copied in a file manager."""
        mime = QGuiApplication.clipboard().mimeData()
        if mime is not None and mime.hasImage():
            self.add_image(from_qimage(QGuiApplication.clipboard().image()), tr("clipboard"))
        elif mime is not None and mime.hasUrls() and _local_files(mime.urls()):
            self.add_files(_local_files(mime.urls()))
        else:
            self.show_error(tr("The clipboard holds no image."))

    def capture_to_clipboard(self) -> None:
        """Pick a region; its text goes to the clipboard with a notification, and the window stays as it was."""
        self.capture.select_region(to_clipboard=True)

    def _on_captured(self, image: Image.Image, to_clipboard: bool) -> None:
        self.add_image(image, tr("screen region"), copy=to_clipboard or self.settings.copy_captures,
                       notify=to_clipboard)

    def _on_capture_failed(self, message: str) -> None:
        if self.isVisible():
            self.show_error(message)
        else:
            self.notify(tr("Capture failed"), message)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        mime = event.mimeData()
        if mime.hasImage() or _local_files(mime.urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        mime = event.mimeData()
        files = _local_files(mime.urls())
        folders = [path for path in files if path.is_dir()]
        for folder in folders:
            self.add_folder(folder)
        if len(folders) < len(files):
            self.add_files([path for path in files if not path.is_dir()])
        elif not files and mime.hasImage():
            self.add_image(from_qimage(mime.imageData()), tr("dropped image"))
        event.acceptProposedAction()

    # ---- running --------------------------------------------------------------------------------------------

    def run_current(self) -> None:
        """Answer the selected image again with the task and model chosen now; its other tasks' results stay."""
        item = self.queue.current()
        task = self.task.currentData()
        if item is None:
            self.show_error(tr("Add an image first: capture a region, drop or paste an image, or open a file."))
            return
        if task not in self.supported_tasks():
            self._show_needs_model(task)
            return
        if self._running is not None and self._running == (item, item.outcomes.get(task)):
            return  # it is being answered right now
        item.queue_task(task)
        self.queue.refresh(item)
        self._show_item(item)
        self.process_next()

    def process_next(self) -> None:
        """Start the next waiting task unless a job runs (or a question is missing for "Ask")."""
        if self.job is not None:
            return
        item = self.queue.next_waiting()
        if item is None:
            return
        outcome = item.waiting()
        assert outcome is not None, "next_waiting() gives an item with a waiting task"
        if outcome.task == "ask" and not self.question.text().strip():
            self.show_error(tr("Type a question, then press Run."))
            self.question.setFocus()
            return
        self.error_banner.hide()
        outcome.state, outcome.streamed, outcome.error = "running", "", ""
        self._running = (item, outcome)
        options = self._task_options(outcome.task)
        if item.is_batch:
            output = self.data_dir / BATCH_FOLDER / f"{datetime.now():%Y%m%d-%H%M%S}-{outcome.task}.jsonl"
            self.job = self.host.run_batch(self._engine_choice(), item.files, output, outcome.task, **options)
            self.job.signals.progress.connect(self._on_batch_progress)
            self.job.signals.finished.connect(lambda _summary: self._on_batch_done())
            self._set_busy(tr("Reading {source}...", source=item.source), total=len(item.files))
        else:
            assert item.image is not None, "an item that is not a folder has its image"
            self.job = self.host.run_task(self._engine_choice(), outcome.task, [item.image], **options)
            self.job.signals.progress.connect(self._on_piece)
            self.job.signals.finished.connect(self._on_answer)
            self._set_busy(tr("Reading {source}...", source=item.source))
        self.job.signals.status.connect(self.statusBar().showMessage)
        self.job.signals.failed.connect(self._on_failed)
        self.job.signals.cancelled.connect(self._on_cancelled)
        self.cancel_button.setEnabled(True)
        self.queue.refresh(item)
        if self._shown is item:
            self._show_item(item, outcome.task)

    def cancel(self) -> None:
        """Stop the running job and drop the waiting ones."""
        for item in self.queue.queue_items():
            for outcome in item.outcomes.values():
                if outcome.state == "waiting":
                    outcome.state = "cancelled"
            self.queue.refresh(item)
        if self.job is not None:
            self.job.cancel()
            self.statusBar().showMessage(tr("Cancelling..."))

    def supported_tasks(self) -> frozenset[str]:
        return self.host.tasks_of(self._engine_choice())

    def _engine_choice(self) -> EngineChoice:
        settings = self.settings
        return EngineChoice(model=self.task_bar.chosen_model(), threads=settings.threads or None,
                            gpu=settings.gpu, image_tokens=settings.image_tokens or None)

    def _task_options(self, task: str) -> dict:
        return {"max_tokens": self.settings.max_tokens or None, **self.task_bar.options(task)}

    def _set_busy(self, message: str | None, total: int = 0) -> None:
        """A busy bar (or one counting a folder's images) and what is being read; None when idle."""
        self.progress.setVisible(message is not None)
        self.progress.setRange(0, total)
        self.progress.setValue(0)
        if message is not None:
            self.statusBar().showMessage(message)

    def _current_run(self) -> tuple[QueueItem, TaskOutcome]:
        assert self._running is not None, "a job reports only while it runs"
        return self._running

    def _on_piece(self, piece: str) -> None:
        item, outcome = self._current_run()
        outcome.streamed += piece
        if self._shows(item, outcome):
            self.result_view.append(piece)

    def _on_batch_progress(self, event: tuple) -> None:
        item, outcome = self._current_run()
        if event[0] == "start":
            outcome.total = event[1]
            self.progress.setRange(0, max(1, event[1]))
            return
        record = event[1]
        outcome.records.append(record)
        self.progress.setValue(len(outcome.records))
        self.queue.refresh(item)
        if self._shows(item, outcome):
            self.result_view.append(render_records([record], "txt"))

    def _on_batch_done(self) -> None:
        item, outcome = self._finish_job("done")
        outcome.result = TextResult(render_records(outcome.records, "txt").strip())
        failed = sum(record["error"] is not None for record in outcome.records)
        self.statusBar().showMessage(tr("{count} images read, {failed} failed; Export all saves them.",
                                        count=len(outcome.records), failed=failed))
        self._after_job(item, outcome)

    def _on_answer(self, answer: Answer) -> None:
        item, outcome = self._finish_job("done")
        outcome.answer, outcome.result = answer, answer.result
        assert item.image is not None, "answers come for single images (a folder's records go to its JSONL)"
        entry = self.history.add(answer.task, answer.engine, item.source, answer.raw, item.image)
        outcome.history_id = entry.id
        self.history_view.add(entry)
        text = answer.result.text
        if outcome.copy or self.settings.auto_copy:
            self.copy_to_clipboard(text)
        if outcome.notify:
            first_line = next((line.strip() for line in text.splitlines() if line.strip()), tr("(no text found)"))
            self.notify(tr("Copied to the clipboard"), first_line)
        self.statusBar().showMessage(tr("Done: {engine}", engine=answer.engine))
        self._after_job(item, outcome)

    def _on_failed(self, message: str) -> None:
        item, outcome = self._finish_job("failed")
        outcome.error = message
        if outcome.notify:
            self.notify(tr("Capture failed"), message)
        self.statusBar().showMessage(tr("Failed"))
        self._after_job(item, outcome)

    def _on_cancelled(self) -> None:
        item, outcome = self._finish_job("cancelled")
        if outcome.records:  # the folder's finished images stay, in the view and for Export all
            outcome.result = TextResult(render_records(outcome.records, "txt").strip())
        self.statusBar().showMessage(tr("Cancelled"))
        self._after_job(item, outcome)

    def _finish_job(self, state: str) -> tuple[QueueItem, TaskOutcome]:
        (item, outcome), self._running, self.job = self._current_run(), None, None
        outcome.state = state
        self.queue.refresh(item)
        self.cancel_button.setEnabled(False)
        self._set_busy(None)
        return item, outcome

    def _after_job(self, item: QueueItem, outcome: TaskOutcome) -> None:
        if self._shows(item, outcome):
            self._show_item(item, outcome.task)
        self.process_next()

    # ---- showing --------------------------------------------------------------------------------------------

    def _show_item(self, item: QueueItem, task: str | None = None) -> None:
        """The item's result for `task` (default: the task chosen, else the item's latest)."""
        chosen = self.task.currentData()
        task = task or (chosen if chosen in item.outcomes else item.latest)
        self._shown, self._shown_task = item, task
        if item.is_batch:
            self.preview.show_pixmap(QPixmap(), tr("{count} images in {folder}", count=len(item.files),
                                                   folder=item.source))
        else:
            assert item.image is not None, "an item that is not a folder has its image"
            self.preview.show_pixmap(to_pixmap(item.image))
        self._fill_result_tasks(item, task)
        outcome = item.outcomes.get(task)
        if outcome is not None and outcome.result is not None:
            self.result_view.show_result(outcome.result, key=outcome)
        else:
            self.result_view.start_streaming(self._placeholder(outcome, task))
            self.result_view.append(outcome.streamed if outcome is not None else "")
            if outcome is not None and outcome.records:
                self.result_view.append(render_records(outcome.records, "txt"))
        if outcome is not None and outcome.error:
            self._show_failure(outcome)
        else:
            self.error_banner.hide()

    def _placeholder(self, outcome: TaskOutcome | None, task: str) -> str:
        label = task_labels().get(task, task)
        if outcome is None:
            return tr("No {task} result for this image yet: press Run.", task=label)
        return {"waiting": tr("Waiting for its turn..."), "running": tr("Reading..."),
                "cancelled": tr("Cancelled before a result came.")}.get(outcome.state, "")

    def _fill_result_tasks(self, item: QueueItem, task: str) -> None:
        """A tab per task the item has a result for, plus the task on view if it has none yet."""
        tasks = list(item.outcomes) + ([task] if task not in item.outcomes else [])
        labels = task_labels()
        self.result_tasks.blockSignals(True)
        while self.result_tasks.count():
            self.result_tasks.removeTab(0)
        for name in tasks:
            self.result_tasks.setTabData(self.result_tasks.addTab(labels.get(name, name)), name)
        self.result_tasks.setCurrentIndex(tasks.index(task))
        self.result_tasks.blockSignals(False)
        self.result_tasks_row.setVisible(len(tasks) > 1)

    def _shows(self, item: QueueItem, outcome: TaskOutcome) -> bool:
        return self._shown is item and self._shown_task == outcome.task

    def _on_result_task_clicked(self, index: int) -> None:
        """Choosing a task's result also chooses that task, so Run repeats what is shown."""
        if index >= 0:
            self.task.setCurrentIndex(self.task.findData(self.result_tasks.tabData(index)))

    def _show_failure(self, outcome: TaskOutcome) -> None:
        if outcome.error == needs_model_message(outcome.task):
            self._show_needs_model(outcome.task)
        else:
            self.show_error(outcome.error)

    def _show_needs_model(self, task: str) -> None:
        self.show_error(needs_model_message(task), action=(tr("Open the model manager"), self.open_model_manager))

    def show_error(self, message: str, action: tuple[str, Callable[[], None]] | None = None) -> None:
        self.error_banner.show_message(message, action)

    def show_history(self) -> None:
        self.views.setCurrentWidget(self.history_view)

    def notify(self, title: str, message: str) -> None:
        """A desktop notification from the tray icon (the status bar where there is no tray)."""
        self.notification.emit(title, message)
        if self.tray is None:
            self.statusBar().showMessage(f"{title}: {message}", 5000)

    def _update_result_buttons(self) -> None:
        formats = self.result_view.formats()
        for control in (self.copy_button, self.copy_action, self.save_button):
            control.setEnabled(bool(formats))
        self.copy_tsv_button.setVisible(self.result_view.is_table)
        self.copy_tsv_action.setEnabled(self.result_view.is_table)
        menu = self.save_button.menu()
        menu.clear()
        for fmt in formats:
            name, _ = FILE_TYPES[fmt]
            menu.addAction(name, self._saver(fmt))

    def _save_edit(self, outcome: TaskOutcome | None, result: Result | None) -> None:
        """An edit of a queue result: keep it with the item and in the history."""
        if outcome is None or result is None:
            return
        outcome.result = result
        if outcome.history_id is not None:
            self.history.save_edit(outcome.history_id, result)
            self.history_view.entry_edited(outcome.history_id)

    # ---- results out ----------------------------------------------------------------------------------------

    def copy_result(self) -> None:
        if self.views.currentIndex() == self.views.indexOf(self.history_view):
            self.copy_to_clipboard(self.history_view.result_view.copy_text())
        else:
            self.copy_to_clipboard(self.result_view.copy_text())

    def copy_to_clipboard(self, text: str) -> None:
        if clipboard.copy_text(text):
            self.statusBar().showMessage(tr("Copied to the clipboard"), 3000)
        else:
            self.show_error(tr("Could not copy to the clipboard."))

    def _saver(self, fmt: str) -> Callable[[], None]:
        return lambda: self.save_result(fmt)

    def save_result(self, fmt: str) -> None:
        name, pattern = FILE_TYPES[fmt]
        file, _ = QFileDialog.getSaveFileName(self, tr("Save as"), f"result{pattern[1:]}", f"{name} ({pattern})")
        if not file:
            return
        try:
            self.result_view.export(fmt, Path(file))
        except OSError as error:
            self.show_error(tr("Could not save {file}: {error}", file=file, error=error.strerror or error))

    def export_records(self) -> list[dict[str, Any]]:
        """Every result in the queue as batch records: a folder's records as written, images one each."""
        records = []
        for item in self.queue.queue_items():
            for outcome in item.outcomes.values():
                if outcome.records:
                    records += outcome.records
                elif outcome.result is not None or outcome.state == "failed":
                    records.append({"path": item.source, "task": outcome.task,
                                    "output": outcome.result.text if outcome.result is not None else None,
                                    "error": outcome.error or None})
        return records

    def ask_to_export_all(self) -> None:
        if not self.export_records():
            self.show_error(tr("Nothing to export yet: read some images first."))
            return
        filters = {f"{name} (*.{fmt})": fmt for fmt, name in EXPORT_FORMATS.items()}
        file, chosen = QFileDialog.getSaveFileName(self, tr("Export all"), "results.txt", ";;".join(filters))
        if file:
            suffix = Path(file).suffix.lstrip(".")
            self.export_all(Path(file), suffix if suffix in EXPORT_FORMATS else filters.get(chosen, "txt"))

    def export_all(self, path: Path, fmt: str) -> None:
        try:
            path.write_text(render_records(self.export_records(), fmt), encoding="utf-8")
        except OSError as error:
            self.show_error(tr("Could not save {file}: {error}", file=path, error=error.strerror or error))
            return
        self.statusBar().showMessage(tr("Saved {file}", file=path), 5000)

    # ---- models, settings, help -------------------------------------------------------------------------------

    def refresh_models(self) -> None:
        self.task_bar.set_models(api.installed_models(), self.model.currentData() or self.settings.model)
        self.models_menu.clear()
        self.models_menu.addAction(self.models_action)
        self.models_menu.addSeparator()
        for action in self.model_actions.actions():  # the entries of the models installed before
            self.removeAction(action)
        self.model_actions.deleteLater()
        self.model_actions = self._choice_actions(self.models_menu, self.model)
        self._on_model_changed()

    def _on_model_changed(self) -> None:
        """Offer only the tasks the chosen model can do; the others say what they need."""
        supported = self.supported_tasks()
        self.task_bar.offer_tasks(supported)
        for action, index in zip(self.task_actions.actions(), range(self.task.count())):
            action.setEnabled(self.task.itemData(index) in supported)
        self._remember_choices()

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

    def show_readme(self) -> None:
        from edgevl.gui.widgets.help_dialogs import ReadmeDialog

        ReadmeDialog(self).exec()

    def show_about(self) -> None:
        from edgevl.gui.widgets.help_dialogs import AboutDialog

        AboutDialog(self.host.summary, self.model.currentText(), self).exec()

    def _on_task_changed(self, task: str) -> None:
        if self._shown is not None:
            self._show_item(self._shown, task)

    def _remember_choices(self) -> None:
        self.settings.task = self.task_bar.chosen_task()
        self.settings.model = self.task_bar.chosen_model()
        self.settings.caption_length = self.task_bar.caption_length.currentData()
        self.settings.layout = self.layout_mode.currentData()
        self._check_chosen()

    def save_settings(self) -> None:
        region = self.capture.last_region
        if region is not None:
            index, rect = region
            self.settings.last_region = [index, rect.x(), rect.y(), rect.width(), rect.height()]
        self.settings.window_geometry = saved_geometry(self)
        self.settings.save(self.data_dir / SETTINGS_FILE)

    # ---- closing ----------------------------------------------------------------------------------------------

    def quit(self) -> None:
        """Really quit (Ctrl+Q, the tray's Quit), also when closing only hides the window."""
        self._quitting = True
        self.close()
        self.quit_requested.emit()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.result_view.flush_edits()
        self.history_view.result_view.flush_edits()
        self._remember_choices()
        self.save_settings()
        if not self._quitting and self.tray is not None and self.settings.close_to_tray:
            event.ignore()
            self.hide()
            self.notify(tr("edgevl keeps running"), tr("Capture from the tray icon; quit from its menu."))
            return
        self.host.shutdown()
        self.history.close()
        super().closeEvent(event)


def _with_mnemonic(text: str) -> str:
    return text if "&" in text else f"&{text}"


def _load_or_error(path: Path) -> tuple[Path, Image.Image | str]:
    """The decoded image, or the reason it cannot be read (in plain words)."""
    try:
        return path, load_image(path)
    except ImageError as error:
        return path, str(error)


def _local_files(urls) -> list[Path]:
    return [Path(url.toLocalFile()) for url in urls if url.isLocalFile()]
