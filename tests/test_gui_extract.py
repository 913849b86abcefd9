"""The desktop app's Extract task: the schema picker sends its schema with the request, the fields show as a form,
Copy copies the JSON. (That the embedded engine does not offer it is tested with the other tasks it cannot do.)"""

from __future__ import annotations

import json

import pytest
from PIL import Image
from PySide6.QtGui import QGuiApplication

from edgevl.engines.base import Engine
from edgevl.gui.engine_host import EngineHost
from edgevl.gui.testing import data_dir, models_folder, open_window, wait_until_idle  # noqa: F401 - fixtures
from edgevl.request import Request
from edgevl.tasks.extract import builtin_schemas

pytestmark = pytest.mark.gui
ANSWER = {"name": "Li Wei", "job_title": None, "company": "ACME", "phones": ["+86 10 1234", "+86 139 0000"],
          "emails": ["li@acme.cn"], "website": None, "address": None}


class JsonEngine(Engine):
    """Answers every request with ANSWER and remembers the requests."""

    family = "qwen2vl"
    description = "json test engine"

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []

    def stream(self, request: Request):
        self.requests.append(request)
        yield json.dumps(ANSWER)


def test_extract_shows_a_form_and_copies_json(qtbot, data_dir, models_folder):  # noqa: F811 - fixtures
    engine = JsonEngine()
    window = open_window(qtbot, data_dir, host=EngineHost(opener=lambda choice: engine,
                                                          tasks_of=lambda choice: Engine.tasks))
    bar = window.task_bar
    bar.choose_task("extract")
    assert bar.schema.isVisible() and not bar.caption_length.isVisible()
    bar.schema.setCurrentIndex(bar.schema.findData("business_card"))
    window.add_image(Image.new("RGB", (64, 40), "white"), "card.png")
    wait_until_idle(qtbot, window)
    assert engine.requests[0].json_schema == builtin_schemas()["business_card"]
    view = window.result_view
    assert view.tabs.currentWidget() is view.fields
    rows = dict(view.fields.rows())
    assert rows["name"] == "Li Wei" and rows["job_title"] == "—" and rows["phones"] == ""
    assert view.fields.topLevelItem(3).childCount() == 2  # phones: one row per number
    window.copy_button.click()
    assert json.loads(QGuiApplication.clipboard().text()) == ANSWER
