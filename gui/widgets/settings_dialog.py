"""Preferences: engine options, language, theme, copying to the clipboard, the tray, and how to bind a global
capture shortcut."""

from __future__ import annotations

import dataclasses

from PySide6.QtCore import QSize
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit, QSpinBox, QWidget,
)

from edgevl.families.qwen2vl import vision_encode_seconds
from edgevl.gui.i18n import LANGUAGES, tr
from edgevl.gui.screen_fit import fit_to_screen
from edgevl.gui.settings import THEMES, Settings

CAPTURE_COMMAND = "edgevl-gui --capture"
DIALOG_WIDTH = 560


class SettingsDialog(QDialog):
    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(tr("Settings"))
        self._settings = settings
        self.threads = _spin(0, 256, settings.threads, tr("automatic"))
        self.gpu = QCheckBox(tr("Offload to the GPU when available"))
        self.gpu.setChecked(settings.gpu)
        self.image_tokens = _spin(0, 16384, settings.image_tokens, tr("model default"), step=256)
        self.encode_estimate = _note("")
        self.max_tokens = _spin(0, 32768, settings.max_tokens, tr("task default"), step=256)
        self.language = QComboBox()
        self.language.addItem(tr("System language"), "")
        for code, name in LANGUAGES.items():
            self.language.addItem(name, code)
        self.language.setCurrentIndex(max(0, self.language.findData(settings.language)))
        self.theme = QComboBox()
        for theme, label in zip(THEMES, (tr("Follow the system"), tr("Light"), tr("Dark"))):
            self.theme.addItem(label, theme)
        self.theme.setCurrentIndex(max(0, self.theme.findData(settings.theme)))
        self.auto_copy = QCheckBox(tr("Copy every result to the clipboard"))
        self.auto_copy.setChecked(settings.auto_copy)
        self.copy_captures = QCheckBox(tr("Copy the text of screen captures to the clipboard"))
        self.copy_captures.setChecked(settings.copy_captures)
        self.close_to_tray = QCheckBox(tr("Closing the window keeps edgevl running in the tray"))
        self.close_to_tray.setChecked(settings.close_to_tray)
        shortcut = QLineEdit(CAPTURE_COMMAND)
        shortcut.setReadOnly(True)

        form = QFormLayout(self)
        form.addRow(tr("CPU threads:"), self.threads)
        form.addRow("", self.gpu)
        form.addRow(tr("Image-token budget:"), self.image_tokens)
        form.addRow("", self.encode_estimate)
        self._form = form
        self.image_tokens.valueChanged.connect(self._show_encode_estimate)
        self._show_encode_estimate(self.image_tokens.value())
        form.addRow(tr("Answer length limit (tokens):"), self.max_tokens)
        form.addRow(tr("Language:"), self.language)
        form.addRow("", _note(tr("A new language applies after a restart.")))
        form.addRow(tr("Theme:"), self.theme)
        form.addRow("", self.copy_captures)
        form.addRow("", self.auto_copy)
        form.addRow("", self.close_to_tray)
        form.addRow(tr("Global shortcut:"), shortcut)
        form.addRow("", _note(tr("Bind this command to a key in your system's keyboard settings: the running app "
                                 "captures a region and puts its text on the clipboard (works on Wayland too).")))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        fit_to_screen(self, QSize(DIALOG_WIDTH, form.totalHeightForWidth(DIALOG_WIDTH)))  # wrapped notes in full

    def _show_encode_estimate(self, image_tokens: int) -> None:
        """The cost of the budget where users choose it: the vision encoder's time grows with its square."""
        seconds = f"{vision_encode_seconds(image_tokens):.0f}"
        self.encode_estimate.setText(tr("An image at this budget takes about {seconds} s to encode with Qwen2-VL-2B "
                                        "on a 2-core CPU (less on a GPU).", seconds=seconds) if image_tokens else "")
        self._form.setRowVisible(self.encode_estimate, image_tokens > 0)  # "model default": no gap in the form

    def chosen(self) -> Settings:
        """A copy of the settings with the dialog's values."""
        return dataclasses.replace(
            self._settings, threads=self.threads.value(), gpu=self.gpu.isChecked(),
            image_tokens=self.image_tokens.value(), max_tokens=self.max_tokens.value(),
            language=self.language.currentData(), theme=self.theme.currentData(), auto_copy=self.auto_copy.isChecked(),
            copy_captures=self.copy_captures.isChecked(), close_to_tray=self.close_to_tray.isChecked(),
        )


def _spin(low: int, high: int, value: int, zero_means: str, step: int = 1) -> QSpinBox:
    """A number box whose 0 shows as words ("automatic")."""
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setSingleStep(step)
    spin.setSpecialValueText(zero_means)
    spin.setValue(value)
    return spin


def _note(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setEnabled(False)  # greyed: an explanation, not a control
    return label
