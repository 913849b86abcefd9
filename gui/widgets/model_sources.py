"""Getting a model without a checkpoint at hand: downloading one from the catalogue (edgevl.hub.pull, the library
behind `edgevl pull`) and importing GGUF files made by other tools (edgevl.gguf_import, behind `edgevl import`).

Both run in a background job and only call the library. A download reports its bytes through the converters'
Progress protocol (JobProgress); Cancel raises from it, the bytes that arrived stay in the Hugging Face cache, and
the next download of the same model continues from there - also after the app was closed or killed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psutil
from PySide6.QtCore import QSize, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QDialog, QFileDialog, QFormLayout, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
    QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from edgevl import api
from edgevl.errors import BackendUnavailable, EdgevlError
from edgevl.gui.i18n import tr
from edgevl.gui.jobs import Job
from edgevl.gui.screen_fit import fit_to_screen
from edgevl.gui.widgets.job_panel import JobPanel
from edgevl.gui.widgets.model_manager import JobProgress, converter_missing, verify_step
from edgevl.manifest import read_manifest
from edgevl.model_cards import ModelCard, all_cards
from edgevl.verify import awaits_verification

#: the red of lines that say something does not fit (as the model manager's quant advice)
WARNING_COLOR = "#b3261e"


def pull_model(job: Job, card: ModelCard, fmt: str, quant: str) -> Path:
    """Runs on a pool thread: download the card's model and convert it to `fmt` at `quant` (edgevl.hub.pull)."""
    try:
        from edgevl.hub import pull

        folder, _ = pull(card.id, to=fmt, quant=quant, progress=JobProgress(job))
    except ImportError:
        raise EdgevlError(tr("Downloading needs huggingface_hub: pip install 'edgevl[pull]'")) from None
    except BackendUnavailable:
        raise EdgevlError(converter_missing()) from None
    if awaits_verification(read_manifest(folder)):
        verify_step(job, folder)
    return folder


def import_model(text: Path, mmproj: Path | None) -> Path:
    """Runs on a pool thread: a model folder from GGUF files (or a folder of them)."""
    try:
        from edgevl.gguf_import import import_gguf
    except ImportError:
        raise EdgevlError(converter_missing()) from None
    folder, _ = import_gguf(text, mmproj)
    return folder


class DownloadDialog(QDialog):
    """The catalogue (model cards): download size, memory needed against this computer's, licence, formats."""

    model_added = Signal()

    def __init__(self, parent: QWidget | None = None, ram_bytes: int | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(tr("Download a model"))
        self.cards = [card for card in all_cards() if card.hub_id]
        self._ram_bytes = ram_bytes if ram_bytes is not None else psutil.virtual_memory().total

        self.table = QTableWidget(len(self.cards), 5)
        self.table.setHorizontalHeaderLabels([tr("Model"), tr("Download"), tr("Memory needed"), tr("Licence"),
                                              tr("Formats")])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.currentCellChanged.connect(lambda row, *_: self._show_card(row))
        self.quant = QComboBox()
        self.quant.currentIndexChanged.connect(lambda _: self._show_card(self.table.currentRow()))
        self.advice = QLabel()
        self.advice.setWordWrap(True)
        self.download_button = QPushButton(tr("Download"))
        self.download_button.clicked.connect(self.start_download)
        self.cancel_button = QPushButton(tr("Cancel"))
        self.cancel_button.clicked.connect(self.cancel)
        self.panel = JobPanel()
        self.panel.ended.connect(self._ended)

        buttons = QHBoxLayout()
        buttons.addWidget(QLabel(tr("Quant:")))
        buttons.addWidget(self.quant)
        buttons.addStretch(1)
        buttons.addWidget(self.download_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.advice)
        layout.addLayout(buttons)
        layout.addWidget(self.panel)
        # the catalogue's models are checkpoints, converted after the download
        self._can_convert = bool(api.conversion_choices())
        self._fill_table()
        self._set_running(False)
        if not self._can_convert:
            self.panel.show_message(converter_missing(), error=True)
        fit_to_screen(self, QSize(760, 480))

    def _fill_table(self) -> None:
        for row, card in enumerate(self.cards):
            quant = card.recommended_quant
            ram_mb = card.ram_mb.get(quant)
            cells = [card.name, f"{card.checkpoint_mb / 1e3:,.1f} GB", card.ram_text(quant), card.license,
                     ", ".join(fmt.upper() for fmt in card.formats)]
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if column == 2 and ram_mb and ram_mb * 1e6 > self._ram_bytes:
                    item.setForeground(QBrush(QColor(WARNING_COLOR)))
                self.table.setItem(row, column, item)
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        if self.cards:
            self.table.selectRow(0)

    def select(self, card_id: str) -> None:
        self.table.selectRow(next(row for row, card in enumerate(self.cards) if card.id == card_id))

    @property
    def card(self) -> ModelCard | None:
        row = self.table.currentRow()
        return self.cards[row] if 0 <= row < len(self.cards) else None

    def _show_card(self, row: int) -> None:
        if not 0 <= row < len(self.cards):
            return
        card = self.cards[row]
        choices = self._choices(card)
        if [self.quant.itemData(index) for index in range(self.quant.count())] != choices:
            self.quant.blockSignals(True)
            self.quant.clear()
            for choice in choices:
                fmt, quant = choice.split(":")
                self.quant.addItem(f"{quant} ({fmt.upper()})", choice)
            self.quant.setCurrentIndex(max(0, self.quant.findData(f"gguf:{card.recommended_quant}")))
            self.quant.blockSignals(False)
        quant = (self.quant.currentData() or ":").split(":")[1]
        files_mb = card.sizes_mb.get(quant, 0) + card.sizes_mb.get("mmproj_f16", 0) if quant in card.sizes_mb else 0
        lines = [tr("Downloads the {size:.1f} GB checkpoint from {repo}, then converts it to {files:.1f} GB of "
                    "model files.", size=card.checkpoint_mb / 1e3, repo=card.hub_id, files=files_mb / 1e3)
                 if files_mb else
                 tr("Downloads the {size:.1f} GB checkpoint from {repo}, then converts it.",
                    size=card.checkpoint_mb / 1e3, repo=card.hub_id)]
        ram_mb = card.ram_mb.get(quant)
        if ram_mb:
            line = tr("Needs about {ram:.1f} GB of memory{how}; this computer has {total:.1f} GB.", ram=ram_mb / 1e3,
                      total=self._ram_bytes / 1e9,
                      how="" if quant in card.ram_measured else " " + tr("(estimated from the file sizes)"))
            too_much = ram_mb * 1e6 > self._ram_bytes
            lines.append(f"<span style='color:{WARNING_COLOR}'>{line}</span>" if too_much else line)
        self.advice.setText("<br>".join(lines))

    @staticmethod
    def _choices(card: ModelCard) -> list[str]:
        """"format:quant" a card can be pulled to: its GGUF quants (the card has their sizes), and ONNX's where the
        model runs as ONNX and the export extra is installed."""
        gguf = [f"gguf:{quant}" for quant in card.sizes_mb if not quant.startswith("mmproj")]
        onnx = [f"{fmt}:{quant}" for fmt, quant in api.conversion_choices() if fmt == "onnx" and fmt in card.formats]
        return gguf + onnx

    def start_download(self) -> Job | None:
        card, choice = self.card, self.quant.currentData()
        if card is None or choice is None:
            self.panel.show_message(tr("Choose a model first."), error=True)
            return None
        fmt, quant = choice.split(":")
        self._set_running(True)
        return self.panel.run(Job(lambda job: pull_model(job, card, fmt, quant)),
                              lambda folder: tr("Downloaded: {folder}", folder=folder),
                              tr("Download stopped. Download it again to continue where it stopped."))

    def cancel(self) -> None:
        self.panel.cancel(tr("Stopping..."))

    @property
    def job(self) -> Job | None:
        return self.panel.job

    def _ended(self, added: bool) -> None:
        self._set_running(False)
        if added:
            self.model_added.emit()

    def _set_running(self, running: bool) -> None:
        self.download_button.setEnabled(not running and self._can_convert)
        self.cancel_button.setEnabled(running)
        self.table.setEnabled(not running)
        self.quant.setEnabled(not running)

    def done(self, result: int) -> None:
        """Closing the window stops a download (the next one continues it)."""
        self.cancel()
        super().done(result)


class ImportDialog(QDialog):
    """GGUF files from llama.cpp, LM Studio or Ollama: the language model file and its vision projector, or a
    folder holding both."""

    model_added = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(tr("Import GGUF files"))
        self.text = QLineEdit()
        self.text.setPlaceholderText(tr("Language model .gguf (an Ollama blob works too)"))
        self.mmproj = QLineEdit()
        self.mmproj.setPlaceholderText(tr("Vision projector (mmproj) .gguf; empty for a folder"))
        self.import_button = QPushButton(tr("Import"))
        self.import_button.clicked.connect(self._import_clicked)
        self.panel = JobPanel()
        self.panel.ended.connect(self._ended)

        folder_button = QPushButton(tr("Choose a folder..."))
        folder_button.clicked.connect(self._browse_folder)

        form = QFormLayout()
        form.addRow(tr("Language model:"), self._with_button(
            self.text, lambda: self._browse_file(self.text, tr("Language model GGUF"))))
        form.addRow(tr("Vision projector:"), self._with_button(
            self.mmproj, lambda: self._browse_file(self.mmproj, tr("Vision projector GGUF"))))
        folder_hint = QLabel(tr("Or a folder holding both, as LM Studio keeps them:"))
        buttons = QHBoxLayout()
        buttons.addWidget(folder_hint)
        buttons.addWidget(folder_button)
        buttons.addStretch(1)
        buttons.addWidget(self.import_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.panel)
        layout.addStretch(1)
        fit_to_screen(self, QSize(640, 180))

    @staticmethod
    def _with_button(field: QLineEdit, browse: Callable[[], None]) -> QHBoxLayout:
        button = QPushButton(tr("File..."))
        button.clicked.connect(browse)
        row = QHBoxLayout()
        row.addWidget(field, 1)
        row.addWidget(button)
        return row

    def _browse_file(self, field: QLineEdit, title: str) -> None:
        path, _ = QFileDialog.getOpenFileName(self, title, field.text(), tr("GGUF files (*.gguf);;All files (*)"))
        if path:
            field.setText(path)

    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, tr("Folder of GGUF files"), self.text.text())
        if folder:
            self.text.setText(folder)
            self.mmproj.clear()

    def _import_clicked(self) -> None:
        text, mmproj = self.text.text().strip(), self.mmproj.text().strip()
        if not text:
            self.panel.show_message(tr("Choose the language model file or a folder first."), error=True)
            return
        self.start_import(Path(text).expanduser(), Path(mmproj).expanduser() if mmproj else None)

    def start_import(self, text: Path, mmproj: Path | None) -> Job:
        self.import_button.setEnabled(False)
        return self.panel.run(Job(lambda job: import_model(text, mmproj)),
                              lambda folder: tr("Imported: {folder}", folder=folder), tr("Import cancelled."))

    @property
    def job(self) -> Job | None:
        return self.panel.job

    def _ended(self, added: bool) -> None:
        self.import_button.setEnabled(True)
        if added:
            self.model_added.emit()
