"""A dismissible message above the result: what went wrong, in plain words, with an optional button that leads
to the fix (for example the model manager when a task needs a model)."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QToolButton, QWidget

from edgevl.gui.i18n import tr

#: Shared by every error the app shows inline (the banner, the model manager's messages).
ERROR_STYLE = "background: #fde2e1; color: #8a1c14; border: 1px solid #f3a59f; border-radius: 4px; padding: 6px;"


class ErrorBanner(QFrame):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("error")
        self.setStyleSheet(f"QFrame#error {{ {ERROR_STYLE} }} QFrame#error QLabel {{ color: #8a1c14; }}")
        self._label = QLabel()
        self._label.setWordWrap(True)
        self._label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.action_button = QPushButton()
        self._action: Callable[[], None] | None = None
        self.action_button.clicked.connect(self._run_action)
        self.close_button = QToolButton()
        self.close_button.setText("\u2715")
        self.close_button.setToolTip(tr("Dismiss"))
        self.close_button.setAccessibleName(tr("Dismiss"))
        self.close_button.setAutoRaise(True)
        self.close_button.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 2, 2, 2)
        layout.addWidget(self._label, 1)
        layout.addWidget(self.action_button, 0, Qt.AlignmentFlag.AlignTop)
        layout.addWidget(self.close_button, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_message(self, message: str, action: tuple[str, Callable[[], None]] | None = None) -> None:
        """Show `message`; `action` is (button text, what it does)."""
        self._label.setText(message)
        self._action = action[1] if action else None
        self.action_button.setText(action[0] if action else "")
        self.action_button.setVisible(action is not None)
        self.show()

    def text(self) -> str:
        return self._label.text()

    def _run_action(self) -> None:
        self.hide()
        if self._action is not None:
            self._action()
