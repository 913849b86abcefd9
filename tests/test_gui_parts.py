"""The desktop app's parts without a main window: translations, settings, history, platform handlers, the
single-instance socket."""

from __future__ import annotations

import ast
import io
import json
import string
from pathlib import Path

import pytest
from PIL import Image

import edgevl.gui
from edgevl.gui import clipboard, screenshot
from edgevl.gui.history import History
from edgevl.gui.i18n import ZH_CN, set_language, tr
from edgevl.gui.instance import InstanceServer, send_to_running_app
from edgevl.gui.settings import Settings
from edgevl.gui.testing import TIMEOUT_MS, FakeScreenshots

pytestmark = pytest.mark.gui


def translated_literals() -> set[str]:
    """Every string literal passed to tr() in gui/."""
    found = set()
    for path in Path(edgevl.gui.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "tr" and node.args:
                assert isinstance(node.args[0], ast.Constant), f"{path}: tr() needs a literal to be translatable"
                found.add(node.args[0].value)
    return found


def test_every_ui_string_has_a_chinese_translation_with_the_same_fields():
    literals = translated_literals()
    assert len(literals) > 50
    assert sorted(literals - ZH_CN.keys()) == []
    assert sorted(ZH_CN.keys() - literals) == []  # no stale entries
    for english, chinese in ZH_CN.items():
        assert _fields(english) == _fields(chinese), english


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_tr_follows_the_language():
    try:
        assert set_language("zh_CN") == "zh_CN"
        assert tr("Copy") == "复制"
        assert tr("Done: {engine}", engine="x").endswith("x")
    finally:
        set_language("en")
    assert tr("Copy") == "Copy"


def test_settings_round_trip_and_survive_a_damaged_file(tmp_path):
    path = tmp_path / "settings.json"
    Settings(threads=4, gpu=False, language="zh_CN", last_region=[0, 1, 2, 3, 4]).save(path)
    assert Settings.load(path) == Settings(threads=4, gpu=False, language="zh_CN", last_region=[0, 1, 2, 3, 4])
    path.write_text(json.dumps({"threads": "many", "gpu": False, "unknown": 1}))
    assert Settings.load(path) == Settings(gpu=False)  # wrong types and unknown keys are ignored
    path.write_text("{not json")
    assert Settings.load(path) == Settings()


def test_history_keeps_entries_newest_first(tmp_path):
    history = History(tmp_path / "history.sqlite3")
    history.add("ocr", "engine", "a.png", "first", Image.new("RGB", (400, 300)))
    history.add("table", "engine", "b.png", "| a | b |\n|---|---|\n| 1 | 2 |", Image.new("RGB", (10, 10)))
    history.close()
    entries = History(tmp_path / "history.sqlite3").entries()
    assert [entry.source for entry in entries] == ["b.png", "a.png"]
    assert entries[0].restore().primary.rows == [["1", "2"]]
    assert Image.open(io.BytesIO(entries[1].thumbnail)).size == (160, 120)


class Unavailable(FakeScreenshots):
    def __init__(self, compatible: bool) -> None:
        super().__init__(Image.new("RGB", (8, 8)))
        self.name, self.compatible = f"handler-{compatible}", compatible

    def is_compatible(self) -> bool:
        return self.compatible

    def is_installed(self) -> bool:
        return False


def test_screenshot_handlers_are_tried_in_order_and_failures_explained(qapp):
    working = FakeScreenshots(Image.new("RGB", (8, 8)))
    assert len(screenshot.capture_screens([Unavailable(False), working])) == 1
    with pytest.raises(screenshot.ScreenshotError, match="handler-False: not for this desktop; "
                                                         "handler-True: not installed"):
        screenshot.capture_screens([Unavailable(False), Unavailable(True)])


def test_clipboard_falls_back_to_the_next_handler(qapp):
    class Broken:
        name = "broken"

        def is_compatible(self):
            return True

        def is_installed(self):
            return True

        def copy(self, text):
            raise OSError("no display")

    assert clipboard.copy_text("hello", [Broken(), clipboard.QtClipboardHandler()])
    assert qapp.clipboard().text() == "hello"
    assert not clipboard.copy_text("hello", [Broken()])


def test_a_second_start_hands_its_request_to_the_running_app(qtbot):
    server = InstanceServer("edgevl-gui-test-instance")
    with qtbot.waitSignal(server.message, timeout=TIMEOUT_MS) as received:
        assert send_to_running_app("capture", "edgevl-gui-test-instance")
    assert received.args == ["capture"]
    assert not send_to_running_app("capture", "edgevl-gui-nobody-listens")


def test_an_edited_table_is_stored_so_that_it_comes_back_edited(tmp_path):
    history = History(tmp_path / "history.sqlite3")
    entry = history.add("table", "engine", "t.png", "| a | b |\n|---|---|\n| 1 | 2 |", Image.new("RGB", (10, 10)))
    edited = entry.restore()
    edited.tables[0].rows[0][1] = "20 | x"  # a pipe in a cell survives
    history.save_edit(entry.id, edited)
    assert history.entry(entry.id).restore().primary.rows == [["1", "20 | x"]]


LDD_WITHOUT_ICCCM = """\
\tlinux-vdso.so.1 (0x00007ffd)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\tlibxcb.so.1 => /lib/x86_64-linux-gnu/libxcb.so.1 (0x00007f)
\tlibweird.so.2 => not found
"""


@pytest.mark.parametrize("family, command", [
    ("debian", "sudo apt-get install libxcb-icccm4 libxcb-keysyms1; also provide libweird.so.2"),
    ("fedora", "sudo dnf install xcb-util-keysyms xcb-util-wm; also provide libweird.so.2"),
    ("arch", "sudo pacman -S xcb-util-keysyms xcb-util-wm; also provide libweird.so.2"),
])
def test_the_qt_check_names_the_missing_packages_per_distribution(family, command):
    from edgevl.qt_platform import install_command, missing_libraries

    missing = missing_libraries(LDD_WITHOUT_ICCCM)
    assert missing == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libweird.so.2"]
    assert install_command(missing, family) == command


def test_doctor_reports_the_qt_platform_plugin(monkeypatch):
    from edgevl import doctor, qt_platform

    monkeypatch.setattr(qt_platform, "_ldd", lambda library: LDD_WITHOUT_ICCCM)
    monkeypatch.setattr(qt_platform, "distribution", lambda: "debian")
    lines = {what: (ok, detail) for what, ok, detail in doctor.checks()}
    ok, detail = lines["desktop app (Qt xcb plugin)"]
    assert not ok and "libxcb-icccm.so.4" in detail and "sudo apt-get install libxcb-icccm4 libxcb-keysyms1" in detail
