"""The user's preferences, kept as a small JSON file in the app's data folder.

JSON rather than QSettings: the values keep their Python types, the file is readable, and tests point the app
at a temporary folder. Unknown keys and values of the wrong type are ignored, so an old or hand-edited file
never stops the app from starting.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
THEMES = ("system", "light", "dark")


@dataclass
class Settings:
    threads: int = 0  # 0: physical cores
    gpu: bool = True  # offload to the GPU when the llama.cpp build has one
    image_tokens: int = 0  # 0: the model card's budget for the task
    max_tokens: int = 0  # 0: the task's default
    language: str = ""  # "": the system's
    theme: str = "system"
    auto_copy: bool = False  # copy every finished result to the clipboard
    copy_captures: bool = True  # copy the text of screen captures to the clipboard
    close_to_tray: bool = True  # with a tray, closing the window keeps the app running there
    layout: str = "auto"  # OCR reading layout: auto (lines), paragraphs, raw
    window_geometry: str = ""  # Qt's saveGeometry(), base64
    task: str = "ocr"
    model: str = "default"
    caption_length: str = "medium"
    #: the last captured region: [screen index, x, y, width, height] in screenshot pixels
    last_region: list[int] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Settings:
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as error:
            log.warning("%s: unreadable settings, using defaults (%s)", path, error)
            return cls()
        defaults = cls()
        values = {f.name: stored[f.name] for f in dataclasses.fields(cls)
                  if f.name in stored and isinstance(stored[f.name], type(getattr(defaults, f.name)))}
        return cls(**values)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n", encoding="utf-8")
