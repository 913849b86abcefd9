#!/usr/bin/env python3
"""Qwen2.5-VL against its two reference runtimes, in one run: edgevl's llama.cpp engine against llama.cpp driven
directly (bench_llamacpp.py) and edgevl's ONNX engine against onnxruntime-genai's native `qwen2_5_vl` model type
on the same graphs (bench_onnx.py), both on one random checkpoint with Qwen2.5-VL-3B's widths (by default 4 of
its 36 language layers and 8 of its 32 vision blocks, the 8th attending fully as in the release).

    python benchmarks/bench_qwen25vl.py [--layers 4 --vision-depth 8 --image-tokens 1000 --tokens 64 --threads 1]

Each benchmark prints its own table; this script then prints every ratio (> 1: edgevl is better) side by side.
Without onnxruntime-genai installed the ONNX half is skipped with a line saying so.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench_llamacpp import METRICS as LLAMACPP_METRICS
from bench_llamacpp import (
    REPO, add_model_arguments, checkpoint_size, load_average, ratio, results_name, say, times,
)
from bench_onnx import METRICS as ONNX_METRICS
from bench_onnx import add_request_arguments

HERE = Path(__file__).resolve().parent
FAMILY = "qwen25vl"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench-out", help="cache for checkpoint, models, results")
    add_model_arguments(parser, families=(FAMILY,))
    add_request_arguments(parser)
    return parser.parse_args()


def shared_arguments(args: argparse.Namespace) -> list[str]:
    """What both benchmarks take, so that they build and measure the same checkpoint, image and request."""
    shared = ["--family", FAMILY, "--out", str(args.out), "--layers", str(args.layers), "--vision-depth",
              str(args.vision_depth), "--seed", str(args.seed), "--image-tokens", str(args.image_tokens), "--tokens",
              str(args.tokens), "--threads", str(args.threads), "--repeats", str(args.repeats)]
    return shared + (["--full"] if args.full else [])


def ratios(results: Path, reference: str, metrics) -> dict[str, float | None]:
    summary = json.loads(results.read_text())["summary"]
    ours, other = summary["ours"], summary[reference]
    return {label: ratio(ours[key], other[key], higher) for key, label, higher in metrics}


def main() -> None:
    args = parse_args()
    load_before, started = load_average(), time.time()
    onnx_only = [] if args.size_table else ["--no-size-table"]
    for script, extra in (("bench_llamacpp.py", []), ("bench_onnx.py", onnx_only)):
        say(f"== {script} --family {FAMILY}")
        subprocess.run([sys.executable, str(HERE / script), *shared_arguments(args), *extra], check=True)
    comparisons = {"llama.cpp engine vs llama.cpp direct": (results_name("llamacpp", FAMILY), "direct",
                                                             LLAMACPP_METRICS),
                   "ONNX engine vs onnxruntime-genai": (results_name("onnx", FAMILY), "genai", ONNX_METRICS)}
    print()
    size = checkpoint_size(args)
    print(f"Qwen2.5-VL (3B widths, {size.num_hidden_layers} language layers, {size.vision_depth} vision blocks): "
          f"ratios, > 1 means edgevl is better; load average {load_before} -> {load_average()}")
    for title, (name, reference, metrics) in comparisons.items():
        results = args.out / name
        if not results.is_file() or results.stat().st_mtime < started:
            print(f"{title}: not measured (see above)")
            continue
        print(f"{title}:")
        for label, value in ratios(results, reference, metrics).items():
            print(f"  {label:<40} {times(value)}")


if __name__ == "__main__":
    main()
