"""Adopting GGUF files made by others (llama.cpp's convert_hf_to_gguf.py, LM Studio's models folder, Ollama's
blobs) as an edgevl model folder.

Everything edgevl needs is in the files' own metadata: the language model's architecture and the vision
projector's type say the family, `general.file_type` the quant, the chat template how to prompt it, the widths
which released model it is. The files are hard-linked into the model folder where the file system allows (no
second copy on disk), else copied; then they run with edgevl's own preprocessing and prompts.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import edgevl
from edgevl.converters import _slug
from edgevl.converters.output import staged_folder
from edgevl.errors import ModelError
from edgevl.families import FAMILIES
from edgevl.manifest import Manifest, file_entry, write_manifest
from edgevl.model_cards import ModelCard, card_for_config
from edgevl.model_files import check_gguf

GGUF_MAGIC = b"GGUF"
#: projector types edgevl recognises but does not run (the families say what it runs: Family.imported_gguf)
UNSUPPORTED = {
    "qwen3vl_merger": "Qwen3-VL is not supported yet",
    # edgevl runs MiniCPM-V's vision tower from its own mmproj layout (engines/llamacpp_minicpmv.py); the layout
    # llama.cpp's minicpmv surgery scripts write is not verified against it yet
    "resampler": "MiniCPM-V GGUFs made by other tools are not supported yet; convert the checkpoint with "
                 "`edgevl convert`",
}
#: chat template text -> the template family edgevl writes (edgevl/chat.py)
TEMPLATE_MARKERS = {"<|im_start|>": "chatml", "<|start_header_id|>": "llama3"}


@dataclass(frozen=True)
class GGUFFacts:
    """What one GGUF file says about itself."""

    path: Path
    architecture: str  # "qwen2vl", "llama", ... or "clip" for a vision projector
    fields: dict[str, Any]

    @property
    def is_projector(self) -> bool:
        return self.architecture == "clip" or self.fields.get("general.type") == "mmproj"

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    def arch_value(self, key: str) -> Any:
        return self.fields.get(f"{self.architecture}.{key}")

    @property
    def quant(self) -> str:
        """The file's quant level in edgevl's spelling ("q4_k_m", "f16"), from general.file_type."""
        from gguf import LlamaFileType

        file_type = self.get("general.file_type")
        if file_type is None:
            return "unknown"
        try:
            name = LlamaFileType(int(file_type)).name
        except ValueError:
            return f"type{file_type}"
        return name.removeprefix("MOSTLY_").removeprefix("ALL_").lower()


def read_facts(path: Path) -> GGUFFacts:
    """The metadata of a GGUF file (not its tensors); a clear error for anything else."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    with path.open("rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise ModelError(f"{path}: not a GGUF file")
    check_gguf(path)  # GGUFReader trusts the header's counts and offsets (a crafted file: IndexError, MemoryError)
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except (ValueError, OSError, IndexError) as error:
        raise ModelError(f"{path}: damaged GGUF file ({error})") from None
    fields = {}
    for key, field in reader.fields.items():
        if key.startswith(("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
                           "tokenizer.ggml.scores")):
            continue  # the vocabulary: large, and llama.cpp reads it itself
        fields[key] = field.contents()
    if int(fields.get("split.count", 1)) > 1:
        raise ModelError(f"{path}: one part of a split GGUF; join the parts first (llama.cpp's llama-gguf-split "
                         "--merge)")
    return GGUFFacts(path, str(fields.get("general.architecture", "")), fields)


def find_gguf_files(folder: Path) -> list[Path]:
    """The GGUF files of a folder (LM Studio keeps one model's files together: text quants and mmproj)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such folder")
    found = sorted(path for path in folder.iterdir() if path.suffix.lower() == ".gguf" and path.is_file())
    if not found:
        raise ModelError(f"{folder}: no .gguf files in it")
    return found


def is_projector_name(name: str) -> bool:
    return "mmproj" in name.lower()


def pick_files(names: Sequence[str], quant: str | None = None, file: str | None = None) -> tuple[str, str]:
    """(text, mmproj) among a model's GGUF file names, as repos and LM Studio folders name them
    ("Model-Q4_K_M.gguf", "mmproj-Model-f16.gguf"): `file` names the text file, else `quant` picks it, else the
    only one, else Q4_K_M. The projector: the only one, else the F16 one."""
    projectors = [name for name in names if is_projector_name(name)]
    texts = [name for name in names if not is_projector_name(name)]
    if file is not None:
        if file not in texts:
            raise ModelError(f"no language model file {file!r}; there are: {', '.join(texts) or 'none'}")
        text = file
    else:
        text = _pick(texts, quant or "q4_k_m", "language model", required=quant is not None, option="--quant")
    if not projectors:
        raise ModelError(f"no vision projector (mmproj) GGUF next to {text}; edgevl needs one for images")
    return text, _pick(projectors, "f16", "vision projector", required=False, option="--mmproj")


def _pick(names: list[str], quant: str, what: str, required: bool, option: str) -> str:
    if not names:
        raise ModelError(f"no {what} GGUF file")
    if len(names) == 1 and not required:
        return names[0]
    matching = [name for name in names if _has_quant(name, quant)]
    if len(matching) == 1:
        return matching[0]
    wanted = f" with quant {quant}" if required else ""
    raise ModelError(f"{len(matching) or 'no'} {what} files{wanted} among: {', '.join(names)}; choose one with "
                     f"{option}")


def _has_quant(name: str, quant: str) -> bool:
    """Whether a file name carries this quant as a word ("q4_k_m" in "Model-Q4_K_M.gguf", not in "...Q4_K_M_L")."""
    stem = Path(name).name.lower().replace("-", "_").removesuffix(".gguf")
    key = quant.lower().replace("-", "_")
    return re.search(rf"(^|[._]){re.escape(key)}($|[._])", stem) is not None


def import_gguf(text: Path, mmproj: Path | None = None, output: Path | None = None, *, quant: str | None = None,
                overwrite: bool = False) -> tuple[Path, Manifest]:
    """Make a model folder from a language model GGUF and its vision projector GGUF; returns (folder, manifest).

    `text` may be a folder holding both (LM Studio's layout; `quant` picks among several). `output` defaults to a
    folder named after the model in edgevl's models folder (`edgevl models`)."""
    text = Path(text).expanduser()
    if text.is_dir():
        if mmproj is not None:
            raise ModelError("give a folder, or a language model file with --mmproj, not both")
        text_name, mmproj_name = pick_files([path.name for path in find_gguf_files(text)], quant)
        text, mmproj = text / text_name, text / mmproj_name
    if mmproj is None:
        raise ModelError(f"{text}: give its vision projector with --mmproj (edgevl needs one for images)")
    text_facts, vision_facts = read_facts(text), read_facts(Path(mmproj))
    family = check_pair(text_facts, vision_facts)
    card = card_for_config(family, {"hidden_size": text_facts.arch_value("embedding_length"),
                                    "num_hidden_layers": text_facts.arch_value("block_count")})
    slug = card.id if card else _slug(str(text_facts.get("general.name") or text_facts.path.stem))
    if output is None:
        from edgevl.api import models_dir

        output = models_dir() / f"{slug}-{text_facts.quant}"
    return Path(output), _write_folder(text_facts, vision_facts, family, card, slug, Path(output), overwrite)


def check_pair(text: GGUFFacts, vision: GGUFFacts) -> str:
    """The family of a (language model, vision projector) pair; a clear error for what edgevl cannot run."""
    if text.is_projector:
        raise ModelError(f"{text.path}: a vision projector, not a language model (swap the two files?)")
    if not vision.is_projector:
        raise ModelError(f"{vision.path}: a language model ({vision.architecture}), not a vision projector (mmproj)")
    if not vision.get("clip.has_vision_encoder", False):
        raise ModelError(f"{vision.path}: this projector has no vision encoder (an audio-only projector?)")
    projector = str(vision.get("clip.projector_type") or vision.get("clip.vision.projector_type") or "")
    if projector in UNSUPPORTED:
        raise ModelError(f"{vision.path}: {UNSUPPORTED[projector]}")
    family = next((family.name for family in FAMILIES.values() if (text.architecture, projector) in
                   family.imported_gguf), None)
    if family is None:
        runs = ", ".join(f"{arch} with a {kind} projector" for family in FAMILIES.values()
                         for arch, kind in family.imported_gguf)
        raise ModelError(f"edgevl cannot run a {text.architecture or 'unknown'} language model with a "
                         f"{projector or 'unknown'} vision projector; it runs: {runs}")
    width, projected = text.arch_value("embedding_length"), vision.get("clip.vision.projection_dim")
    if projected is not None and width is not None and int(projected) != int(width):
        raise ModelError(f"{vision.path} projects images to {projected} values, but {text.path.name} is "
                         f"{width} wide: the projector belongs to another model")
    return family


def chat_template_family(facts: GGUFFacts) -> str | None:
    """The template family of the file's chat template (None when it has none: the model card decides)."""
    template = facts.get("tokenizer.chat_template")
    if not template:
        return None
    for marker, family in TEMPLATE_MARKERS.items():
        if marker in template:
            return family
    raise ModelError(f"{facts.path}: its chat template is neither ChatML nor Llama-3's; edgevl cannot prompt it")


def _write_folder(text: GGUFFacts, vision: GGUFFacts, family: str, card: ModelCard | None, slug: str,
                  output: Path, overwrite: bool) -> Manifest:
    names = {"text": f"{slug}-{text.quant.upper()}.gguf", "mmproj": f"mmproj-{slug}-{vision.quant.upper()}.gguf"}
    with staged_folder(output, overwrite) as staging:
        for role, facts in (("text", text), ("mmproj", vision)):
            link_or_copy(facts.path, staging / names[role])
        manifest = Manifest(
            format="gguf", family=family, quant=text.quant, vision_quant=vision.quant,
            card=card.id if card else None, chat_template=chat_template_family(text),
            files={role: file_entry(staging / name) for role, name in names.items()},
            source={"imported": {"text": str(text.path.absolute()), "mmproj": str(vision.path.absolute())},
                    "architecture": text.architecture, "name": text.get("general.name")},
            edgevl_version=edgevl.__version__,
        )
        write_manifest(staging, manifest)
    return manifest


def link_or_copy(source: Path, destination: Path) -> None:
    """A hard link (no second copy on disk) where the file system allows one, else a copy. Links are followed
    first (huggingface_hub's cache holds symlinks to its blobs)."""
    source = source.resolve()
    try:
        os.link(source, destination)
    except OSError:
        shutil.copyfile(source, destination)
