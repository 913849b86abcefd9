"""Start-up of the frozen desktop app (dist/edgevl/edgevl-gui, from packaging/build.sh) against the same app run from
the virtual environment (`python -m edgevl.gui`), measured the same way for both: wall time from starting the
process to its window being visible on an X server.

    .venv/bin/python benchmarks/bench_frozen_startup.py             # on a private Xvfb; 5 runs of each, alternating
    .venv/bin/python benchmarks/bench_frozen_startup.py --runs 9

The app runs as a user would start it (its own process, settings and a history of 50 entries as in
bench_gui_startup.py); the window counts as visible when `xdotool search --onlyvisible` finds it, polled every
20 ms. The first run of each is a warm-up (page cache) and is not counted. Target: the frozen app within 1.5x of
the venv's median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_gui_startup import fill_history

ROOT = Path(__file__).resolve().parent.parent
FROZEN = ROOT / "dist" / "edgevl" / "edgevl-gui"
TARGET_RATIO = 1.5
POLL_S = 0.02


def window_visible(display: str) -> bool:
    found = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", "^edgevl$"], capture_output=True,
                           env={**os.environ, "DISPLAY": display})
    return found.returncode == 0 and bool(found.stdout.strip())


def measure_once(command: list[str], env: dict[str, str], display: str, timeout_s: float = 120) -> float:
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while not window_visible(display):
            if process.poll() is not None:
                stderr = process.stderr.read().decode() if process.stderr else ""
                raise SystemExit(f"{command[0]} exited ({process.returncode}): {stderr}")
            if time.perf_counter() - started > timeout_s:
                raise SystemExit(f"{command[0]}: no window after {timeout_s} s")
            time.sleep(POLL_S)
        return time.perf_counter() - started
    finally:
        process.kill()
        process.wait()


def start_xvfb() -> tuple[subprocess.Popen, str]:
    read_end, write_end = os.pipe()
    # -noreset: by default the server resets when its last client leaves, and an app started during the reset
    # cannot connect ("could not connect to display"), which ended a run here
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1280x800x24", "-nolisten", "tcp",
                             "-noreset"], pass_fds=(write_end,), stderr=subprocess.DEVNULL)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        return xvfb, ":" + pipe.readline().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if not FROZEN.exists():
        raise SystemExit(f"{FROZEN} is missing: run packaging/build.sh first")
    xvfb, display = start_xvfb()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            data_dir = Path(scratch) / "gui"
            data_dir.mkdir()
            fill_history(data_dir)
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": scratch, "TMPDIR": scratch,
                   "DISPLAY": display, "EDGEVL_MODELS": str(Path(scratch) / "models")}
            commands = {
                "venv": [sys.executable, "-m", "edgevl.gui", "--data-dir", str(data_dir)],
                "frozen": [str(FROZEN), "--data-dir", str(data_dir)],
            }
            times: dict[str, list[float]] = {name: [] for name in commands}
            for run in range(args.runs + 1):
                for name, command in commands.items():
                    elapsed = measure_once(command, env, display)
                    if run:  # run 0 warms the page cache
                        times[name].append(elapsed)
    finally:
        xvfb.kill()
    for name, values in times.items():
        print(f"{name:>6}: " + ", ".join(f"{t:.2f}" for t in values) + f" s (median {statistics.median(values):.2f} s)")
    ratio = statistics.median(times["frozen"]) / statistics.median(times["venv"])
    verdict = "within" if ratio <= TARGET_RATIO else "OVER"
    print(f"frozen / venv: {ratio:.2f}x, {verdict} the {TARGET_RATIO}x target")


if __name__ == "__main__":
    main()
