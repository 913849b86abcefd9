"""A real `edgevl serve` in a subprocess on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from collections.abc import Iterator

_READY = re.compile(r" at (http://127\.0\.0\.1:\d+/v1) ")


@contextmanager
def edgevl_serve(*options: str, timeout: float = 120.0) -> Iterator[str]:
    """Start `edgevl serve --port 0 OPTIONS...`, yield the API URL it announces, stop it at the end."""
    with edgevl_serve_process(*options, timeout=timeout) as (url, _, _):
        yield url


@contextmanager
def edgevl_serve_process(*options: str, timeout: float = 120.0) -> Iterator[tuple[str, subprocess.Popen, list[str]]]:
    """edgevl_serve, also yielding the process (to measure its memory) and the lines it writes to stderr so far."""
    command = [sys.executable, "-m", "edgevl.cli", "serve", "--port", "0", *options]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    lines: list[str] = []
    try:
        yield _announced_url(process, timeout, lines), process, lines
    finally:
        process.terminate()
        process.wait(timeout=60)


def _announced_url(process: subprocess.Popen, timeout: float, lines: list[str]) -> str:
    ready = threading.Event()

    def read_stderr() -> None:  # reads to the end, so that the server never blocks on a full pipe
        assert process.stderr is not None, "the server is started with stderr=PIPE"
        for line in process.stderr:
            lines.append(line)
            if _READY.search(line):
                ready.set()

    threading.Thread(target=read_stderr, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.05):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"edgevl serve did not start: {''.join(lines)[-2000:]}")
    return next(match.group(1) for line in lines if (match := _READY.search(line)))
