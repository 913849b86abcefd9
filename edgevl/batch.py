"""Batch runs: one task over many images, one JSON line per image, safe to interrupt and resume.

    edgevl batch ./scans --task ocr -o ocr.jsonl --resume

The output file is the run's only state. Each record is appended, flushed and fsync'ed as soon as its image is
done, so a crash, a kill or a power cut loses at most the images in flight. `resume` reads the file back, cuts a
partially written last line, and skips every image that has a line, so each image ends up in the file exactly
once. Images that cannot be read or that the engine refuses are recorded with an `error` and the run goes on; an
engine that cannot answer at all (`EngineUnavailable`: a remote server that stays down) stops the run, ready to
be resumed. The first Ctrl+C lets the images in flight finish and be written; a second one gives up on them
(a resumed run answers them again).

Images are loaded one by one and at most `concurrency` are in flight, so memory stays flat however many
there are.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable, Generator, Iterator, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from edgevl import api
from edgevl.engines.base import Engine
from edgevl.errors import EdgevlError, EngineUnavailable, UnsupportedTask
from edgevl.images import load_image
from edgevl.tasks import ExtractResult, get_task

Record = dict[str, Any]


@dataclass
class BatchSummary:
    answered: int = 0  # images written by this run, errors included
    failed: int = 0  # of those, recorded with an error
    skipped: int = 0  # already in the output file
    interrupted: bool = False


def run_batch(
    engine: Engine,
    files: Sequence[Path],
    output: Path,
    task: str,
    *,
    options: dict[str, Any] | None = None,
    resume: bool = False,
    concurrency: int = 1,
    on_start: Callable[[int, int], None] | None = None,
    on_record: Callable[[Record], None] | None = None,
) -> BatchSummary:
    """Run `task` on every file, appending one record per image to `output` (JSONL).

    `options` go to the task (max_tokens, temperature, a caption's length...). `concurrency` > 1 only for engines
    that may be called from several threads (the remote engine). `on_start(to_do, skipped)` and `on_record(record)`
    report progress. Without `resume` an output file that already holds records is an error, so nothing is
    overwritten or mixed up.
    """
    if task not in engine.tasks:
        raise UnsupportedTask(f"{engine.description or 'this engine'} cannot do {task!r} (it does "
                              f"{' and '.join(sorted(engine.tasks))}); {task} needs a vision-language model: "
                              "--model or --endpoint")
    options = options or {}
    get_task(task).build_request([], engine.family, **options)  # a wrong option stops here, not at every image
    done = read_done(output, task) if resume else _refuse_existing(output)
    keys = list(dict.fromkeys(map(record_key, files)))  # a file named twice is answered once
    to_do = [key for key in keys if key not in done]
    summary = BatchSummary(skipped=len(keys) - len(to_do))
    if on_start:
        on_start(len(to_do), summary.skipped)

    def answer(key: str) -> Record:
        return answer_image(engine, task, key, options)

    with open_for_append(output) as append, stop_requested_on_ctrl_c() as stop:
        with closing(_answers_in_completion_order(answer, to_do, concurrency, stop)) as records:
            for record in records:
                append(record)
                summary.answered += 1
                summary.failed += record["error"] is not None
                if on_record:
                    on_record(record)
        summary.interrupted = stop.is_set() and summary.answered < len(to_do)
    return summary


def answer_image(engine: Engine, task: str, path: str, options: dict[str, Any]) -> Record:
    """The record of one image: its output, or the error that made it impossible (the run goes on)."""
    started = time.perf_counter()
    output, error, stats = None, None, {}
    try:
        run = api.stream_task(engine, task, [load_image(path)], **options)
        for _ in run:
            pass
        result = run.result()
        output = result.data if isinstance(result, ExtractResult) else result.text  # extract: a JSON object
        stats = {name: round(value, 1) for name, value in asdict(engine.last_stats).items()}
    except EngineUnavailable:
        raise
    except EdgevlError as failure:  # a bad image, a request the engine refuses
        error = str(failure)
    timings = {"total_ms": round(1000 * (time.perf_counter() - started), 1), **stats}
    return {"path": path, "task": task, "output": output, "error": error, "model": engine.description,
            "timings": timings}


def record_key(path: Path) -> str:
    """How an image is named in the output: its absolute path, the same whatever folder a run starts from."""
    return str(path.absolute())


def _answers_in_completion_order(answer: Callable[[str], Record], keys: list[str], concurrency: int,
                                 stop: threading.Event) -> Generator[Record, None, None]:
    """answer(key) for every key in `concurrency` threads, at most `concurrency` at a time; after `stop` is set
    no new image is started. Leaving early waits for the images in flight (their engine must not be closed
    under them) but does not write them."""
    pending = iter(keys)
    in_flight: set[Future[Record]] = set()
    with ThreadPoolExecutor(concurrency, thread_name_prefix="edgevl-batch") as pool:
        try:
            while True:
                while len(in_flight) < concurrency and not stop.is_set():
                    key = next(pending, None)
                    if key is None:
                        break
                    in_flight.add(pool.submit(answer, key))
                if not in_flight:
                    return
                finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
        finally:
            for future in in_flight:
                future.cancel()


# ---- the output file --------------------------------------------------------------------------------------------

def read_done(output: Path, task: str) -> set[str]:
    """The images the output file already has a record of; a partially written last line is cut off first."""
    if not output.exists():
        return set()
    done, complete_bytes = set(), 0
    with output.open("rb") as file:
        for number, line in enumerate(file, 1):
            if not line.endswith(b"\n"):
                break  # the last write of a run that was killed
            record = _parse_record(line, output, number)
            if record is not None:
                if record["task"] != task:
                    raise EdgevlError(f"{output} holds {record['task']} results; resume it with --task "
                                      f"{record['task']}, or write {task} results to another file")
                done.add(record["path"])
            complete_bytes += len(line)
    if complete_bytes < output.stat().st_size:
        with output.open("r+b") as file:
            file.truncate(complete_bytes)
            os.fsync(file.fileno())
    return done


def _parse_record(line: bytes, output: Path, number: int) -> Record | None:
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if not isinstance(record, dict) or not {"path", "task"} <= record.keys():
        raise EdgevlError(f"{output}, line {number}: not a record of edgevl batch; fix or remove that line, "
                          "or write to another file")
    return record


def _refuse_existing(output: Path) -> set[str]:
    if output.exists() and output.stat().st_size > 0:
        raise EdgevlError(f"{output} already exists: add --resume to continue that run, or choose another file")
    return set()


@contextmanager
def open_for_append(output: Path) -> Iterator[Callable[[Record], None]]:
    """A function that appends a record durably: written, flushed and fsync'ed before it returns."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        file = output.open("ab", buffering=0)  # unbuffered: a failed write cannot fail again at close
    except OSError as error:
        raise _write_error(output, error) from None
    with file:
        def append(record: Record) -> None:
            data = memoryview(json.dumps(record, ensure_ascii=False).encode() + b"\n")
            try:
                while data:
                    data = data[file.write(data):]
                _sync(file.fileno())
            except OSError as error:  # a full disk, a device that takes no data
                raise _write_error(output, error) from None

        yield append


def _sync(descriptor: int) -> None:
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno != errno.EINVAL:  # EINVAL: a device or pipe, which has nothing to sync
            raise


def _write_error(output: Path, error: OSError) -> EdgevlError:
    return EdgevlError(f"{output}: cannot write the results ({error.strerror or error})")


@contextmanager
def stop_requested_on_ctrl_c() -> Iterator[threading.Event]:
    """An event set by the first Ctrl+C, to finish the images in flight; a second one raises KeyboardInterrupt.
    Outside the main thread (signals go to the main thread only) nothing is installed."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def first_ctrl_c(signum: int, frame: object) -> None:
        stop.set()
        signal.signal(signal.SIGINT, previous)

    previous = signal.signal(signal.SIGINT, first_ctrl_c)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


# ---- progress ---------------------------------------------------------------------------------------------------

class RateColumn(ProgressColumn):
    def render(self, task: Any) -> Text:
        return Text(f"{task.speed:.2f} img/s" if task.speed else "-- img/s", style="progress.data.speed")


class BatchProgress:
    """A rich progress bar: images done of those to do, errors, rate and time left. Use as a context manager;
    its `start` and `record` methods are run_batch's `on_start` and `on_record` (it shows from `start` on, so
    that a run refused at once prints no empty bar)."""

    def __init__(self, console: Console, task: str) -> None:
        self.task_name = task
        self.skipped = self.failed = 0
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                             TextColumn("ETA"), TimeRemainingColumn(), console=console)
        self._task = self._bar.add_task(task, total=None)

    def __enter__(self) -> BatchProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._bar.stop()

    def start(self, to_do: int, skipped: int) -> None:
        self.skipped = skipped
        self._bar.start()
        self._bar.update(self._task, total=to_do, description=self._description())

    def record(self, record: Record) -> None:
        self.failed += record["error"] is not None
        self._bar.update(self._task, advance=1, description=self._description())

    def _description(self) -> str:
        resumed = f" ({self.skipped} done before)" if self.skipped else ""
        errors = f" [red]{self.failed} failed[/red]" if self.failed else ""
        return f"{self.task_name}{resumed}{errors}"
