"""`edgevl pull`: a model from the Hugging Face Hub in one step - download, convert (or import), say where it is.

Everything goes through `huggingface_hub`, so HF_ENDPOINT (a mirror), HF_TOKEN (gated or private repos) and its
cache (a second pull downloads nothing) work as for every other tool. Only the files conversion needs are downloaded,
after checking that the disk can hold them and the converted model. A cut download continues where it stopped, also
in the next pull (see download). A repo holding GGUF files (llama.cpp's, the model makers' GGUF repos) is imported
instead (edgevl.gguf_import). A model folder a pull of the same repo snapshot finished is kept, not made again.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast
from collections.abc import Iterator

import psutil

from edgevl.errors import BackendUnavailable, EdgevlError
from edgevl.manifest import Manifest, read_manifest
from edgevl.model_cards import ModelCard, all_cards
from edgevl.system import nearest_existing

if TYPE_CHECKING:
    from edgevl.converters import Progress

log = logging.getLogger(__name__)

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
         progress: Progress | None = None, **convert_options: Any) -> tuple[Path, Manifest]:
    """Download `name` (see resolve) and make a model folder of it; returns (folder, manifest).

    A checkpoint repo is converted (`to`, `quant` and `convert_options` as for edgevl.api.convert); a repo of
    GGUF files is imported, `file` or `quant` picking the language model file. `output` defaults to a folder
    named after the model in edgevl's models folder. `progress` (converters.Progress) sees each download in bytes,
    then the conversion; raising from its `advance` stops the pull, and the next pull continues the download."""
    from huggingface_hub import HfApi

    source = resolve(name)
    with hub_errors(source.repo):
        info = HfApi(token=token).model_info(source.repo, files_metadata=True)
    snapshot = Snapshot(source, info.sha, token, progress)
    sizes = {sibling.rfilename: sibling.size or 0 for sibling in info.siblings or []}
    ggufs = [name for name in sizes if name.lower().endswith(".gguf")]
    has_weights = any(name.endswith(".safetensors") for name in sizes)
    output = Path(output).expanduser() if output else None
    if ggufs and (file is not None or not has_weights):
        if to != "gguf":
            raise EdgevlError(f"{source.repo} holds GGUF files; pull it without --to {to}, or pull the original "
                              "checkpoint's repo to export ONNX")
        return _pull_gguf(snapshot, sizes, ggufs, quant, file, output, overwrite)
    if file is not None:
        raise EdgevlError(f"--file picks a GGUF file, and {source.repo} holds none")
    return _pull_checkpoint(snapshot, sizes, to, quant, output, overwrite, convert_options)


@dataclass(frozen=True)
class Snapshot:
    """One revision of a repo, as model_info() saw it, and how to download its files."""

    source: Source
    commit: str | None  # None, which the Hub's types allow: the latest
    token: str | None
    progress: Progress | None

    @property
    def repo(self) -> str:
        return self.source.repo

    def download(self, name: str, shown: bool = True) -> Path:
        """`shown`: reported to the progress (not a small file read before the pull is decided on)."""
        return download(self.repo, self.commit, name, self.token, self.progress if shown else None)

    def folder(self) -> Path:
        """Where huggingface_hub's cache keeps this revision's files (whether or not any is there yet)."""
        from huggingface_hub import constants
        from huggingface_hub.file_download import repo_folder_name

        return (Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=self.repo, repo_type="model") / "snapshots"
                / str(self.commit)).absolute()


def _pull_gguf(snapshot: Snapshot, sizes: dict[str, int], ggufs: list[str], quant: str | None, file: str | None,
               output: Path | None, overwrite: bool) -> tuple[Path, Manifest]:
    from edgevl.api import installed_models, models_dir
    from edgevl.converters.output import check_destination
    from edgevl.gguf_import import import_gguf, pick_files

    chosen = pick_files(ggufs, quant, file)
    # where the model was imported before: `output`, or (named by the files' metadata) any folder in models_dir()
    for folder in [output] if output is not None else [model.path for model in installed_models()]:
        if finished := _finished_pull(folder, snapshot, "gguf", chosen[0]):
            return folder, finished
    if output is not None:
        check_destination(output, overwrite)
    _warn_if_short_of_memory(snapshot.source.card, quant)
    # the model folder hard-links the downloaded files where it shares the cache's file system
    check_free_space(snapshot.repo, snapshot.commit, {name: sizes[name] for name in chosen}, output or models_dir(),
                     output_bytes=None)
    text, mmproj = (snapshot.download(name) for name in chosen)
    return import_gguf(text, mmproj, output, overwrite=overwrite)


def _pull_checkpoint(snapshot: Snapshot, sizes: dict[str, int], to: str, quant: str | None, output: Path | None,
                     overwrite: bool, convert_options: dict[str, Any]) -> tuple[Path, Manifest]:
    from edgevl import api

    source = snapshot.source
    wanted = {name: size for name, size in sizes.items()
              if "/" not in name and any(fnmatch.fnmatch(name, pattern) for pattern in CHECKPOINT_FILES)}
    if "config.json" not in wanted or not any(name.endswith(".safetensors") for name in wanted):
        raise EdgevlError(f"{source.repo}: not a checkpoint edgevl can convert (it needs config.json and "
                          ".safetensors weights) and holds no GGUF files")
    output = output or api.models_dir() / _folder_name(source, to, quant)
    if finished := _finished_pull(output, snapshot, to, quant=quant):
        return output, finished
    config = json.loads(snapshot.download("config.json", shown=False).read_text(encoding="utf-8"))
    check_architecture(config, source.repo)
    from edgevl.converters import SILENT  # the converter is there: check_architecture saw it
    from edgevl.converters.output import check_destination

    check_destination(output, overwrite)
    _warn_if_short_of_memory(source.card, quant)
    weights = sum(size for name, size in wanted.items() if name.endswith(".safetensors"))
    output_bytes = _expected_output(source.card, to, quant, weights) + _expected_scratch(to, quant, weights)
    check_free_space(source.repo, snapshot.commit, wanted, output, output_bytes)
    folder = [snapshot.download(name) for name in wanted][0].parent  # the snapshot folder
    return output, api.convert(folder, output, to=to, quant=quant, overwrite=overwrite,
                               progress=snapshot.progress or SILENT, **convert_options)


def _finished_pull(output: Path, snapshot: Snapshot, to: str, text_file: str | None = None,
                   quant: str | None = None) -> Manifest | None:
    """The manifest of `output` when a pull of this snapshot made it - converted to `to` at `quant` (None: any),
    or imported from its `text_file` - else None. So a pull run again after it finished, or after it was stopped
    past the conversion, does not make the model again."""
    try:
        manifest = read_manifest(output)
    except EdgevlError:
        return None
    source = manifest.source
    made_from = (source.get("imported") or {}).get("text") if text_file else source.get("path")
    expected = snapshot.folder() / text_file if text_file else snapshot.folder()
    same = (made_from == str(expected) and manifest.format == to
            and (quant is None or quant.lower() == manifest.quant))
    if same:
        log.info("%s already holds %s at this revision", output, snapshot.repo)
    return manifest if same else None


def _warn_if_short_of_memory(card: ModelCard | None, quant: str | None) -> None:
    """A warning, not a refusal: the card's figure is an estimate until measured, and swap may carry the rest."""
    chosen = quant.lower() if quant else card.recommended_quant if card else None
    needed_mb = card.ram_mb.get(chosen) if card and chosen else None
    total = psutil.virtual_memory().total
    if card and needed_mb and needed_mb * 1e6 > total:
        log.warning("%s at %s needs about %.1f GB of memory to run; this computer has %.1f GB", card.name, chosen,
                    needed_mb / 1e3, total / 1e9)


def check_architecture(config: dict[str, Any], repo: str) -> None:
    """Refuse a repo of an architecture edgevl does not convert before its weights are downloaded."""
    try:
        from edgevl.converters import converter_class
    except ImportError:
        from edgevl.api import CONVERT_HINT

        raise BackendUnavailable(f"converting needs the converter: {CONVERT_HINT}") from None
    converter_class((config.get("architectures") or ["?"])[0], repo)


def download(repo: str, commit: str | None, name: str, token: str | None, progress: Progress | None = None) -> Path:
    """One file into huggingface_hub's cache; its path there. `commit`: the revision model_info() saw, so that all
    files come from one snapshot. huggingface_hub resumes a cut download only within one call and deletes what
    arrived when it gives up; here the bytes are kept next to the cache's blob (`<etag>.incomplete`), so a pull
    that was cancelled, killed or cut off continues where it stopped. `progress` counts the bytes; raising from its
    `advance` stops the download, keeping what arrived."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache

    with hub_errors(repo):
        cached = try_to_load_from_cache(repo, name, revision=commit)
        if isinstance(cached, str):
            return Path(cached)
        url = hf_hub_url(repo, name, revision=commit)
        metadata = get_hf_file_metadata(url, token=token)
        if metadata.etag:  # the blob's name in the cache; the Hub always sends it
            _download_resumable(url, repo, metadata.etag, metadata.size, name, token, progress)
        # finds the blob in place and links it into the snapshot folder, as for any cached file
        return Path(hf_hub_download(repo, name, revision=commit, token=token))


def _download_resumable(url: str, repo: str, etag: str, size: int | None, name: str, token: str | None,
                        progress: Progress | None) -> None:
    """Into the cache's blob for `etag`, continuing from its `.incomplete` file when there is one."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import http_get, repo_folder_name
    from huggingface_hub.utils import WeakFileLock, build_hf_headers
    from huggingface_hub.utils.tqdm import silent_tqdm

    repo_folder = repo_folder_name(repo_id=repo, repo_type="model")
    blob = Path(constants.HF_HUB_CACHE) / repo_folder / "blobs" / etag
    partial = blob.with_name(f"{etag}.incomplete")
    blob.parent.mkdir(parents=True, exist_ok=True)
    lock = Path(constants.HF_HUB_CACHE) / ".locks" / repo_folder / f"{etag}.resume.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(lock):  # one writer; two pulls of one file take turns
        if blob.exists():
            return
        with partial.open("ab") as handle:
            arrived = handle.tell()
            if progress is not None:
                progress.step(f"downloading {name}" + (f" ({size / 1e6:,.1f} MB)" if size else ""), size)
                progress.advance(arrived)
            # the caller's progress replaces huggingface_hub's own bar
            http_get(url, cast(BinaryIO, _Counted(handle, progress)), resume_size=arrived,
                     headers=build_hf_headers(token=token), expected_size=size, displayed_filename=name,
                     tqdm_class=cast(Any, silent_tqdm) if progress is not None else None)
        partial.replace(blob)


class _Counted:
    """A file that reports each write to a converters.Progress (which may raise to stop the download)."""

    def __init__(self, handle: BinaryIO, progress: Progress | None) -> None:
        self._handle = handle
        self._progress = progress

    def write(self, data: bytes) -> int:
        written = self._handle.write(data)
        self._handle.flush()  # on disk before it counts: a killed pull keeps every byte it reported
        if self._progress is not None:
            self._progress.advance(len(data))
        return written

    def tell(self) -> int:
        return self._handle.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._handle.seek(offset, whence)

    def truncate(self, size: int | None = None) -> int:
        return self._handle.truncate(size)


def check_free_space(repo: str, commit: str | None, files: dict[str, int], output: Path,
                     output_bytes: int | None) -> None:
    """Raise before downloading when the disk cannot hold the files not yet in the cache plus the converted model
    (`output_bytes`; None: the model folder links the downloaded files, copying them only across file systems)."""
    from huggingface_hub import constants, try_to_load_from_cache

    missing = sum(size for name, size in files.items()
                  if not isinstance(try_to_load_from_cache(repo, name, revision=commit), str))
    cache = nearest_existing(Path(constants.HF_HUB_CACHE))
    needs = {cache: missing}
    place = nearest_existing(output)
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


def _expected_output(card: ModelCard | None, to: str, quant: str | None, weights: int) -> int:
    """The converted model's size: the card's figure where it has one, else the weights' size (no quant makes
    a model bigger than its checkpoint, except f32 from a 16-bit one)."""
    chosen = quant or (card.recommended_quant if card else None)
    if to == "gguf" and card and chosen in card.sizes_mb and "mmproj_f16" in card.sizes_mb:
        return int((card.sizes_mb[chosen] + card.sizes_mb["mmproj_f16"]) * 1e6)
    return weights * (2 if quant in ("f32", "fp32") else 1)


def _expected_scratch(to: str, quant: str | None, weights: int) -> int:
    """What the conversion writes beside the model and removes at the end, before the checkpoint is here to count it
    exactly (converters/disk_space.py does, once it is): ONNX stages the weights once more, a GGUF K-quant (the
    default) writes the language model in the checkpoint's precision first - about the checkpoint's size."""
    from edgevl.converters.gguf_files import QUANTS  # the converter is there: check_architecture saw it

    chosen = QUANTS.get((quant or "").lower())
    written_directly = to == "gguf" and chosen is not None and chosen.direct is not None
    return 0 if written_directly else weights


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
