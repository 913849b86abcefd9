"""The one place that owns the loaded model.

Engines are not thread-safe and a loaded model holds gigabytes, so the app never touches an engine directly:
`EngineHost` opens, uses and closes engines only inside jobs on its own pool of exactly one thread. Jobs
therefore run one after another, a model is loaded once and reused while the choice (model, threads, GPU,
image budget) stays the same, and switching models closes the old one before the new one is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable, Sequence

from PIL import Image
from PySide6.QtCore import QObject, QThreadPool, QTimer

from edgevl import api
from edgevl.engines.base import READING_TASKS, Engine
from edgevl.errors import UnsupportedTask
from edgevl.gui.i18n import task_labels, tr
from edgevl.gui.jobs import Cancelled, Job
from edgevl.tasks import Result


@dataclass(frozen=True)
class EngineChoice:
    """Everything that decides which engine is loaded; a different choice means closing and reopening."""

    model: str = api.DEFAULT_MODEL  # "default" (the embedded engine) or a model folder
    threads: int | None = None
    gpu: bool = True
    image_tokens: int | None = None

    @property
    def is_embedded(self) -> bool:
        return self.model == api.DEFAULT_MODEL


@dataclass(frozen=True)
class Answer:
    """A finished task: the parsed result, the raw answer it was parsed from, and which engine gave it (with
    the reason when a wanted GPU was not used)."""

    task: str
    result: Result
    raw: str
    engine: str


def supported_tasks(choice: EngineChoice) -> frozenset[str]:
    """What the chosen engine can do, known without loading it: the embedded engine reads text and tables,
    the vision-language models do every task."""
    return READING_TASKS if choice.is_embedded else Engine.tasks


def needs_model_message(task: str) -> str:
    return tr("{task} needs a vision-language model. Add one in the model manager, then choose it as the model.",
              task=task_labels().get(task, task))


def open_chosen_engine(choice: EngineChoice) -> Engine:
    if choice.is_embedded:
        return api.open_engine(threads=choice.threads)
    return api.open_engine(choice.model, threads=choice.threads, gpu=choice.gpu,
                           image_max_tokens=choice.image_tokens)


class EngineHost(QObject):
    def __init__(self, opener: Callable[[EngineChoice], Engine] = open_chosen_engine,
                 tasks_of: Callable[[EngineChoice], frozenset[str]] = supported_tasks,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._opener = opener  # tests pass fakes (a slow engine to cancel)
        self.tasks_of = tasks_of
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._engine: Engine | None = None
        self._loaded: EngineChoice | None = None
        self._summary = ""  # what the loaded engine is, for the status bar and the history
        self._jobs: set[Job] = set()  # keeps queued jobs (and their signal objects) alive

    def run_task(self, choice: EngineChoice, task: str, images: Sequence[Image.Image], **options: Any) -> Job:
        """Start a task; the job reports each streamed text piece and finishes with an `Answer`."""
        return self._start(lambda job: self._answer(job, choice, task, list(images), options))

    def run_batch(self, choice: EngineChoice, files: Sequence[Path], output: Path, task: str, **options: Any) -> Job:
        """A folder through the library's batch runner; the job reports ("start", to_do) and ("record", record)
        and finishes with the batch summary. Cancelling stops after the image in flight (the output file keeps
        every finished record)."""
        return self._start(lambda job: self._batch(job, choice, list(files), output, task, options))

    @property
    def summary(self) -> str:
        """The loaded engine's description ("" before the first task)."""
        return self._summary

    def release(self, model: str | Path) -> Job:
        """Close the engine if it holds `model` (before its folder is deleted)."""
        return self._start(lambda job: self._close_if_holding(Path(model)))

    def shutdown(self) -> None:
        """Cancel what runs, wait for it, then close the engine (the pool is idle, so this thread may)."""
        for job in list(self._jobs):
            job.cancel()
        self._pool.waitForDone()
        self._close()

    # ---- on the worker thread ------------------------------------------------------------------------------

    def _start(self, work: Callable[[Job], Any]) -> Job:
        """Queue a job; it starts once the caller is back in the event loop, so the signals the caller connects
        after this returns are connected before the job can emit (a task that fails at once, such as a caption
        on the embedded engine, would otherwise report to nobody)."""
        job = Job(work)
        self._jobs.add(job)
        for signal in (job.signals.finished, job.signals.failed, job.signals.cancelled):
            signal.connect(lambda *_, finished=job: self._jobs.discard(finished))
        QTimer.singleShot(0, self, lambda: self._pool.start(job))
        return job

    def _answer(self, job: Job, choice: EngineChoice, task: str, images: list[Image.Image],
                options: dict[str, Any]) -> Answer:
        if job.cancel_requested:  # cancelled while it waited for the job before it
            raise Cancelled
        engine = self._engine_for(choice, job)
        if task not in engine.tasks:
            raise UnsupportedTask(needs_model_message(task))
        run = api.stream_task(engine, task, images, **options)
        pieces = run.__iter__()  # the generator itself (iter() is typed as a plain Iterator), to close it below
        try:
            for piece in pieces:
                if job.cancel_requested:
                    raise Cancelled
                job.report(piece)
        finally:
            pieces.close()  # stops the engine's generator now, so it frees its per-request state
        return Answer(task, run.result(), run.answer, self._summary)

    def _batch(self, job: Job, choice: EngineChoice, files: list[Path], output: Path, task: str,
               options: dict[str, Any]) -> Any:
        from edgevl.batch import run_batch

        def on_record(record: dict[str, Any]) -> None:
            job.report(("record", record))
            if job.cancel_requested:  # the record is written; the runner stops here
                raise Cancelled

        engine = self._engine_for(choice, job)
        if task not in engine.tasks:
            raise UnsupportedTask(needs_model_message(task))
        return run_batch(engine, files, output, task, options=options,
                         on_start=lambda to_do, skipped: job.report(("start", to_do)), on_record=on_record)

    def _engine_for(self, choice: EngineChoice, job: Job) -> Engine:
        if choice != self._loaded:
            self._close()
            name = tr("the embedded OCR engine") if choice.is_embedded else Path(choice.model).name
            job.status(tr("Loading {model}...", model=name))
            self._engine = self._opener(choice)
            self._loaded = choice
            self._summary = self._engine_summary(self._engine, choice)
            job.status(self._summary)
        assert self._engine is not None, "the engine of the loaded choice stays open until _close()"
        return self._engine

    @staticmethod
    def _engine_summary(engine: Engine, choice: EngineChoice) -> str:
        """The engine's description, and in plain words why a wanted GPU is not used (CUDA missing...)."""
        summary = engine.description
        if choice.gpu and not choice.is_embedded and engine.device == "cpu":
            summary += " - " + tr("GPU not used: {reason}", reason=engine.device_reason)
        return summary

    def _close_if_holding(self, model: Path) -> None:
        if self._loaded is not None and Path(self._loaded.model) == model:
            self._close()

    def _close(self) -> None:
        if self._engine is not None:
            self._engine.close()
        self._engine, self._loaded = None, None
