"""The small JSON file (`edgevl.json`) that describes a converted model folder.

Written last by the converter, so a folder without it is not a finished conversion. Engines read it to know
the format, family and files; `check_files()` catches truncated or missing files before a backend sees them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgevl.errors import ModelError

MANIFEST_NAME = "edgevl.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class FileEntry:
    name: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    format: str  # "gguf" or "onnx"
    family: str  # "qwen2vl", "minicpmv"
    quant: str  # of the language model: "q4_k_m", "f16", ...
    files: dict[str, FileEntry]  # role ("text", "mmproj", ...) -> file
    card: str | None = None  # model card id when the checkpoint is a released model
    vision_quant: str = "f16"
    #: how to prompt it, as the converter read the checkpoint (None in folders from before: the card decides)
    chat_template: str | None = None
    system_prompt: str | None = None
    source: dict[str, Any] = field(default_factory=dict)  # checkpoint path, architecture, config digest
    edgevl_version: str = ""
    version: int = MANIFEST_VERSION

    def path(self, folder: Path, role: str) -> Path:
        return folder / self.files[role].name

    def total_bytes(self) -> int:
        return sum(entry.bytes for entry in self.files.values())


def file_entry(path: Path) -> FileEntry:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return FileEntry(path.name, path.stat().st_size, digest.hexdigest())


def write_manifest(folder: Path, manifest: Manifest) -> None:
    text = json.dumps(asdict(manifest), indent=2, sort_keys=True)
    (folder / MANIFEST_NAME).write_text(text + "\n", encoding="utf-8")


def read_manifest(folder: str | Path) -> Manifest:
    folder = Path(folder).expanduser()
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such model folder")
    if not path.is_file():
        raise ModelError(
            f"{folder}: not an edgevl model folder (no {MANIFEST_NAME}); create one with `edgevl convert`"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["files"] = {role: FileEntry(**entry) for role, entry in data["files"].items()}
        return Manifest(**data)
    except (ValueError, TypeError, KeyError) as error:
        raise ModelError(f"{path}: damaged manifest ({error}); convert the model again") from None


def check_files(folder: Path, manifest: Manifest, verify_hashes: bool = False) -> None:
    """Raise ModelError if a file is missing or has the wrong size (or hash, when asked)."""
    for role, entry in manifest.files.items():
        path = folder / entry.name
        if not path.is_file():
            raise ModelError(f"{folder}: the {role} file {entry.name} is missing; convert the model again")
        size = path.stat().st_size
        if size != entry.bytes:
            raise ModelError(
                f"{path}: {size} bytes instead of {entry.bytes} - the file is truncated or was changed; "
                "convert the model again"
            )
        if verify_hashes and file_entry(path).sha256 != entry.sha256:
            raise ModelError(f"{path}: checksum mismatch - the file is damaged; convert the model again")
