"""The models folder: what is installed (format, quant, size), converting a checkpoint folder in the
background with a progress bar and a Cancel button, and deleting a model.

An empty folder says what to do instead of showing an empty table; each quant comes with the file sizes and
the memory the released models need at that quant, from the model cards, against this computer's memory.
The converter writes into a hidden staging folder that is renamed into place at the end, so cancelling (which
raises from the progress callback) leaves nothing behind.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import psutil
from PySide6.QtCore import QSize, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView, QCheckBox, QComboBox, QDialog, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QHeaderView,
    QLabel, QLineEdit, QMessageBox, QPushButton, QStackedWidget, QTableWidget, QTableWidgetItem, QVBoxLayout,
    QWidget,
)

from edgevl import api
from edgevl.errors import BackendUnavailable, EdgevlError
from edgevl.gui.engine_host import EngineHost
from edgevl.gui.i18n import tr
from edgevl.gui.jobs import Cancelled, Job
from edgevl.gui.screen_fit import fit_to_screen
from edgevl.gui.widgets.job_panel import JobPanel
from edgevl.model_cards import all_cards
from edgevl.verify import Verification, stored_verification, verify_conversion

class JobProgress:
    """The converter's Progress protocol, reported through a job; `advance` raises to cancel."""

    def __init__(self, job: Job) -> None:
        self._job = job

    def step(self, description: str, total: int | None) -> None:
        self._stop_if_cancelled()
        self._job.report(("step", description, total))

    def advance(self, amount: int = 1) -> None:
        self._stop_if_cancelled()
        self._job.report(("advance", amount))

    def _stop_if_cancelled(self) -> None:
        if self._job.cancel_requested:
            raise Cancelled


def convert_checkpoint(job: Job, checkpoint: Path, output: Path, quant: str, fmt: str = "gguf",
                       verify: bool = True) -> Path:
    """Runs on a pool thread. A cancel that arrives after the last progress call (during llama.cpp's
    quantizer, which cannot be interrupted) still leaves no model behind."""
    try:
        api.convert(checkpoint, output, to=fmt, quant=quant, progress=JobProgress(job))
    except BackendUnavailable:
        raise EdgevlError(converter_missing()) from None
    if job.cancel_requested:
        shutil.rmtree(output, ignore_errors=True)
        raise Cancelled
    if verify:
        verify_step(job, output)
    return output


def verify_step(job: Job, folder: Path) -> None:
    """Runs on a pool thread: compare a fresh conversion with its checkpoint's reference (edgevl.verify); the
    models list shows the result, or why it was skipped."""
    job.report(("step", tr("Comparing the converted model with the checkpoint's reference..."), None))
    verify_conversion(folder)


def verification_item(verification: Verification | None) -> QTableWidgetItem:
    """The --verify result of a conversion: short in the cell, in full as its tooltip, red below the thresholds."""
    if verification is None:
        return QTableWidgetItem("-")
    item = QTableWidgetItem(verification.short())
    below = verification.status == "below"
    item.setToolTip(verification.summary() + (f"\n{verification.reason}" if below else ""))
    if below:
        item.setForeground(QColor("#b3261e"))  # the quant advice's red for what does not fit
    return item


def converter_missing() -> str:
    return tr("This installation of edgevl has no converter (the \u201cconvert\u201d extra). The README's "
              "\u201cGetting real checkpoints\u201d section shows how to add it.")


def quant_advice(quant: str, ram_bytes: int | None = None) -> list[tuple[str, bool]]:
    """(line, fits in memory) per released model whose card lists a size for `quant`: files and memory needed."""
    ram_bytes = ram_bytes if ram_bytes is not None else psutil.virtual_memory().total
    lines = []
    for card in all_cards():
        if quant not in card.sizes_mb or quant not in card.ram_mb:
            continue
        files_mb = card.sizes_mb[quant] + card.sizes_mb.get("mmproj_f16", 0)
        ram_gb = card.ram_mb.get(quant, 0) / 1000
        fits = ram_gb * 1e9 <= ram_bytes
        line = tr("{model}: {size:.1f} GB of files, about {ram:.0f} GB of memory", model=card.name,
                  size=files_mb / 1000, ram=max(1, round(ram_gb)))
        if not fits:
            line += " - " + tr("more than this computer has ({ram:.0f} GB)", ram=ram_bytes / 1e9)
        lines.append((line, fits))
    return lines


class ModelManager(QDialog):
    models_changed = Signal()

    def __init__(self, host: EngineHost, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(tr("Models"))
        self._host = host

        self.table = QTableWidget(0, 7)
        self.table.setHorizontalHeaderLabels([tr("Name"), tr("Format"), tr("Model"), tr("Quant"), tr("Size"),
                                              tr("Folder"), tr("Verified")])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(5, QHeaderView.ResizeMode.Stretch)
        self.empty_hint = QLabel(tr(
            "No models yet. The built-in OCR engine reads text and tables without one. For captions, questions "
            "and harder pages, download a model (Download...), import GGUF files, or convert a Qwen2-VL or "
            "MiniCPM-V checkpoint below: q4_k_m is the smallest that keeps reading quality."))
        self.empty_hint.setWordWrap(True)
        self.empty_hint.setMargin(12)
        self.list_or_hint = QStackedWidget()
        self.list_or_hint.addWidget(self.table)
        self.list_or_hint.addWidget(self.empty_hint)
        self.folder_label = QLabel()
        self.folder_label.setWordWrap(True)
        self.delete_button = QPushButton(tr("Delete model"))
        self.delete_button.clicked.connect(self.ask_to_delete)
        self.download_button = QPushButton(tr("Download..."))
        self.download_button.clicked.connect(lambda: self.open_source_dialog("download"))
        self.import_button = QPushButton(tr("Import GGUF..."))
        self.import_button.clicked.connect(lambda: self.open_source_dialog("import"))

        buttons = QHBoxLayout()
        buttons.addWidget(self.folder_label, 1)
        buttons.addWidget(self.download_button)
        buttons.addWidget(self.import_button)
        buttons.addWidget(self.delete_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.list_or_hint, 1)
        layout.addLayout(buttons)
        layout.addWidget(self._conversion_box())
        self.refresh()
        fit_to_screen(self, QSize(820, 560))

    def _conversion_box(self) -> QGroupBox:
        self.checkpoint = QLineEdit()
        self.checkpoint.setPlaceholderText(tr("Hugging Face checkpoint folder (config.json, *.safetensors)"))
        self.checkpoint.textChanged.connect(self._suggest_name)
        browse = QPushButton(tr("Browse..."))
        browse.clicked.connect(self._browse_checkpoint)
        self.output_name = QLineEdit()
        self.quant = QComboBox()
        for fmt, quant in api.conversion_choices():
            self.quant.addItem(f"{quant} ({fmt.upper()})", f"{fmt}:{quant}")
        self.quant.currentTextChanged.connect(lambda _: self._suggest_name(self.checkpoint.text()))
        self.quant.currentIndexChanged.connect(self._show_quant_advice)
        self.quant_advice = QLabel()  # short lines, not wrapped: a wrapped label leaves gaps in a form
        self.verify = QCheckBox(tr("Then compare it with the checkpoint's reference (transformers, CPU)"))
        self.verify.setChecked(True)
        self.convert_button = QPushButton(tr("Convert"))
        self.convert_button.clicked.connect(self._convert_clicked)
        self.cancel_button = QPushButton(tr("Cancel"))
        self.cancel_button.clicked.connect(self.cancel_conversion)
        self.panel = JobPanel()
        self.panel.ended.connect(self._conversion_ended)
        self.step_label = self.panel.status

        checkpoint_row = QHBoxLayout()
        checkpoint_row.addWidget(self.checkpoint, 1)
        checkpoint_row.addWidget(browse)
        action_row = QHBoxLayout()  # the checkbox beside the buttons: a row less, so the models list keeps room
        action_row.addWidget(self.verify)
        action_row.addStretch(1)
        action_row.addWidget(self.convert_button)
        action_row.addWidget(self.cancel_button)
        box = QGroupBox(tr("Convert a checkpoint"))
        form = QFormLayout(box)
        form.addRow(tr("Checkpoint:"), checkpoint_row)
        form.addRow(tr("Model name:"), self.output_name)
        form.addRow(tr("Quant:"), self.quant)
        form.addRow("", self.quant_advice)
        form.addRow(action_row)
        form.addRow(self.panel)
        if not self.quant.count():
            self.quant.setEnabled(False)
            self.show_message(converter_missing(), error=True)
        self._show_quant_advice()
        self._set_converting(False)
        return box

    def show_message(self, text: str, error: bool = False) -> None:
        """A line under the conversion controls; errors stand out."""
        self.panel.show_message(text, error)

    @property
    def job(self) -> Job | None:
        """The conversion running now."""
        return self.panel.job

    def _show_quant_advice(self) -> None:
        quant = (self.quant.currentData() or ":").split(":")[1]
        lines = quant_advice(quant)
        self.quant_advice.setText("<br>".join(line if fits else f"<span style='color:#b3261e'>{line}</span>"
                                              for line, fits in lines))
        self.quant_advice.setVisible(bool(lines))

    # ---- the list ---------------------------------------------------------------------------------------------

    def refresh(self) -> None:
        self.models = api.installed_models()
        self.folder_label.setText(tr("Models folder: {folder}", folder=api.models_dir()))
        self.table.setRowCount(len(self.models))
        for row, model in enumerate(self.models):
            manifest = model.manifest
            size = f"{manifest.total_bytes() / 1e6:,.0f} MB"
            cells = [model.name, manifest.format.upper(), manifest.card or manifest.family, manifest.quant, size,
                     str(model.path)]
            for column, text in enumerate(cells):
                self.table.setItem(row, column, QTableWidgetItem(text))
            self.table.setItem(row, len(cells), verification_item(stored_verification(manifest)))
        self.table.resizeColumnsToContents()
        self.list_or_hint.setCurrentWidget(self.table if self.models else self.empty_hint)
        self.delete_button.setEnabled(bool(self.models))

    def open_source_dialog(self, kind: str) -> QDialog:
        """The Download ("download") or Import GGUF ("import") dialog; a model it adds shows up in the list."""
        from edgevl.gui.widgets.model_sources import DownloadDialog, ImportDialog

        dialog = DownloadDialog(self) if kind == "download" else ImportDialog(self)
        dialog.model_added.connect(self._list_changed)
        dialog.show()
        return dialog

    def _list_changed(self) -> None:
        self.refresh()
        self.models_changed.emit()

    def ask_to_delete(self) -> None:
        row = self.table.currentRow()
        if not 0 <= row < len(self.models):
            return
        model = self.models[row]
        answer = QMessageBox.question(self, tr("Delete model"),
                                      tr("Delete {name} and its files ({folder})?", name=model.name, folder=model.path))
        if answer == QMessageBox.StandardButton.Yes:
            self.delete(model.path)

    def delete(self, folder: Path) -> Job:
        """Close the model if it is loaded, then remove its folder."""
        job = self._host.release(folder)
        job.signals.finished.connect(lambda _: self._remove_folder(folder))
        return job

    def _remove_folder(self, folder: Path) -> None:
        try:
            shutil.rmtree(folder)
        except OSError as error:
            QMessageBox.warning(self, tr("Delete model"), tr("Could not delete {folder}: {error}",
                                                             folder=folder, error=error.strerror or error))
        self._list_changed()

    # ---- converting -------------------------------------------------------------------------------------------

    def start_conversion(self, checkpoint: Path, name: str, quant: str, fmt: str = "gguf") -> Job:
        output = api.models_dir() / name
        verify = self.verify.isChecked()
        self._set_converting(True)
        return self.panel.run(Job(lambda job: convert_checkpoint(job, checkpoint, output, quant, fmt, verify)),
                              lambda folder: tr("Converted: {folder}", folder=folder),
                              tr("Conversion cancelled; nothing was kept."))

    def cancel_conversion(self) -> None:
        self.panel.cancel(tr("Cancelling..."))

    def _convert_clicked(self) -> None:
        typed = self.checkpoint.text().strip()
        checkpoint = Path(typed).expanduser()
        name = self.output_name.text().strip()
        if not typed:
            self.show_message(tr("Choose a checkpoint folder first."), error=True)
        elif not checkpoint.exists():
            self.show_message(tr("The folder {folder} does not exist.", folder=checkpoint), error=True)
        elif not checkpoint.is_dir():
            self.show_message(tr("{folder} is a file; choose the folder that holds config.json.",
                                 folder=checkpoint), error=True)
        elif not name or "/" in name or "\\" in name:
            self.show_message(tr("Give the model a name (no slashes)."), error=True)
        else:
            fmt, quant = self.quant.currentData().split(":")
            self.start_conversion(checkpoint, name, quant, fmt)

    def _conversion_ended(self, added: bool) -> None:
        self._set_converting(False)
        if added:
            self._list_changed()

    def _set_converting(self, converting: bool) -> None:
        self.convert_button.setEnabled(not converting and self.quant.count() > 0)
        self.cancel_button.setEnabled(converting)

    def _browse_checkpoint(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, tr("Checkpoint folder"), self.checkpoint.text())
        if folder:
            self.checkpoint.setText(folder)

    def _suggest_name(self, checkpoint: str) -> None:
        base = re.sub(r"[^a-z0-9._-]+", "-", Path(checkpoint.strip()).name.lower()).strip("-")
        if base:
            fmt, quant = (self.quant.currentData() or "gguf:").split(":")
            self.output_name.setText(f"{base}-{quant}" if fmt == "gguf" else f"{base}-onnx-{quant}")

    def done(self, result: int) -> None:
        """Closing the window cancels a running conversion (it would otherwise go on unseen)."""
        self.cancel_conversion()
        super().done(result)
