"""Test support for the desktop app (needs the `dev` extra: pytest-qt).

Importing this module makes Qt run without a display (QT_QPA_PLATFORM=offscreen) unless a platform was chosen,
so it must be imported before the first QApplication exists - at the top of a test module. Test modules import
the fixtures they use from here (`from edgevl.gui.testing import window`).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from collections.abc import Generator

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PIL import Image  # noqa: E402
from PySide6.QtCore import QRect  # noqa: E402

from edgevl.engines.base import Engine  # noqa: E402
from edgevl.gui.imaging import to_qimage  # noqa: E402
from edgevl.gui.screenshot import Screenshot  # noqa: E402
from edgevl.gui.widgets.main_window import MainWindow  # noqa: E402
from edgevl.request import Request  # noqa: E402

#: Generous: the machine running the tests may be shared and slow.
TIMEOUT_MS = int(os.environ.get("EDGEVL_GUI_TEST_TIMEOUT_MS", "60000"))


@pytest.fixture
def models_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty models folder that `edgevl.api.models_dir()` points at."""
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv("EDGEVL_MODELS", str(folder))
    return folder


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The app's settings and history folder for this test."""
    return tmp_path / "gui-data"


@pytest.fixture
def window(qtbot, data_dir: Path, models_folder: Path) -> MainWindow:
    return open_window(qtbot, data_dir)


def open_window(qtbot, data_dir: Path, **options) -> MainWindow:
    """A shown main window on `data_dir`; closed (engine shut down, history closed) after the test."""
    window = MainWindow(data_dir, **options)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    return window


def wait_until_idle(qtbot, window: MainWindow) -> None:
    """Until no job runs and none waits."""
    qtbot.waitUntil(lambda: window.job is None and window.queue.next_waiting() is None, timeout=TIMEOUT_MS)


def answer_text(window: MainWindow) -> str:
    """What the user would copy."""
    return window.result_view.copy_text()


class SlowEngine(Engine):
    """Streams "tick " every few milliseconds until stopped: a job that only ends by cancelling."""

    description = "slow test engine"

    def __init__(self) -> None:
        super().__init__()
        self.stopped = threading.Event()  # set when the generator was closed: the worker finished cleanly
        self.closed = False

    def stream(self, request: Request) -> Generator[str, None, None]:
        try:
            while True:
                time.sleep(0.01)
                yield "tick "
        finally:
            self.stopped.set()

    def close(self) -> None:
        self.closed = True


class FakeScreenshots:
    """A screenshot handler that returns the given image as the only monitor."""

    name = "test screenshots"

    def __init__(self, image: Image.Image) -> None:
        self.image = image

    def is_compatible(self) -> bool:
        return True

    def is_installed(self) -> bool:
        return True

    def capture(self) -> list[Screenshot]:
        qimage = to_qimage(self.image)
        return [Screenshot(qimage, QRect(0, 0, qimage.width(), qimage.height()))]
