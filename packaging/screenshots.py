"""Drive the desktop app into a few states and save a PNG of each (run by packaging/screenshots.sh under Xvfb,
once per scaling).

Uses the embedded engine on the example images and a models folder with made-up manifests (the model manager
only reads manifests), in a throwaway data folder: nothing of the user's is touched. Per language: the empty
window, an OCR result, a table read after the OCR of the same image (two results), the history view, the model
manager, the settings, About, and the whole screen (does the window fit?); plus the dark theme in English.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication, QWidget

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
TIMEOUT_S = 120


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="edgevl-screenshots-"))
    os.environ["EDGEVL_MODELS"] = str(scratch / "models")
    write_example_models(scratch / "models")
    app = QApplication(sys.argv[:1])
    for language in ("en", "zh_CN"):
        language_states(scratch / language, out / language, language)
    dark_state(scratch / "dark", out)
    app.quit()
    print(f"screenshots in {out}")


def language_states(data: Path, out: Path, language: str) -> None:
    from edgevl.gui.app import create_window
    from edgevl.gui.settings import SETTINGS_FILE, Settings
    from edgevl.gui.widgets.help_dialogs import AboutDialog
    from edgevl.gui.widgets.model_manager import ModelManager
    from edgevl.gui.widgets.model_sources import DownloadDialog, ImportDialog
    from edgevl.gui.widgets.settings_dialog import SettingsDialog

    out.mkdir(parents=True, exist_ok=True)
    Settings(language=language).save(data / SETTINGS_FILE)
    window = create_window(data)
    show(window)
    save(window, out / "1-empty.png")
    save_screen(out / "0-screen.png")

    window.add_files([EXAMPLES / "receipt.png"])
    wait_for_answer(window, count=1)
    save(window, out / "2-ocr.png")

    window.add_files([EXAMPLES / "table.png"])
    wait_for_answer(window, count=2)
    window.task.setCurrentIndex(window.task.findData("table"))
    window.run_current()
    wait_for_answer(window, count=2)
    save(window, out / "3-table-after-ocr.png")

    window.show_history()
    history = window.history_view
    newest = history.list.topLevelItem(0)
    assert newest is not None, "the history is empty: the answers above were not recorded"
    history.list.setCurrentItem(newest)
    pump(0.3)
    save(window, out / "4-history.png")

    for name, dialog in (("5-model-manager", ModelManager(window.host, window)),
                         ("6-settings", SettingsDialog(window.settings, window)),
                         ("7-about", AboutDialog(window.host.summary, window.model.currentText(), window)),
                         ("8-download", DownloadDialog(window)),
                         ("9-import", ImportDialog(window))):
        show(dialog)
        save(dialog, out / f"{name}.png")
        dialog.close()
    window.close()


def dark_state(data: Path, out: Path) -> None:
    from edgevl.gui.app import create_window
    from edgevl.gui.settings import SETTINGS_FILE, Settings

    Settings(theme="dark", task="table").save(data / SETTINGS_FILE)
    window = create_window(data)
    show(window)
    window.add_files([EXAMPLES / "table.png"])
    wait_for_answer(window, count=1)
    save(window, out / "8-dark.png")
    window.close()


def write_example_models(folder: Path) -> None:
    """Manifests of two converted models as the converter writes them (the GGUF files themselves are absent)."""
    from edgevl.manifest import FileEntry, Manifest, write_manifest

    for name, quant, text_mb in (("qwen2-vl-2b-q4", "q4_k_m", 986), ("qwen2-vl-7b-q8", "q8_0", 8100)):
        (folder / name).mkdir(parents=True)
        files = {"text": FileEntry(f"{name}.gguf", text_mb * 10**6, "0" * 64),
                 "mmproj": FileEntry("mmproj-f16.gguf", 1_330 * 10**6, "0" * 64)}
        write_manifest(folder / name, Manifest(format="gguf", family="qwen2vl", quant=quant, files=files,
                                               card=name.rsplit("-", 1)[0] + "-instruct"))


def show(widget: QWidget) -> None:
    widget.show()
    widget.raise_()
    pump(0.5)  # let it lay out and paint


def wait_for_answer(window, count: int) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not (len(window.queue.queue_items()) == count and window.job is None and window.queue.next_waiting() is None):
        if time.monotonic() > deadline:
            raise TimeoutError("no answer in time")
        pump(0.05)
    pump(0.3)


def pump(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def save(widget: QWidget, path: Path) -> None:
    widget.grab().save(str(path))
    print(path)


def save_screen(path: Path) -> None:
    """The whole (virtual) screen: shows whether the window fits it."""
    QGuiApplication.primaryScreen().grabWindow(0).save(str(path))
    print(path)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "build" / "screenshots")
