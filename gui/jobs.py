"""Background work with results delivered as Qt signals: one small `Job` class for inference, conversion and
file loading alike.

A `Job` runs a plain function on a thread-pool thread. The function gets the job itself, so it can report
progress (`job.report(value)`, `job.status(text)`) and look at `job.cancel_requested` between steps. Whatever
happens, exactly one of `finished`, `failed` or `cancelled` is emitted, and errors never escape into Qt (an
exception leaving a worker thread would abort the whole app).
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from collections.abc import Callable

from PySide6.QtCore import QObject, QRunnable, Signal

from edgevl.errors import EdgevlError
from edgevl.gui.i18n import tr

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised inside a job's function to stop it when `cancel_requested` became true."""


class JobSignals(QObject):
    """Created on the GUI thread, so receivers there get the signals queued, safely, from the worker.

    Connect QObject methods, functions or lambdas. Not a bound method of a built-in type (`list.append`): with
    PySide6 6.12 that connection made later jobs' signals go undelivered (seen in the tests).
    """

    progress = Signal(object)  # whatever the job reports: a streamed text piece, a conversion step...
    status = Signal(str)  # a line for the status bar ("loading model...")
    finished = Signal(object)  # the function's return value
    failed = Signal(str)  # a message in plain words
    cancelled = Signal()


class Job(QRunnable):
    def __init__(self, work: Callable[[Job], Any]) -> None:
        super().__init__()
        self.signals = JobSignals()
        self._work = work
        self._cancel = threading.Event()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Ask the function to stop at its next check; it finishes cleanly and `cancelled` is emitted."""
        self._cancel.set()

    def report(self, value: Any) -> None:
        self.signals.progress.emit(value)

    def status(self, text: str) -> None:
        self.signals.status.emit(text)

    def run(self) -> None:
        try:
            result = self._work(self)
        except Cancelled:
            self.signals.cancelled.emit()
        except EdgevlError as error:
            self.signals.failed.emit(str(error))
        except Exception as error:  # noqa: BLE001 - a bug or an out-of-memory must not take the app down
            log.exception("background job failed")
            self.signals.failed.emit(tr("Unexpected error: {error}", error=f"{type(error).__name__}: {error}"))
        else:
            if self.cancel_requested:
                self.signals.cancelled.emit()
            else:
                self.signals.finished.emit(result)
