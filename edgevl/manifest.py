"""The small JSON file (`edgevl.json`) that describes a converted model folder.

Written last by the converter, so a folder without it is not a finished conversion. Engines read it to know
the format, family and files. Reading checks every field (types, file names confined to the folder);
edgevl.model_files checks the files themselves before a backend sees them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
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
    #: edgevl.verify's comparison with the reference after conversion (empty: not verified)
    verification: dict[str, Any] = field(default_factory=dict)
    edgevl_version: str = ""
    version: int = MANIFEST_VERSION

    def path(self, folder: Path, role: str) -> Path:
        if role not in self.files:
            raise ModelError(f"{folder}: the manifest lists no {role} file; convert the model again")
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
    """The folder's manifest, checked field by field: a damaged or crafted file is one clear ModelError."""
    folder = Path(folder).expanduser()
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such model folder")
    if not path.is_file():
        raise ModelError(
            f"{folder}: not an edgevl model folder (no {MANIFEST_NAME}); create one with `edgevl convert`"
        )
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ValueError(f"larger than {MAX_MANIFEST_BYTES // 1000} kB")
        data = json.loads(path.read_text(encoding="utf-8"))
        return _manifest_from(data)
    except OSError as error:
        raise ModelError(f"{path}: cannot be read ({error.strerror or error})") from None
    except (ValueError, RecursionError) as error:
        raise ModelError(f"{path}: damaged manifest ({error}); convert the model again") from None


MAX_MANIFEST_BYTES = 1_000_000
#: types of the fields a manifest must or may have; fields added to Manifest later are taken as they are
_REQUIRED: dict[str, type | tuple[type, ...]] = {"format": str, "family": str, "quant": str, "files": dict}
_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "card": (str, type(None)), "vision_quant": str, "chat_template": (str, type(None)),
    "system_prompt": (str, type(None)), "source": dict, "edgevl_version": str, "version": int,
    "verification": dict}


def _manifest_from(data: object) -> Manifest:
    """A Manifest from parsed JSON, or ValueError saying which field is wrong."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    for name, kinds in {**_REQUIRED, **_OPTIONAL}.items():
        if name in _REQUIRED and name not in data:
            raise ValueError(f"no {name!r} field")
        if name in data and (not isinstance(data[name], kinds) or isinstance(data[name], bool)):
            raise ValueError(f"{name!r} has the wrong type ({type(data[name]).__name__})")
    if data.get("version", MANIFEST_VERSION) > MANIFEST_VERSION:
        raise ValueError(f"version {data['version']} is from a newer edgevl; update edgevl")
    if not data["files"]:
        raise ValueError("it lists no files")
    known = {field.name for field in fields(Manifest)}
    values = {name: value for name, value in data.items() if name in known}
    values["files"] = {_role(role): _file_entry(role, entry) for role, entry in data["files"].items()}
    return Manifest(**values)


def _role(role: str) -> str:
    if not role or len(role) > 100 or not role.isprintable():
        raise ValueError(f"file role {role[:100]!r} is not a role name")
    return role


def _file_entry(role: str, entry: object) -> FileEntry:
    if not isinstance(entry, dict) or set(entry) != {"name", "bytes", "sha256"}:
        raise ValueError(f"the {role} file must be {{name, bytes, sha256}}")
    name, size, digest = entry["name"], entry["bytes"], entry["sha256"]
    if not isinstance(name, str) or not is_plain_file_name(name):
        raise ValueError(f"the {role} file name {str(name)[:200]!r} is not a plain file name in the model folder")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"the {role} file size {str(size)[:50]} is not a byte count")
    if not isinstance(digest, str) or len(digest) != 64 or digest.strip("0123456789abcdef"):
        raise ValueError(f"the {role} file's sha256 is not 64 lowercase hex digits")
    return FileEntry(name, size, digest)


def is_plain_file_name(name: str) -> bool:
    """A name of a file right in the folder: no path separators, no `..`, nothing absolute, no NUL."""
    return (0 < len(name) <= 255 and name not in (".", "..") and not any(c in name for c in "/\\\0:")
            and Path(name).name == name)
