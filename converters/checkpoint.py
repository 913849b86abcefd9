"""Reading a Hugging Face checkpoint folder lazily, one tensor at a time, without torch.

Safetensors files are memory-mapped; a tensor's bytes are read only when `LazyTensor.load()` is called, so
converting a 7B model needs about one tensor's worth of RAM, not the model's. bf16 is widened to float32 with
a shift (numpy has no bf16). Pickled `.bin` / `.pt` weights are refused: unpickling runs arbitrary code.
"""

from __future__ import annotations

import json
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

    def load(self) -> np.ndarray:
        """The tensor as float32 (bf16 widened exactly) or its stored float16; a fresh array, not a view."""
        raw = np.fromfile(self.file, dtype=np.uint8, count=self.nbytes, offset=self.offset)
        data = raw.view(_NUMPY_DTYPES[self.dtype]).reshape(self.shape)
        if self.dtype == "BF16":
            return (data.astype(np.uint32) << 16).view(np.float32)
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
            return json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"{path}: not valid JSON ({error})") from None

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
    """Tensors listed in one safetensors file (layout: u64 header length, JSON header, raw data)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated (only {size} bytes) - download it again")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(size - 8, 100_000_000):
            raise CheckpointError(f"{path}: not a safetensors file, or truncated - download it again")
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CheckpointError(f"{path}: damaged safetensors header - download it again") from None
    data_start = 8 + header_len
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry["dtype"] not in _NUMPY_DTYPES:
            raise CheckpointError(f"{path}: tensor {name} has dtype {entry['dtype']}, which edgevl cannot convert")
        begin, end = entry["data_offsets"]
        if data_start + end > size:
            raise CheckpointError(
                f"{path}: truncated ({size} bytes, tensor {name} ends at byte {data_start + end}) - download it again"
            )
        yield LazyTensor(name, entry["dtype"], tuple(entry["shape"]), path, data_start + begin, end - begin)
