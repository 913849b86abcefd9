"""The Python API that the CLI and the desktop app sit on.

    from edgevl.api import open_engine, run_task
    with open_engine("~/edgevl-models/qwen2-vl-2b-q4") as engine:   # or open_engine() for the embedded engine
        result = run_task(engine, "table", [load_image("invoice.png")])
        print(result.render("csv"))

Data flows one way: image -> task (builds the request) -> engine (streams text) -> task (parses) -> result.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Generator, Sequence

import platformdirs
from PIL import Image

from edgevl.engines.base import Engine
from edgevl.errors import BackendUnavailable, EdgevlError, ModelError
from edgevl.families import engine_class
from edgevl.manifest import MANIFEST_NAME, Manifest, read_manifest
from edgevl.request import Request
from edgevl.tasks import Result, Task, get_task

DEFAULT_MODEL = "default"  # the embedded classic OCR engine
CONVERT_HINT = "pip install 'edgevl[convert]'"


def models_dir() -> Path:
    """Where `edgevl models` looks and where bare model names are resolved (EDGEVL_MODELS overrides)."""
    configured = os.environ.get("EDGEVL_MODELS")
    return Path(configured).expanduser() if configured else platformdirs.user_data_path("edgevl") / "models"


@dataclass(frozen=True)
class InstalledModel:
    path: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.path.name


def installed_models(folder: Path | None = None) -> list[InstalledModel]:
    """Converted models in `folder` (default: models_dir()); damaged folders are skipped."""
    folder = folder or models_dir()
    found = []
    for manifest_path in sorted(folder.glob(f"*/{MANIFEST_NAME}")) if folder.is_dir() else []:
        try:
            found.append(InstalledModel(manifest_path.parent, read_manifest(manifest_path.parent)))
        except ModelError:
            continue
    return found


def resolve_model(model: str | Path | None) -> Path | None:
    """None for the embedded engine; else the model folder, given as a path or as a name in models_dir()."""
    if model is None or str(model) == DEFAULT_MODEL:
        return None
    path = Path(model).expanduser()
    if path.exists() or os.sep in str(model):
        return path
    named = models_dir() / str(model)
    if named.exists():
        return named
    raise ModelError(f"no model {model!r}: not a folder, and not in {models_dir()} (see `edgevl models`)")


def open_engine(
    model: str | Path | None = None,
    *,
    threads: int | None = None,
    gpu: bool = True,
    image_max_tokens: int | None = None,
    context_size: int = 8192,
    endpoint: str | None = None,
    api_key: str | None = None,
    model_name: str | None = None,
    family: str | None = None,
) -> Engine:
    """Load a converted model folder with the engine its manifest names, or the embedded engine for None.

    With `endpoint` (an OpenAI-compatible API, ".../v1": vLLM, llama.cpp's server, `edgevl serve`) nothing is
    loaded here: the engine sends requests to `model_name` there (default: its first model), worded for `family`.
    """
    if endpoint is not None:
        if model is not None:
            raise EdgevlError("give either a local model or an endpoint, not both (name the served model with "
                              "model_name)")
        from edgevl.engines.remote import RemoteEngine

        return RemoteEngine(endpoint, api_key=api_key, model_name=model_name, family=family)
    folder = resolve_model(model)
    if folder is None:
        from edgevl.engines.classic import ClassicOcrEngine

        return ClassicOcrEngine(threads=threads)
    manifest = read_manifest(folder)
    return engine_class(manifest.format, manifest.family).open(
        folder, threads=threads, gpu=gpu, image_max_tokens=image_max_tokens, context_size=context_size)


def conversion_choices() -> list[tuple[str, str]]:
    """(format, quant) a checkpoint can be converted to here, recommended first: GGUF when the converter is
    installed, ONNX when the export extra (torch, onnx, transformers) is too; empty when neither is."""
    try:
        from edgevl.converters.gguf_files import QUANTS
        from edgevl.converters.onnx_files import ONNX_QUANTS
    except ImportError:
        return []
    choices = [("gguf", name) for name in sorted(QUANTS, key=lambda name: name != "q4_k_m")]
    if all(importlib.util.find_spec(package) for package in ("torch", "onnx", "transformers")):
        choices += [("onnx", name) for name in ONNX_QUANTS]
    return choices


def convert(checkpoint: str | Path, output: str | Path, **options: Any) -> Manifest:
    """Convert a Hugging Face checkpoint folder into a model folder at `output`; `options` are those of
    edgevl.converters.convert (to, quant, vision_quant, overwrite, progress...)."""
    try:
        from edgevl.converters import convert as convert_checkpoint
    except ImportError:
        raise BackendUnavailable(f"converting needs the converter: {CONVERT_HINT}") from None
    return convert_checkpoint(checkpoint, output, **options)


class TaskRun:
    """One task on one engine: iterate it for the streamed text, then call `result()` for the parsed answer."""

    def __init__(self, engine: Engine, task: Task, request: Request) -> None:
        self.engine, self.task, self.request = engine, task, request
        self._pieces: list[str] = []

    def __iter__(self) -> Generator[str, None, None]:
        for piece in self.engine.stream(self.request):
            self._pieces.append(piece)
            yield piece

    @property
    def answer(self) -> str:
        return "".join(self._pieces)

    def result(self) -> Result:
        return self.task.parse(self.answer)


def stream_task(engine: Engine, task_name: str, images: Sequence[Image.Image], **options: Any) -> TaskRun:
    """Start a task; engines that cannot do it (the embedded engine and captions) raise UnsupportedTask."""
    task = get_task(task_name)
    return TaskRun(engine, task, task.build_request(images, engine.family, **options))


def run_task(engine: Engine, task_name: str, images: Sequence[Image.Image], **options: Any) -> Result:
    run = stream_task(engine, task_name, images, **options)
    for _ in run:
        pass
    return run.result()
