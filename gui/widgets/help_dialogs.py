"""Help: the README (the package's own long description, so it is there offline and matches the installed
version) and "About": versions of the parts that matter for bug reports, and the engine in use."""

from __future__ import annotations

import importlib.metadata
import platform

from PySide6 import __version__ as pyside_version
from PySide6.QtCore import QSize, Qt, qVersion
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QTextBrowser, QVBoxLayout, QWidget

from edgevl.gui.i18n import tr
from edgevl.gui.screen_fit import fit_to_screen

#: Packages whose versions an "About" box and a bug report need.
PACKAGES = ("edgevl", "onnxruntime", "onnxruntime-gpu", "llama-cpp-python", "rapidocr", "rapid-table")


def readme_text() -> str:
    """The README as installed with the package (its long description)."""
    try:
        # typeshed's PackageMetadata protocol leaves out get_payload; the object is an email.message.Message
        return importlib.metadata.metadata("edgevl").get_payload() or ""  # type: ignore[attr-defined]
    except importlib.metadata.PackageNotFoundError:
        return ""


def versions() -> dict[str, str]:
    found = {"Python": platform.python_version(), "Qt": qVersion(), "PySide6": pyside_version}
    for package in PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


class ReadmeDialog(QDialog):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(tr("Read me"))
        self.browser = QTextBrowser()
        self.browser.setOpenExternalLinks(True)
        self.browser.setMarkdown(readme_text() or tr("The README is not installed with this copy of edgevl."))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.browser)
        layout.addWidget(buttons)
        fit_to_screen(self, QSize(900, 700))


class AboutDialog(QDialog):
    def __init__(self, engine: str, model: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(tr("About edgevl"))
        engine_line = engine or tr("not loaded yet (loads on the first task): {model}", model=model)
        rows = "".join(f"<tr><td style='padding-right: 16px'>{name}</td><td>{version}</td></tr>"
                       for name, version in versions().items())
        self.text = QLabel(f"<h3>edgevl</h3><p>{tr('On-device OCR, tables and captions.')}</p>"
                           f"<p><b>{tr('Engine in use:')}</b> {engine_line}</p><table>{rows}</table>")
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.text)
        layout.addWidget(buttons)
