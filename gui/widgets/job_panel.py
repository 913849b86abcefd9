"""A background job's progress bar and status line, for the model manager's conversion and its Download and
Import dialogs: a job reports ("step", description, total) when a counted step begins and ("advance", amount) as it
goes (converters.Progress, through model_manager.JobProgress); errors stand out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QThreadPool, Signal
from PySide6.QtWidgets import QLabel, QProgressBar, QVBoxLayout, QWidget

from edgevl.gui.i18n import tr
from edgevl.gui.jobs import Job
from edgevl.gui.widgets.error_banner import ERROR_STYLE


class JobPanel(QWidget):
    """A progress bar, a line of status and the running job (converting, downloading, importing a model)."""

    ended = Signal(bool)  # whether a model was added

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.job: Job | None = None
        self._done = 0
        self.progress = QProgressBar()
        self.status = QLabel()
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        self.progress.hide()

    def run(self, job: Job, finished: Callable[[Path], str], cancelled: str) -> Job:
        """Start `job` (which returns a model folder); `finished(folder)` and `cancelled` are the last words."""
        self.job = job
        job.signals.progress.connect(self._on_progress)
        job.signals.finished.connect(lambda folder: self._end(finished(folder), added=True))
        job.signals.failed.connect(lambda message: self._end(message, error=True))
        job.signals.cancelled.connect(lambda: self._end(cancelled))
        self.progress.setRange(0, 0)  # busy until the first counted step
        self.progress.show()
        self.show_message(tr("Starting..."))
        QThreadPool.globalInstance().start(job)
        return job

    def cancel(self, message: str) -> None:
        """Ask the running job to stop; `message` says so until it has."""
        if self.job is not None:
            self.job.cancel()
            self.show_message(message)

    def show_message(self, text: str, error: bool = False) -> None:
        self.status.setStyleSheet(ERROR_STYLE if error else "")
        self.status.setText(text)

    def _on_progress(self, event: tuple) -> None:
        if event[0] == "step":
            _, description, total = event
            self.show_message(description)
            self._done = 0
            self.progress.setRange(0, total or 0)  # 0..0: a busy bar for steps that cannot be counted
            self.progress.setValue(0)
        else:
            self._done += event[1]
            self.progress.setValue(self._done)

    def _end(self, message: str, error: bool = False, added: bool = False) -> None:
        self.job = None
        self.progress.hide()
        self.show_message(message, error)
        self.ended.emit(added)
