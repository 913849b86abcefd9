"""Extracted fields as a form: one row per field, nested objects and lists as expandable rows.

Read-only on purpose: the JSON was validated against its schema as it was generated, and the "Copy" button
copies exactly that JSON.
"""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtWidgets import QTreeWidget, QTreeWidgetItem, QWidget

from edgevl.gui.i18n import tr


class FieldsView(QTreeWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setColumnCount(2)
        self.setHeaderLabels([tr("Field"), tr("Value")])
        self.setAlternatingRowColors(True)

    def show_data(self, data: Any) -> None:
        """Fill the form with a JSON value (an object for most schemas, a list of records for tables)."""
        self.clear()
        for key, value in _children(data):
            self.addTopLevelItem(_item(key, value))
        self.expandAll()
        self.resizeColumnToContents(0)

    def rows(self) -> list[tuple[str, str]]:
        """(field, value) of every top-level row, as shown (for tests and accessibility checks)."""
        rows = [self.topLevelItem(i) for i in range(self.topLevelItemCount())]
        return [(row.text(0), row.text(1)) for row in rows if row is not None]


def _children(value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [(str(key), item) for key, item in value.items()]
    if isinstance(value, list):
        return [(f"{index + 1}", item) for index, item in enumerate(value)]
    return []


def _item(key: str, value: Any) -> QTreeWidgetItem:
    nested = isinstance(value, (dict, list))
    shown = "" if nested else ("—" if value is None else value if isinstance(value, str) else json.dumps(value))
    item = QTreeWidgetItem([key, shown])
    for child_key, child in _children(value):
        item.addChild(_item(child_key, child))
    return item
