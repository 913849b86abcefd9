"""`edgevl pull`: a model from the Hugging Face Hub in one step - download, convert (or import), say where it is.

Everything goes through `huggingface_hub`, so HF_ENDPOINT (a mirror), HF_TOKEN (gated or private repos), its cache
(a second pull downloads nothing), resumed downloads and its progress bars work as for every other tool. Only the
files conversion needs are downloaded, after checking that the disk can hold them and the converted model.
A repo holding GGUF files (llama.cpp's, the model makers' GGUF repos) is imported instead (edgevl.gguf_import).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterator

from edgevl.errors import BackendUnavailable, EdgevlError
from edgevl.manifest import Manifest
from edgevl.model_cards import ModelCard, all_cards

#: the files of a checkpoint that conversion reads (config, weights, tokenizer, preprocessor, chat template)
CHECKPOINT_FILES = ("*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja")
#: head room on top of the counted bytes (file system overhead, the manifest, staging)
DISK_MARGIN = 1.05
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class Source:
    """What a NAME or REPO given to pull stands for."""

    repo: str
    card: ModelCard | None


def resolve(name: str) -> Source:
    """A model card id ("qwen2-vl-2b-instruct") or a Hugging Face repo id ("Qwen/Qwen2-VL-2B-Instruct")."""
    for card in all_cards():
        if name == card.id and card.hub_id:
            return Source(card.hub_id, card)
    if _REPO_ID.match(name):
        return Source(name, next((card for card in all_cards() if card.hub_id == name), None))
    raise EdgevlError(f"{name!r} is neither a model in the catalogue (see `edgevl models --available`) nor a "
                      "Hugging Face repo id (owner/name)")


def pull(name: str, output: str | Path | None = None, *, to: str = "gguf", quant: str | None = None,
         file: str | None = None, overwrite: bool = False, token: str | None = None,
         **convert_options: Any) -> tuple[Path, Manifest]:
    """Download `name` (see resolve) and make a model folder of it; returns (folder, manifest).

    A checkpoint repo is converted (`to`, `quant` and `convert_options` as for edgevl.api.convert); a repo of
    GGUF files is imported, `file` or `quant` picking the language model file. `output` defaults to a folder
    named after the model in edgevl's models folder."""
    from huggingface_hub import HfApi

    source = resolve(name)
    with hub_errors(source.repo):
        info = HfApi(token=token).model_info(source.repo, files_metadata=True)
    sizes = {sibling.rfilename: sibling.size or 0 for sibling in info.siblings or []}
    ggufs = [name for name in sizes if name.lower().endswith(".gguf")]
    has_weights = any(name.endswith(".safetensors") for name in sizes)
    if ggufs and (file is not None or not has_weights):
        if to != "gguf":
            raise EdgevlError(f"{source.repo} holds GGUF files; pull it without --to {to}, or pull the original "
                              "checkpoint's repo to export ONNX")
        return _pull_gguf(source, info.sha, sizes, ggufs, quant, file, output, overwrite, token)
    if file is not None:
        raise EdgevlError(f"--file picks a GGUF file, and {source.repo} holds none")
    return _pull_checkpoint(source, info.sha, sizes, to, quant, output, overwrite, token, convert_options)


def _pull_gguf(source: Source, commit: str | None, sizes: dict[str, int], ggufs: list[str], quant: str | None,
               file: str | None, output: str | Path | None, overwrite: bool, token: str | None
               ) -> tuple[Path, Manifest]:
    from edgevl.api import models_dir
    from edgevl.gguf_import import import_gguf, pick_files

    chosen = pick_files(ggufs, quant, file)
    output = Path(output).expanduser() if output else None
    # the model folder hard-links the downloaded files where it shares the cache's file system
    check_free_space(source.repo, commit, {name: sizes[name] for name in chosen}, output or models_dir(),
                     output_bytes=None)
    text, mmproj = (download(source.repo, commit, name, token) for name in chosen)
    return import_gguf(text, mmproj, output, overwrite=overwrite)


def _pull_checkpoint(source: Source, commit: str | None, sizes: dict[str, int], to: str, quant: str | None,
                     output: str | Path | None, overwrite: bool, token: str | None,
                     convert_options: dict[str, Any]) -> tuple[Path, Manifest]:
    from edgevl import api

    wanted = {name: size for name, size in sizes.items()
              if "/" not in name and any(fnmatch.fnmatch(name, pattern) for pattern in CHECKPOINT_FILES)}
    if "config.json" not in wanted or not any(name.endswith(".safetensors") for name in wanted):
        raise EdgevlError(f"{source.repo}: not a checkpoint edgevl can convert (it needs config.json and "
                          ".safetensors weights) and holds no GGUF files")
    config = json.loads(download(source.repo, commit, "config.json", token).read_text(encoding="utf-8"))
    check_architecture(config, source.repo)
    weights = sum(size for name, size in wanted.items() if name.endswith(".safetensors"))
    output = Path(output).expanduser() if output else api.models_dir() / _folder_name(source, to, quant)
    check_free_space(source.repo, commit, wanted, output, output_bytes=_expected_output(source.card, to, quant,
                                                                                        weights))
    folder = [download(source.repo, commit, name, token) for name in wanted][0].parent  # the snapshot folder
    return output, api.convert(folder, output, to=to, quant=quant, overwrite=overwrite, **convert_options)


def check_architecture(config: dict[str, Any], repo: str) -> None:
    """Refuse a repo of an architecture edgevl does not convert before its weights are downloaded."""
    try:
        from edgevl.converters import converter_class
    except ImportError:
        from edgevl.api import CONVERT_HINT

        raise BackendUnavailable(f"converting needs the converter: {CONVERT_HINT}") from None
    converter_class((config.get("architectures") or ["?"])[0], repo)


def download(repo: str, commit: str | None, name: str, token: str | None) -> Path:
    """One file into huggingface_hub's cache (resumed if an earlier download was cut); its path there. `commit`:
    the revision model_info() saw, so that all files come from one snapshot (None, which the Hub's types allow:
    the latest)."""
    from huggingface_hub import hf_hub_download

    with hub_errors(repo):
        return Path(hf_hub_download(repo, name, revision=commit, token=token))


def check_free_space(repo: str, commit: str | None, files: dict[str, int], output: Path,
                     output_bytes: int | None) -> None:
    """Raise before downloading when the disk cannot hold the files not yet in the cache plus the converted model
    (`output_bytes`; None: the model folder links the downloaded files, copying them only across file systems)."""
    from huggingface_hub import constants, try_to_load_from_cache

    missing = sum(size for name, size in files.items()
                  if not isinstance(try_to_load_from_cache(repo, name, revision=commit), str))
    cache = _existing(Path(constants.HF_HUB_CACHE))
    needs = {cache: missing}
    place = _existing(output)
    same_disk = os.stat(place).st_dev == os.stat(cache).st_dev
    if output_bytes is None:
        output_bytes = 0 if same_disk else sum(files.values())
    place = cache if same_disk else place
    needs[place] = needs.get(place, 0) + output_bytes
    for place, count in needs.items():
        free = shutil.disk_usage(place).free
        if count * DISK_MARGIN > free:
            raise EdgevlError(f"not enough disk space for {repo}: it needs {count * DISK_MARGIN / 1e9:,.2f} GB in "
                              f"{place}, {free / 1e9:,.2f} GB are free")


def _existing(path: Path) -> Path:
    """The path, or its nearest existing parent (where a folder not yet made will be)."""
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def _expected_output(card: ModelCard | None, to: str, quant: str | None, weights: int) -> int:
    """The converted model's size: the card's figure where it has one, else the weights' size (no quant makes
    a model bigger than its checkpoint, except f32 from a 16-bit one)."""
    chosen = quant or (card.recommended_quant if card else None)
    if to == "gguf" and card and chosen in card.sizes_mb and "mmproj_f16" in card.sizes_mb:
        return int((card.sizes_mb[chosen] + card.sizes_mb["mmproj_f16"]) * 1e6)
    return weights * (2 if quant in ("f32", "fp32") else 1)


def _folder_name(source: Source, to: str, quant: str | None) -> str:
    base = source.card.id if source.card else source.repo.split("/")[-1].lower()
    return f"{base}-{quant or ('onnx-int4' if to == 'onnx' else 'gguf')}"


@contextlib.contextmanager
def hub_errors(repo: str) -> Iterator[None]:
    """huggingface_hub's and the network's failures as one line a user can act on."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, HTTPError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError)

    endpoint = constants.ENDPOINT
    try:
        yield
    except GatedRepoError:
        raise EdgevlError(f"{repo} is gated: accept its licence on its page at {endpoint} and set HF_TOKEN") from None
    except EntryNotFoundError as error:
        raise EdgevlError(f"{repo}: a file is missing on the hub ({error})") from None
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "?"
        if status in (401, 403):
            raise EdgevlError(f"{endpoint} refused access to {repo} ({status}): check HF_TOKEN, or unset it for a "
                              "public repo") from None
        if isinstance(error, RepositoryNotFoundError):
            raise EdgevlError(f"no repo {repo} at {endpoint} (or it is private: set HF_TOKEN)") from None
        raise EdgevlError(f"the hub at {endpoint} answered {status} for {repo}") from None
    except OfflineModeIsEnabled:
        raise EdgevlError(f"cannot download {repo}: HF_HUB_OFFLINE is set") from None
    except (HTTPError, OSError) as error:  # HTTPError: the transport's (connection refused, timeout)
        raise EdgevlError(f"cannot reach the hub at {endpoint} ({type(error).__name__}: {error}); check the "
                          "network, or HF_ENDPOINT") from None
