"""Reading a Hugging Face checkpoint folder lazily, one tensor at a time, without torch.

Safetensors files are memory-mapped; a tensor's bytes are read only when `LazyTensor.load()` is called, so
converting a 7B model needs about one tensor's worth of RAM, not the model's. bf16 is widened to float32 with
a shift (numpy has no bf16). Pickled `.bin` / `.pt` weights are refused: unpickling runs arbitrary code.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import numpy as np

from edgevl.errors import CheckpointError

SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
_NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64, "I32": np.int32}


@dataclass(frozen=True)
class LazyTensor:
    """A tensor in a safetensors file: shape and dtype known, data read on `load()`."""

    name: str
    dtype: str  # safetensors dtype: F32, F16, BF16, ...
    shape: tuple[int, ...]
    file: Path
    offset: int  # absolute byte offset of the data in `file`
    nbytes: int

    def load_transposed(self) -> np.ndarray:
        return self.load().T

    def load(self) -> np.ndarray:
        """The tensor as float32 (bf16 widened exactly) or its stored float16; a fresh array, not a view."""
        return self.load_rows(0, self.shape[0]) if self.shape else self._read(self.offset, self.nbytes, ())

    def load_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows start:stop (along the first axis) as `load` gives them, reading only their bytes."""
        row_bytes = self.nbytes // self.shape[0]
        return self._read(self.offset + start * row_bytes, (stop - start) * row_bytes, (stop - start, *self.shape[1:]))

    def _read(self, offset: int, nbytes: int, shape: tuple[int, ...]) -> np.ndarray:
        data = np.fromfile(self.file, dtype=np.uint8, count=nbytes, offset=offset)
        data = data.view(_NUMPY_DTYPES[self.dtype]).reshape(shape)
        if self.dtype == "BF16":
            # in place, so that the widest moment is the bf16 and the fp32 copies (a 2B model's embedding: 1.4 GB)
            widened = data.astype(np.uint32)
            del data
            widened <<= 16
            return widened.view(np.float32)
        return data


class Checkpoint:
    """A checkpoint folder: its config.json and the tensors of its safetensors shards."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise CheckpointError(f"{self.folder}: no such folder")
        self.config = self._read_config()
        self.tensors = {tensor.name: tensor for tensor in self._scan_safetensors()}

    @property
    def architecture(self) -> str:
        return (self.config.get("architectures") or ["?"])[0]

    def text_config(self) -> dict[str, Any]:
        """Language-model settings, flat: released configs keep them at the top, transformers 5 in text_config."""
        merged = {key: value for key, value in self.config.items() if key != "text_config"}
        merged.update(self.config.get("text_config") or {})
        return merged

    def read_json(self, name: str, required: bool = True) -> dict[str, Any]:
        path = self.folder / name
        if not path.is_file():
            if required:
                raise CheckpointError(f"{self.folder}: {name} is missing; copy the whole checkpoint folder")
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
            raise CheckpointError(f"{path}: not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"{path}: not a JSON object")
        return data

    def _read_config(self) -> dict[str, Any]:
        if not (self.folder / "config.json").is_file():
            raise CheckpointError(
                f"{self.folder}: no config.json - this is not a Hugging Face checkpoint folder "
                "(point edgevl at the folder that holds config.json and the *.safetensors files)"
            )
        return self.read_json("config.json")

    def _shard_files(self) -> list[Path]:
        index_path = self.folder / SAFETENSORS_INDEX
        if index_path.is_file():
            weight_map = self.read_json(SAFETENSORS_INDEX).get("weight_map", {})
            names = sorted(set(weight_map.values()))
            missing = [name for name in names if not (self.folder / name).is_file()]
            if missing:
                raise CheckpointError(
                    f"{self.folder}: {len(missing)} of {len(names)} weight shards listed in {SAFETENSORS_INDEX} "
                    f"are missing: {', '.join(missing)} - the download is incomplete"
                )
            return [self.folder / name for name in names]
        shards = sorted(self.folder.glob("*.safetensors"))
        if shards:
            return shards
        pickles = sorted(p.name for p in self.folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise CheckpointError(
                f"{self.folder}: the weights are PyTorch pickle files ({', '.join(pickles)}). edgevl refuses to "
                "unpickle them because loading a pickle can run arbitrary code. Download the safetensors "
                "version of the model, or convert trusted files yourself with transformers "
                "(model.save_pretrained(out, safe_serialization=True))"
            )
        raise CheckpointError(f"{self.folder}: no *.safetensors weight files found")

    def _scan_safetensors(self) -> Iterator[LazyTensor]:
        for path in self._shard_files():
            yield from _read_safetensors_header(path)


def _read_safetensors_header(path: Path) -> Iterator[LazyTensor]:
    """Tensors listed in one safetensors file (layout: u64 header length, JSON header, raw data). Every entry is
    checked - dtype, shape, offsets inside the file and matching the shape - so a bad file is one clear line."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated (only {size} bytes) - download it again")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(size - 8, MAX_HEADER_BYTES):
            raise CheckpointError(f"{path}: not a safetensors file, or truncated - download it again")
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise CheckpointError(f"{path}: damaged safetensors header - download it again") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: damaged safetensors header (not a JSON object) - download it again")
    data_start = 8 + header_len
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end, dtype, shape = _tensor_entry(path, name, entry)
        if data_start + end > size:
            raise CheckpointError(
                f"{path}: truncated ({size} bytes, tensor {name[:200]!r} ends at byte {data_start + end}) - "
                "download it again"
            )
        yield LazyTensor(name, dtype, shape, path, data_start + begin, end - begin)


MAX_HEADER_BYTES = 100_000_000


def _tensor_entry(path: Path, name: str, entry: Any) -> tuple[int, int, str, tuple[int, ...]]:
    """(begin, end, dtype, shape) of a header entry, or CheckpointError saying what is wrong with it."""
    def damaged(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: tensor {name[:200]!r}: {what} - the file is damaged; download it again")

    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise damaged("its entry needs dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str):
        raise damaged("dtype is not a name")
    if dtype not in _NUMPY_DTYPES:
        raise CheckpointError(f"{path}: tensor {name[:200]!r} has dtype {dtype[:50]!r}, which edgevl cannot convert")
    if not isinstance(shape, list) or not all(_whole(dim) for dim in shape):
        raise damaged("shape is not a list of sizes")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_whole(o) for o in offsets):
        raise damaged("data_offsets is not [begin, end]")
    begin, end = offsets
    if end - begin != math.prod(shape) * np.dtype(_NUMPY_DTYPES[dtype]).itemsize:
        raise damaged(f"data_offsets {offsets} do not hold a {dtype} tensor of shape {shape}")
    return begin, end, dtype, tuple(shape)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
