#!/usr/bin/env python3
"""What constrained decoding costs: decode tokens/s with and without a JSON schema, per runtime, in one run.

The random Qwen2-VL checkpoint with Qwen2-VL-2B widths (151,936-token vocabulary; cached in bench-out/ and shared
with bench_llamacpp.py and bench_onnx.py) is converted to GGUF q4_k_m and ONNX int4. Each engine then answers
the extract prompt for the same image alternately without a schema (free text) and with one (free, json, json,
free, ...), greedy, `--tokens` tokens at most, in one process. Decode speed is generated tokens / decode time,
from the engine's own stats (sampling and the constraint's work included, image and prompt excluded). The
schemas are narrowed to short values (edgevl/testing/schemas.py), so that random weights write a document full
of keys, separators and short values, as real receipts are, instead of one endless string.

    python benchmarks/bench_structured.py [--layers 4 --tokens 96 --repeats 4 --threads 2]

With 4 of the 28 layers a forward pass is about 7x cheaper than the real model's while the constraint's work
per token is the same, so the cost printed here is an upper bound of the real model's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from bench_llamacpp import REPO, add_model_arguments, ensure_checkpoint, say, screenshot

from edgevl.tasks import get_task
from edgevl.tasks.extract import builtin_schemas, fields_schema
from edgevl.testing.schemas import short_numbers, short_values

SCHEMAS = {"receipt": builtin_schemas()["receipt"], "--fields total,date,vendor": fields_schema("total,date,vendor")}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench-out", help="cache for checkpoint and models")
    add_model_arguments(parser)
    parser.add_argument("--image-tokens", type=int, default=256, help="image size, in image tokens")
    parser.add_argument("--tokens", type=int, default=96, help="most tokens to generate (greedy)")
    parser.add_argument("--threads", type=int, default=2, help="threads of both runtimes")
    parser.add_argument("--repeats", type=int, default=4, help="requests per variant; the median is reported")
    parser.add_argument("--runtimes", default="llama.cpp,onnx", help="comma-separated: llama.cpp, onnx")
    return parser.parse_args()


def prepared_models(args: argparse.Namespace) -> dict[str, Path]:
    """The converted models, made once: GGUF q4_k_m (+ f16 mmproj) and ONNX int4."""
    from edgevl.converters import convert

    checkpoint = ensure_checkpoint(args)
    models = {"llama.cpp": checkpoint.with_name(f"{checkpoint.name}-q4_k_m"),
              "onnx": checkpoint.with_name(f"{checkpoint.name}-onnx-int4")}
    wanted = [runtime.strip() for runtime in args.runtimes.split(",")]
    for runtime in wanted:
        if not models[runtime].is_dir():
            say(f"converting for {runtime} into {models[runtime]} (once) ...")
            if runtime == "onnx":
                convert(checkpoint, models[runtime], to="onnx", quant="int4")
            else:
                convert(checkpoint, models[runtime], quant="q4_k_m", vision_quant="f16", threads=args.threads)
    return {runtime: models[runtime] for runtime in wanted}


def open_runtime(runtime: str, folder: Path, threads: int):
    if runtime == "onnx":
        from edgevl.engines.onnx import OnnxEngine

        return OnnxEngine(folder, threads=threads, device="cpu")
    from edgevl.engines.llamacpp import LlamaCppEngine

    return LlamaCppEngine(folder, threads=threads, gpu=False)


class SamplingClock:
    """Time spent choosing tokens: llama.cpp's RequestSampler.sample (free sampling plus the grammar's work), or
    llguidance's mask and accept on ONNX (the constraint's work alone). Measured directly, so that a busy machine's
    noise in the forward passes does not hide it."""

    def __init__(self) -> None:
        self.seconds = 0.0
        from edgevl.engines.llamacpp import RequestSampler
        from edgevl.engines.structured import TokenMask

        for owner, name in ((RequestSampler, "sample"), (TokenMask, "apply"), (TokenMask, "accept")):
            setattr(owner, name, self._timed(getattr(owner, name)))

    def _timed(self, method):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
        return timed


CLOCK: SamplingClock | None = None


def decode_speed(engine, image, schema, tokens: int, constrained: bool) -> tuple[float, int, float]:
    """(tokens/s, tokens, ms per token choosing it) of one request: the extract prompt for `schema`, constrained
    to it or (free) not."""
    narrowed = short_values(schema)
    if getattr(engine, "format", "") == "onnx":
        narrowed = short_numbers(narrowed)
    request = get_task("extract").build_request([image], engine.family, schema=narrowed, max_tokens=tokens)
    assert CLOCK is not None, "main() installs the sampling clock first"
    CLOCK.seconds = 0.0
    for _ in engine.stream(request if constrained else replace(request, json_schema=None)):
        pass
    stats = engine.last_stats
    return stats.decode_tokens_per_s, stats.generated_tokens, 1000 * CLOCK.seconds / max(1, stats.generated_tokens)


def measure(engine, image, args: argparse.Namespace) -> dict[str, list[tuple[float, int, float]]]:
    runs: dict[str, list[tuple[float, int, float]]] = {name: [] for name in ["free", *SCHEMAS]}
    decode_speed(engine, image, SCHEMAS["receipt"], 8, True)  # warm-up: first-use costs (llguidance's index)
    for repeat in range(args.repeats):
        order = ["free", *SCHEMAS] if repeat % 2 == 0 else [*SCHEMAS, "free"]
        for name in order:
            schema = SCHEMAS["receipt"] if name == "free" else SCHEMAS[name]
            runs[name].append(decode_speed(engine, image, schema, args.tokens, constrained=name != "free"))
    return runs


def main() -> None:
    global CLOCK
    args = parse_args()
    sys.path.insert(0, str(REPO / "benchmarks"))
    image = screenshot(args.image_tokens)
    CLOCK = SamplingClock()
    rows = []
    for runtime, folder in prepared_models(args).items():
        say(f"measuring {runtime} ...")
        with open_runtime(runtime, folder, args.threads) as engine:
            runs = measure(engine, image, args)
        free = statistics.median(speed for speed, _, _ in runs["free"])
        free_choosing = statistics.median(ms for _, _, ms in runs["free"])
        for name in SCHEMAS:
            constrained = statistics.median(speed for speed, _, _ in runs[name])
            choosing = statistics.median(ms for _, _, ms in runs[name])
            generated = statistics.median(count for _, count, _ in runs[name])
            extra = choosing - free_choosing
            rows.append((runtime, name, free, constrained, 1 - constrained / free, generated, extra,
                         extra / (1000 / free)))
    print(f"\nrandom Qwen2-VL-2B widths, {args.layers} layers, {args.threads} threads, up to {args.tokens} tokens, "
          f"median of {args.repeats}")
    print("| runtime | schema | free tok/s | constrained tok/s | cost (tok/s) | tokens | constraint ms/token "
          "| constraint / free step |")
    print("|---|---|---|---|---|---|---|---|")
    for runtime, name, free, constrained, cost, generated, extra, share in rows:
        print(f"| {runtime} | {name} | {free:.2f} | {constrained:.2f} | {cost:+.1%} | {generated:.0f} | "
              f"{extra:.2f} | {share:.1%} |")


if __name__ == "__main__":
    main()
