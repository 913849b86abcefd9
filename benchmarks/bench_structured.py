#!/usr/bin/env python3
"""What constrained decoding costs: decode tokens/s with and without a JSON schema, per runtime, in one run.

The random Qwen2-VL checkpoint with Qwen2-VL-2B widths (151,936-token vocabulary; cached in bench-out/ and shared
with bench_llamacpp.py and bench_onnx.py) is converted to GGUF q4_k_m and ONNX int4. Each engine then answers
the extract prompt for the same image alternately without a schema (free text) and with one (free, json, json,
free, ...), greedy, `--tokens` tokens at most, in one process. Decode speed is one over the median time from one
generated token to the next (sampling and the constraint's work included, image and prompt excluded); each
constrained request is divided by the free one of the same repeat, and the table gives the median and the range
(min-max) of those ratios. The constraint's own time per token (llguidance's mask and accept, the same code on
both runtimes) is also clocked directly and set against a free decode step: on a busy machine that share is the
steadier number. The schemas are narrowed to short values (edgevl/testing/schemas.py), so that random weights
write a document full of keys, separators and short values, as real receipts are, instead of one endless string.

    python benchmarks/bench_structured.py [--layers 4 --tokens 96 --repeats 4 --threads 2 --runtimes llama.cpp,onnx]

With 4 of the 28 layers a forward pass is about 7x cheaper than the real model's while the constraint's work
per token is the same, so the cost printed here is an upper bound of the real model's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, replace
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


class ConstraintClock:
    """Time spent on the constraint itself: llguidance's mask (computed and applied to the logits) and its
    accepting the chosen token, in both runtimes, plus reaching llama.cpp's logits buffer. Measured directly, so
    that a busy machine's noise in the forward passes does not hide it."""

    def __init__(self) -> None:
        self.seconds = 0.0
        from edgevl.engines.llamacpp import LlamaCppEngine
        from edgevl.engines.structured import TokenMask

        for owner, name in ((TokenMask, "apply"), (TokenMask, "accept"), (LlamaCppEngine, "_next_token_logits")):
            setattr(owner, name, self._timed(getattr(owner, name)))

    def _timed(self, method):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
        return timed


CLOCK: ConstraintClock | None = None


@dataclass
class Run:
    """One request: decode tokens/s, tokens generated, and ms per token spent on the constraint."""
    speed: float
    tokens: int
    constraint_ms: float


def decode_speed(engine, image, schema, tokens: int, constrained: bool) -> Run:
    """One request: the extract prompt for `schema`, constrained to it or (free) not. Its speed is one over the
    median time from one token to the next (a decode step, sampling and the constraint's work): a busy machine
    preempts a few steps for long, which a median ignores and a mean does not."""
    narrowed = short_numbers(short_values(schema))
    request = get_task("extract").build_request([image], engine.family, schema=narrowed, max_tokens=tokens)
    assert CLOCK is not None, "main() installs the clock first"
    CLOCK.seconds = 0.0
    arrivals = [time.perf_counter() for _ in engine.generate_token_ids(
        request if constrained else replace(request, json_schema=None))]
    steps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
    return Run(1 / statistics.median(steps), len(arrivals), 1000 * CLOCK.seconds / max(1, len(arrivals)))


def measure(engine, image, args: argparse.Namespace) -> dict[str, list[Run]]:
    """Free and constrained requests interleaved (free, schemas..., then the reverse), `repeats` times each."""
    runs: dict[str, list[Run]] = {name: [] for name in ["free", *SCHEMAS]}
    decode_speed(engine, image, SCHEMAS["receipt"], 8, True)  # warm-up: first-use costs (llguidance's index)
    for repeat in range(args.repeats):
        order = ["free", *SCHEMAS] if repeat % 2 == 0 else [*SCHEMAS, "free"]
        for name in order:
            schema = SCHEMAS["receipt"] if name == "free" else SCHEMAS[name]
            runs[name].append(decode_speed(engine, image, schema, args.tokens, constrained=name != "free"))
    return runs


def spread(values: list[float], form: str) -> str:
    """Median (min-max) of `values`."""
    return f"{statistics.median(values):{form}} ({min(values):{form}}-{max(values):{form}})"


def table_rows(runtime: str, runs: dict[str, list[Run]]) -> list[str]:
    """Per schema: speeds, the constrained/free ratio of each repeat (free measured beside it), and the
    constraint's own ms per token against a free decode step."""
    free = runs["free"]
    free_step_ms = statistics.median(1000 / run.speed for run in free)
    rows = []
    for name in SCHEMAS:
        ratios = [constrained.speed / unconstrained.speed for constrained, unconstrained in zip(runs[name], free)]
        shares = [run.constraint_ms / free_step_ms for run in runs[name]]
        rows.append(f"| {runtime} | {name} | {spread([run.speed for run in free], '.2f')} | "
                    f"{spread([run.speed for run in runs[name]], '.2f')} | {spread(ratios, '.3f')} | "
                    f"{statistics.median(run.tokens for run in runs[name]):.0f} | "
                    f"{spread([run.constraint_ms for run in runs[name]], '.2f')} | {spread(shares, '.1%')} |")
    return rows


def main() -> None:
    global CLOCK
    args = parse_args()
    sys.path.insert(0, str(REPO / "benchmarks"))
    image = screenshot(args.image_tokens)
    CLOCK = ConstraintClock()
    models = prepared_models(args)
    layers = "28 (all)" if args.full else f"{args.layers} of 28"
    print(f"random Qwen2-VL-2B widths, {layers} layers, {args.threads} threads, up to {args.tokens} tokens, "
          f"median (min-max) of {args.repeats} interleaved repeats")
    print("| runtime | schema | free tok/s | constrained tok/s | constrained / free | tokens "
          "| constraint ms/token | constraint / free step |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for runtime, folder in models.items():  # each runtime's rows as soon as they are measured
        say(f"measuring {runtime} ...")
        with open_runtime(runtime, folder, args.threads) as engine:
            print("\n".join(table_rows(runtime, measure(engine, image, args))), flush=True)

if __name__ == "__main__":
    main()
