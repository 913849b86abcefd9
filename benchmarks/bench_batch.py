"""Images per second of `edgevl batch`: its overhead over a plain loop on the same local engine, and the remote
engine against `edgevl serve` at several concurrencies.

    .venv/bin/python benchmarks/bench_batch.py                     # about 2 minutes on a 2-core machine
    .venv/bin/python benchmarks/bench_batch.py --images 500 --size 896x672 --tokens 32

The model is the tests' tiny random Qwen2-VL (real architecture, small widths) converted to GGUF f16 and cached
in bench-out/, so a request costs milliseconds: the worst case for the runner's own per-image cost (threads,
JSON, fsync), which real models hide behind seconds of compute. Results: a table and bench-out/batch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from collections.abc import Callable

REPO = Path(__file__).resolve().parent.parent
CONCURRENCIES = (1, 4, 16)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench-out", help="cache for model, images, results")
    parser.add_argument("--images", type=int, default=100, help="images per run (default 100)")
    parser.add_argument("--size", default="448x336", help="image size WxH (default 448x336, 192 image tokens)")
    parser.add_argument("--task", default="ocr", choices=["ocr", "caption"], help="ocr sends PNG, caption JPEG")
    parser.add_argument("--tokens", type=int, default=16, help="answer tokens per image (default 16)")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (default 1: see README)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement; medians are shown")
    return parser.parse_args()


def tiny_model(out: Path) -> Path:
    from edgevl.converters import convert
    from edgevl.testing.qwen2vl import build_qwen2vl_checkpoint

    folder = out / "batch-model-f16"
    if not folder.exists():
        checkpoint = build_qwen2vl_checkpoint(out / "batch-checkpoint")
        convert(checkpoint, folder, quant="f16", vision_quant="f16")
    return folder


def noise_images(out: Path, count: int, width: int, height: int) -> list[Path]:
    import numpy as np
    from PIL import Image

    folder = out / f"batch-images-{width}x{height}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{index:05d}.png" for index in range(count)]
    for index, path in enumerate(paths):
        if not path.exists():
            pixels = np.random.default_rng(index).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path)
    return paths


def images_per_second(run: Callable[[], None], count: int) -> float:
    started = time.perf_counter()
    run()
    return count / (time.perf_counter() - started)


def batch_run(engine, paths: list[Path], task: str, tokens: int, concurrency: int = 1) -> Callable[[], None]:
    from edgevl.batch import run_batch

    def run() -> None:
        with tempfile.TemporaryDirectory() as scratch:
            summary = run_batch(engine, paths, Path(scratch) / "out.jsonl", task, options={"max_tokens": tokens},
                                concurrency=concurrency)
            assert summary.answered == len(paths) and summary.failed == 0
    return run


def plain_loop(engine, paths: list[Path], task: str, tokens: int) -> Callable[[], None]:
    """What an application would write without the runner: load, ask, keep the text."""
    from edgevl.api import run_task
    from edgevl.images import load_image

    def run() -> None:
        for path in paths:
            _ = run_task(engine, task, [load_image(path)], max_tokens=tokens).text
    return run


def measure_local(folder: Path, paths: list[Path], args: argparse.Namespace) -> dict[str, float]:
    from edgevl.engines.llamacpp import LlamaCppEngine

    rates: dict[str, list[float]] = {"plain loop": [], "batch": []}
    with LlamaCppEngine(folder, threads=args.threads) as engine:
        plain_loop(engine, paths[:10], args.task, args.tokens)()  # warm-up
        runs = {"plain loop": plain_loop(engine, paths, args.task, args.tokens),
                "batch": batch_run(engine, paths, args.task, args.tokens)}
        for repeat in range(args.repeats):
            order = list(runs) if repeat % 2 == 0 else list(reversed(runs))  # alternate: drift hits both alike
            for name in order:
                rates[name].append(images_per_second(runs[name], len(paths)))
    return {name: statistics.median(values) for name, values in rates.items()}


def measure_remote(folder: Path, paths: list[Path], args: argparse.Namespace) -> dict[str, float]:
    from edgevl.engines.remote import RemoteEngine
    from edgevl.testing.server import edgevl_serve

    rates = {}
    options = ("--model", str(folder), "--threads", str(args.threads), "--queue", str(max(CONCURRENCIES)))
    with edgevl_serve(*options) as url, RemoteEngine(url) as engine:
        batch_run(engine, paths[:10], args.task, args.tokens)()  # warm-up
        for concurrency in CONCURRENCIES:
            run = batch_run(engine, paths, args.task, args.tokens, concurrency)
            rates[f"remote, concurrency {concurrency}"] = statistics.median(
                images_per_second(run, len(paths)) for _ in range(args.repeats))
    return rates


def main() -> None:
    args = parse_args()
    width, height = map(int, args.size.split("x"))
    args.out.mkdir(exist_ok=True)
    load_before = os.getloadavg()
    folder = tiny_model(args.out)
    paths = noise_images(args.out, args.images, width, height)

    rates = measure_local(folder, paths, args)
    rates.update(measure_remote(folder, paths, args))
    load_after = os.getloadavg()

    baseline = rates["plain loop"]
    print(f"\n{args.images} images {args.size}, task {args.task}, {args.tokens} tokens, {args.threads} thread(s), "
          f"medians of {args.repeats}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"{'path':<24}{'images/s':>10}{'vs plain loop':>15}")
    for name, rate in rates.items():
        print(f"{name:<24}{rate:>10.1f}{rate / baseline:>15.3f}")
    overhead = baseline / rates["batch"] - 1
    print(f"batch runner overhead over the plain loop: {100 * overhead:+.1f}% (target <= 5%)")

    result = {"images": args.images, "size": args.size, "task": args.task, "tokens": args.tokens,
              "threads": args.threads, "repeats": args.repeats, "load_average": [load_before, load_after],
              "images_per_s": rates, "batch_overhead": overhead}
    (args.out / "batch.json").write_text(json.dumps(result, indent=2))
    print(f"written: {args.out / 'batch.json'}")


if __name__ == "__main__":
    main()
