"""Checking a model folder's files before a backend reads them.

llama.cpp, gguf's GGUFReader and ONNX Runtime trust their input: a truncated or crafted file can crash them, make
them allocate without bound or read past the file. So before an engine opens a folder, every file listed in its
manifest is checked here:
- present, with the manifest's size;
- its SHA-256 equal to the manifest's. Hashing a 5 GB model takes a while, so a match is remembered (in the user
  cache folder, by path, size and modification time) and an unchanged file is not hashed again;
  `edgevl models --verify` hashes everything anew;
- its header, for GGUF and ONNX files: magic, version, counts, and every offset and length inside the file.

Every problem is one ModelError line naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import struct
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator

import platformdirs

from edgevl.errors import BackendUnavailable, ModelError
from edgevl.manifest import Manifest, is_plain_file_name

log = logging.getLogger(__name__)

VERIFIED_CACHE_NAME = "verified-files.json"


def check_model_files(folder: Path, manifest: Manifest, verify: bool = False) -> None:
    """Raise ModelError for a missing, resized, changed or malformed file. `verify`: hash every file even if it
    was verified before."""
    cache = VerifiedFiles.load()
    for role in manifest.files:
        path = manifest.path(folder, role)
        _check_size(path, role, manifest.files[role].bytes)
        _check_checksum(path, manifest.files[role].sha256, cache, verify)
        check_header(path)
    cache.save()


def check_header(path: Path) -> None:
    """The GGUF or ONNX header check that fits the file's name; other files (tokenizer, config) have none."""
    if path.suffix == ".gguf":
        check_gguf(path)
    elif path.suffix == ".onnx":
        check_onnx(path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_size(path: Path, role: str, expected: int) -> None:
    if not path.is_file():
        raise ModelError(f"{path.parent}: the {role} file {path.name} is missing; convert the model again")
    size = path.stat().st_size
    if size != expected:
        raise ModelError(f"{path}: {size} bytes instead of {expected} - the file is truncated or was changed; "
                         "convert the model again")


def _check_checksum(path: Path, expected: str, cache: VerifiedFiles, verify: bool) -> None:
    if not verify and cache.holds(path, expected):
        return
    log.info("checking the SHA-256 of %s (once; remembered while the file is unchanged)", path)
    try:
        actual = sha256_of(path)
    except OSError as error:
        raise ModelError(f"{path}: cannot be read ({error.strerror or error})") from None
    if actual != expected:
        cache.forget(path)
        raise ModelError(f"{path}: checksum mismatch - the file is damaged or was changed; convert the model again")
    cache.remember(path, expected)


class VerifiedFiles:
    """Files whose SHA-256 matched, keyed by absolute path, valid while size and mtime are unchanged."""

    def __init__(self, path: Path, entries: dict[str, list]) -> None:
        self.path, self.entries, self.changed = path, entries, False

    @classmethod
    def load(cls) -> VerifiedFiles:
        path = platformdirs.user_cache_path("edgevl") / VERIFIED_CACHE_NAME
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # none yet, or damaged: files are hashed again
            entries = {}
        return cls(path, entries if isinstance(entries, dict) else {})

    def holds(self, path: Path, sha256: str) -> bool:
        return self.entries.get(str(path.absolute())) == [*_identity(path), sha256]

    def remember(self, path: Path, sha256: str) -> None:
        self.entries[str(path.absolute())] = [*_identity(path), sha256]
        self.changed = True

    def forget(self, path: Path) -> None:
        self.changed |= self.entries.pop(str(path.absolute()), None) is not None

    def save(self) -> None:
        """Written atomically; a cache that cannot be written only means hashing again next time."""
        if not self.changed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            staging = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            staging.write_text(json.dumps(self.entries), encoding="utf-8")
            staging.replace(self.path)
        except OSError as error:
            log.warning("cannot remember verified model files in %s (%s)", self.path, error.strerror or error)


def _identity(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


# ---- headers ----------------------------------------------------------------------------------------------------

class _Malformed(Exception):
    """What is wrong with a header; the caller adds the file name."""


def _one_line(problem: _Malformed) -> str:
    """The problem's text with the names it quotes from the file made harmless (no line breaks, bounded)."""
    text = str(problem).replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= 300 else text[:297] + "..."


class _Cursor:
    """Reads little-endian values from a mapped file, refusing to go past its end."""

    def __init__(self, data: mmap.mmap | bytes, start: int = 0, end: int | None = None) -> None:
        self.data, self.pos, self.end = data, start, len(data) if end is None else end

    def remaining(self) -> int:
        return self.end - self.pos

    def skip(self, count: int, what: str) -> int:
        """Advance past `count` bytes; returns where they start."""
        if count < 0 or count > self.remaining():
            raise _Malformed(f"{what} runs past the end of the file")
        start, self.pos = self.pos, self.pos + count
        return start

    def unpack(self, fmt: str, what: str) -> int:
        start = self.skip(struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.data, start)[0]

    def bytes(self, count: int, what: str) -> bytes:
        start = self.skip(count, what)
        return bytes(self.data[start:start + count])


@contextmanager
def _mapped(path: Path) -> Iterator[mmap.mmap | bytes]:
    """The file's bytes, mapped (never read whole: headers are checked without loading the weights)."""
    try:
        with path.open("rb") as handle:
            if os.fstat(handle.fileno()).st_size == 0:
                yield b""
                return
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                yield data
    except OSError as error:
        raise ModelError(f"{path}: cannot be read ({error.strerror or error})") from None


# GGUF (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md): magic, version, tensor and key-value counts,
# the key-values, the tensor infos, then the tensor data at `general.alignment`.
GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)
GGUF_MAX_DIMS = 4
GGUF_STRING, GGUF_ARRAY = 8, 9
#: value type -> struct format of the fixed-size types
GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
GGUF_DEFAULT_ALIGNMENT = 32
#: the smallest key-value (empty key, u8 value) and tensor info (empty name, one dimension): a count that
#: cannot fit in the rest of the file is refused before it is looped over
_MIN_KV_BYTES, _MIN_TENSOR_INFO_BYTES = 8 + 4 + 1, 8 + 4 + 8 + 4 + 8


def check_gguf(path: Path) -> None:
    """ModelError unless `path` is a GGUF file whose header is complete and whose tensors lie inside it."""
    try:
        from gguf.constants import GGML_QUANT_SIZES
    except ImportError as error:
        raise BackendUnavailable(f"GGUF models need the gguf package ({error}): pip install 'edgevl[gguf]'") from None
    type_sizes = {int(kind): sizes for kind, sizes in GGML_QUANT_SIZES.items()}
    with _mapped(path) as data:
        try:
            _check_gguf(_Cursor(data), type_sizes)
        except _Malformed as problem:
            raise ModelError(f"{path}: not a valid GGUF file ({_one_line(problem)}); "
                             "convert the model again") from None


def _check_gguf(cursor: _Cursor, type_sizes: dict[int, tuple[int, int]]) -> None:
    if cursor.remaining() < 4 or cursor.bytes(4, "the magic") != GGUF_MAGIC:
        raise _Malformed("it does not start with GGUF")
    version = cursor.unpack("<I", "the version")
    if version not in GGUF_VERSIONS:
        raise _Malformed(f"version {version}; edgevl reads versions {' and '.join(map(str, GGUF_VERSIONS))}")
    tensor_count = cursor.unpack("<Q", "the tensor count")
    kv_count = cursor.unpack("<Q", "the key-value count")
    if kv_count * _MIN_KV_BYTES > cursor.remaining():
        raise _Malformed(f"{kv_count} key-values cannot fit in the file")
    alignment = GGUF_DEFAULT_ALIGNMENT
    for _ in range(kv_count):
        key = _gguf_string(cursor, "a key")
        kind = cursor.unpack("<I", f"the type of {key}")
        value = _gguf_value(cursor, kind, key)
        if key == "general.alignment":
            if kind != 4 or value is None or value == 0 or value & (value - 1):
                raise _Malformed("general.alignment is not a power of two (u32)")
            alignment = value
    if tensor_count * _MIN_TENSOR_INFO_BYTES > cursor.remaining():
        raise _Malformed(f"{tensor_count} tensors cannot fit in the file")
    tensors = [_gguf_tensor_info(cursor, type_sizes) for _ in range(tensor_count)]
    data_start = -(-cursor.pos // alignment) * alignment
    for name, offset, nbytes in tensors:
        if offset % alignment:
            raise _Malformed(f"tensor {name} is not aligned to {alignment} bytes")
        if data_start + offset + nbytes > cursor.end:
            raise _Malformed(f"tensor {name} ends at byte {data_start + offset + nbytes}, past the end of the file "
                             f"({cursor.end} bytes)")


def _gguf_string(cursor: _Cursor, what: str) -> str:
    length = cursor.unpack("<Q", f"the length of {what}")
    return cursor.bytes(length, what).decode("utf-8", errors="replace")


def _gguf_value(cursor: _Cursor, kind: int, key: str) -> int | None:
    """Skips one value; returns it when it is an integer (general.alignment is the only one needed)."""
    if kind in GGUF_SCALARS:
        return cursor.unpack(GGUF_SCALARS[kind], key)
    if kind == GGUF_STRING:
        cursor.skip(cursor.unpack("<Q", f"the length of {key}"), key)
        return None
    if kind != GGUF_ARRAY:
        raise _Malformed(f"{key} has an unknown value type {kind}")
    item_kind = cursor.unpack("<I", f"the item type of {key}")
    count = cursor.unpack("<Q", f"the length of {key}")
    if item_kind in GGUF_SCALARS:
        cursor.skip(count * struct.calcsize(GGUF_SCALARS[item_kind]), key)
    elif item_kind == GGUF_STRING:
        if count * 8 > cursor.remaining():
            raise _Malformed(f"{key}: {count} strings cannot fit in the file")
        for _ in range(count):
            cursor.skip(cursor.unpack("<Q", f"a string length in {key}"), key)
    else:
        raise _Malformed(f"{key} is an array of type {item_kind}, which llama.cpp does not read")
    return None


def _gguf_tensor_info(cursor: _Cursor, type_sizes: dict[int, tuple[int, int]]) -> tuple[str, int, int]:
    """(name, offset, bytes) of one tensor, its dimensions and type checked."""
    name = _gguf_string(cursor, "a tensor name")
    n_dims = cursor.unpack("<I", f"the dimensions of tensor {name}")
    if not 1 <= n_dims <= GGUF_MAX_DIMS:
        raise _Malformed(f"tensor {name} has {n_dims} dimensions")
    dims = [cursor.unpack("<Q", f"the shape of tensor {name}") for _ in range(n_dims)]
    kind = cursor.unpack("<I", f"the type of tensor {name}")
    offset = cursor.unpack("<Q", f"the offset of tensor {name}")
    sizes = type_sizes.get(kind)
    if sizes is None:
        raise _Malformed(f"tensor {name} has an unknown type {kind}")
    block, block_bytes = sizes
    elements = 1
    for dim in dims:
        elements *= dim
    if dims[0] % block or elements == 0:
        raise _Malformed(f"tensor {name}: shape {dims} does not fit its type's blocks of {block}")
    return name, offset, elements // block * block_bytes


# ONNX: a protobuf ModelProto (onnx.proto). Walked by its wire format, without onnx: every length inside its
# parent, ir_version and a graph present, and each initializer kept in an external file named inside the folder,
# with its offset and length inside that file.
ONNX_IR_VERSIONS = range(3, 21)
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_MODEL_IR_VERSION, _MODEL_GRAPH = 1, 7
_GRAPH_INITIALIZER = 5
_TENSOR_NAME, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 8, 13, 14
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
_EXTERNAL = 1


def check_onnx(path: Path) -> None:
    """ModelError unless `path` is a well-formed ONNX model whose external data lies inside the folder's files."""
    with _mapped(path) as data:
        try:
            _check_onnx(data, path.parent)
        except _Malformed as problem:
            raise ModelError(f"{path}: not a valid ONNX model ({_one_line(problem)}); "
                             "convert the model again") from None


def _check_onnx(data: mmap.mmap | bytes, folder: Path) -> None:
    # a varint field's value is an int, a length-delimited one's a _Cursor (see _fields)
    ir_version: int | None = None
    graphs: list[_Cursor] = []
    for number, _, value in _fields(_Cursor(data), "the model"):
        if number == _MODEL_IR_VERSION and isinstance(value, int):
            ir_version = value
        elif number == _MODEL_GRAPH and isinstance(value, _Cursor):
            graphs.append(value)
    if ir_version not in ONNX_IR_VERSIONS:
        raise _Malformed(f"IR version {ir_version}; edgevl reads {ONNX_IR_VERSIONS.start} to "
                         f"{ONNX_IR_VERSIONS.stop - 1}")
    if len(graphs) != 1:
        raise _Malformed("no graph" if not graphs else "more than one graph")
    for number, _, tensor in _fields(graphs[0], "the graph"):
        if number == _GRAPH_INITIALIZER and isinstance(tensor, _Cursor):
            _check_initializer(tensor, folder)


def _check_initializer(tensor: _Cursor, folder: Path) -> None:
    name, location = "?", 0
    entries: list[dict[int, int | _Cursor]] = []
    for number, _, value in _fields(tensor, "an initializer"):
        if number == _TENSOR_NAME and isinstance(value, _Cursor):
            name = bytes(value.data[value.pos:value.end]).decode("utf-8", errors="replace")
        elif number == _TENSOR_DATA_LOCATION and isinstance(value, int):
            location = value
        elif number == _TENSOR_EXTERNAL_DATA and isinstance(value, _Cursor):
            entry = {key: text for key, _, text in _fields(value, "external data") if key in (_ENTRY_KEY, _ENTRY_VALUE)}
            entries.append(entry)
    if location != _EXTERNAL:
        return
    external = {_text(entry.get(_ENTRY_KEY)): _text(entry.get(_ENTRY_VALUE)) for entry in entries}
    file_name = external.get("location", "")
    if not is_plain_file_name(file_name):
        raise _Malformed(f"initializer {name} names the data file {file_name[:200]!r}, which is not a file in the "
                         "model folder")
    data_file = folder / file_name
    if not data_file.is_file():
        raise _Malformed(f"initializer {name}: its data file {file_name} is missing")
    try:
        offset, length = int(external.get("offset", "0")), int(external["length"])
    except (KeyError, ValueError):
        raise _Malformed(f"initializer {name}: no usable offset and length of its external data") from None
    if offset < 0 or length < 0 or offset + length > data_file.stat().st_size:
        raise _Malformed(f"initializer {name}: bytes {offset} to {offset + length} are outside {file_name}")


def _text(value: int | _Cursor | None) -> str:
    if not isinstance(value, _Cursor):
        return ""
    return bytes(value.data[value.pos:value.end]).decode("utf-8", errors="replace")


def _fields(cursor: _Cursor, what: str) -> Iterator[tuple[int, int, int | _Cursor]]:
    """(field number, wire type, value) of a protobuf message; a length-delimited value is a cursor over it."""
    while cursor.remaining():
        key = _varint(cursor, what)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed(f"{what} has a field numbered 0")
        if wire == _VARINT:
            yield number, wire, _varint(cursor, what)
        elif wire == _LEN:
            length = _varint(cursor, what)
            start = cursor.skip(length, f"a field of {what}")
            yield number, wire, _Cursor(cursor.data, start, start + length)
        elif wire in (_I64, _I32):
            cursor.skip(8 if wire == _I64 else 4, f"a field of {what}")
        else:
            raise _Malformed(f"{what} has a field of wire type {wire}")


def _varint(cursor: _Cursor, what: str) -> int:
    value = 0
    for shift in range(0, 70, 7):
        byte = cursor.unpack("<B", what)
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
    raise _Malformed(f"{what} has a number longer than 10 bytes")
