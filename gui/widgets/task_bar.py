"""The task bar: what to run - the task with its own options (the OCR layout, a caption's length, the question
for Ask, the schema for Extract), the model - and the Run and Cancel buttons.

It offers only the tasks the chosen model can do (the others stay listed, greyed, saying what they need) and
turns the choices into the options the library's `stream_task` takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast
from collections.abc import Iterable

from PySide6.QtCore import Signal
from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import (
    QComboBox, QFileDialog, QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget,
)

from edgevl import api
from edgevl.gui.engine_host import needs_model_message
from edgevl.gui.i18n import layout_labels, task_labels, tr
from edgevl.gui.settings import Settings
from edgevl.tasks.caption import LENGTHS
from edgevl.tasks.extract import builtin_schemas


class TaskBar(QWidget):
    task_changed = Signal(str)
    model_changed = Signal()
    choices_changed = Signal()  # any choice, for the settings
    run_requested = Signal()

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.task = _combo(task_labels(), settings.task)
        self.task.currentIndexChanged.connect(self._on_task_changed)
        self.layout_mode = _combo(layout_labels(), settings.layout)
        self.layout_mode.setToolTip(tr("How the text is laid out: line by line, joined into paragraphs, or as "
                                       "the engine read it"))
        self.caption_length = _combo(dict(zip(LENGTHS, (tr("short"), tr("medium"), tr("long")))),
                                     settings.caption_length)
        self.schema = self._schema_picker()
        self.model = QComboBox()
        self.model.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model.setMinimumContentsLength(10)  # long model names must not push Run off a small screen
        self.model.currentIndexChanged.connect(self.model_changed)
        for combo in (self.layout_mode, self.caption_length, self.schema, self.model):
            combo.currentIndexChanged.connect(self.choices_changed)
        self.question = QLineEdit()
        self.question.setPlaceholderText(tr("Your question about the image"))
        self.question.returnPressed.connect(self.run_requested)
        self.run_button = QPushButton(tr("Run"))
        self.run_button.setDefault(True)
        self.run_button.clicked.connect(self.run_requested)
        self.cancel_button = QPushButton(tr("Cancel"))
        self.cancel_button.setEnabled(False)
        self.layout_label = _label(tr("La&yout:"), self.layout_mode)

        self._row = QHBoxLayout()
        for widget in (_label(tr("Tas&k:"), self.task), self.task, self.layout_label, self.layout_mode,
                       self.caption_length, self.schema, _label(tr("Mo&del:"), self.model)):
            self._row.addWidget(widget)
        self._row.addWidget(self.model, 1)
        self._row.addWidget(self.run_button)
        self._row.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self._row)
        layout.addWidget(self.question)
        self._on_task_changed()

    def chosen_task(self) -> str:
        return self.task.currentData()

    def chosen_model(self) -> str:
        return self.model.currentData() or api.DEFAULT_MODEL

    def choose_task(self, task: str) -> None:
        self.task.setCurrentIndex(self.task.findData(task))

    def options(self, task: str) -> dict[str, Any]:
        """The chosen options of `task`, as `stream_task` takes them."""
        options: dict[str, Any] = {}
        if task == "ocr" and self.layout_mode.currentData() != "auto":  # "auto" is the library's default
            options["layout"] = self.layout_mode.currentData()
        if task == "caption":
            options["length"] = self.caption_length.currentData()
        if task == "ask":
            options["question"] = self.question.text().strip()
        if task == "extract":
            options["schema"] = self.schema.currentData()
        return options

    def set_models(self, installed: Iterable[api.InstalledModel], wanted: str) -> None:
        """The built-in engine and the installed models; `wanted` stays chosen if it is still there."""
        self.model.blockSignals(True)
        self.model.clear()
        self.model.addItem(tr("Built-in OCR (no model)"), api.DEFAULT_MODEL)
        for model in installed:
            self.model.addItem(f"{model.name} ({model.manifest.quant})", str(model.path))
        self.model.setCurrentIndex(max(0, self.model.findData(wanted)))
        self.model.blockSignals(False)

    def offer_tasks(self, supported: frozenset[str]) -> None:
        """Grey out the tasks the chosen model cannot do, each saying what it needs."""
        items = cast(QStandardItemModel, self.task.model())  # a QComboBox's own model
        for index in range(self.task.count()):
            task = self.task.itemData(index)
            items.item(index).setEnabled(task in supported)
            items.item(index).setToolTip("" if task in supported else needs_model_message(task))
        if self.chosen_task() not in supported:
            self.choose_task("ocr")

    def _on_task_changed(self) -> None:
        task = self.chosen_task()
        self.layout_mode.setVisible(task == "ocr")
        self.layout_label.setVisible(task == "ocr")
        self.caption_length.setVisible(task == "caption")
        self.schema.setVisible(task == "extract")
        self.question.setVisible(task == "ask")
        self._row.invalidate()  # before the first show, hiding alone leaves the old minimum width cached
        self.task_changed.emit(task)
        self.choices_changed.emit()


    def _schema_picker(self) -> QComboBox:
        """Extract's schema: the built-in ones, then any JSON schema file the user opens (the last entry)."""
        picker = _combo({name: schema.get("title", name) for name, schema in builtin_schemas().items()}, "receipt")
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


def _combo(items: dict[str, str], chosen: str) -> QComboBox:
    """A combo box of {value: label}, with `chosen` selected (the first when it is not there)."""
    combo = QComboBox()
    for value, label in items.items():
        combo.addItem(label, value)
    combo.setCurrentIndex(max(0, combo.findData(chosen)))
    return combo


def _label(text: str, buddy: QWidget) -> QLabel:
    """A label whose mnemonic (Alt+letter) moves the focus to `buddy`."""
    label = QLabel(text)
    label.setBuddy(buddy)
    return label
