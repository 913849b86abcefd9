#!/usr/bin/env python3
"""MiniCPM-V's two routes on the same checkpoint, in one run: ONNX int4 against GGUF q4_k_m.

  onnx  `edgevl convert --to onnx --quant int4`, run by the ONNX engine: vision graph fp16, embedding fp16,
        decoder with int4 MatMulNBits weights (8-bit output projection), all on ONNX Runtime;
  gguf  `edgevl convert --quant q4_k_m` (mmproj f16), run by MiniCPMVLlamaCppEngine: the language model on
        llama.cpp, the vision tower on ONNX Runtime from the mmproj's weights widened to fp32.

Both slice the image the released way and write the same prompt, so they do the same work: the same pieces and
prompt tokens (checked). The checkpoint is bench_minicpmv.py's random MiniCPM-V 2.6 with the real widths and fewer
layers (shared with it); each request runs in a fresh process, the two routes alternating, as in
bench_llamacpp.py, whose helpers this script imports. Usage and the meaning of the numbers: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from bench_llamacpp import (
    REPO, Run, load_average, load_image, measure_in_subprocess, measure_interleaved, ms_since, number, page,
    prepare_in_subprocess, same_text, say, short_answers, summarize, table, times,
)
from bench_minicpmv import REAL_LAYERS, REAL_VISION_LAYERS, checkpoint_folder, model_folder
from bench_minicpmv import prepare as prepare_gguf

PROMPT = "Read all the text in this image."
ENGINES = ("onnx", "gguf")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench-out", help="cache for checkpoint, models, results")
    parser.add_argument("--layers", type=int, default=2, help=f"LLM layers (the real model has {REAL_LAYERS})")
    parser.add_argument("--vision-layers", type=int, default=4,
                        help=f"vision layers (the real model has {REAL_VISION_LAYERS})")
    parser.add_argument("--full", action="store_true", help="all layers (8B: ~36 GB RAM to export to ONNX)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random checkpoint")
    parser.add_argument("--image", default="1344x896", help="WxH of the synthetic page (default: overview + 3x2 "
                                                            "slices, 448 image tokens)")
    parser.add_argument("--tokens", type=int, default=32, help="tokens to generate (greedy)")
    parser.add_argument("--threads", type=int, default=1, help="threads for both routes")
    parser.add_argument("--repeats", type=int, default=3, help="processes per route; the median is reported")
    parser.add_argument("--worker", choices=("prepare", *ENGINES), help=argparse.SUPPRESS)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.quant = "q4_k_m"  # what bench_minicpmv.prepare converts the GGUF route to
    return args


@dataclass(frozen=True)
class Job:
    folders: dict[str, str]
    image: str
    tokens: int
    threads: int
    workdir: str


def onnx_folder(args: argparse.Namespace) -> Path:
    checkpoint = checkpoint_folder(args)
    return checkpoint.with_name(f"{checkpoint.name}-onnx-int4")


def prepare(args: argparse.Namespace) -> None:
    """The checkpoint and its GGUF conversion (bench_minicpmv.py's, shared), and the ONNX int4 export, each once."""
    from edgevl.converters import convert

    prepare_gguf(args)
    folder = onnx_folder(args)
    if not folder.is_dir():
        say(f"exporting ONNX int4 to {folder} (once) ...")
        convert(checkpoint_folder(args), folder, to="onnx", quant="int4")


def measure(name: str, job: Job) -> dict:
    """One request as an application makes it: load the folder, stream() the answer; timings from last_stats."""
    from edgevl.engines.llamacpp_minicpmv import MiniCPMVLlamaCppEngine
    from edgevl.engines.onnx import OnnxEngine
    from edgevl.engines.base import ModelFolderEngine
    from edgevl.request import Request, Sampling

    image = load_image(job.image)
    started = time.perf_counter()
    engine: ModelFolderEngine
    if name == "onnx":
        engine = OnnxEngine(job.folders[name], threads=job.threads, device="cpu")
    else:
        engine = MiniCPMVLlamaCppEngine(job.folders[name], threads=job.threads, gpu=False)
    load_ms = ms_since(started)
    with engine:
        started = time.perf_counter()
        text = "".join(engine.stream(Request("ocr", (image,), PROMPT, sampling=Sampling(max_tokens=job.tokens))))
        request_ms = ms_since(started)
        stats = engine.last_stats
        return asdict(Run(stats.image_encode_ms, stats.prompt_tokens, stats.prefill_ms, stats.generated_tokens,
                          stats.decode_ms, request_ms, load_ms, text))


def worker(args: argparse.Namespace) -> None:
    if args.worker == "prepare":
        prepare(args)
        return
    job = Job(**json.loads(args.job.read_text()))
    import llama_cpp.mtmd_cpp  # noqa: F401 - imported before any clock starts, for both
    import onnxruntime  # noqa: F401
    import tokenizers  # noqa: F401

    (Path(job.workdir) / f"minicpmv-onnx-{args.worker}.json").write_text(json.dumps(measure(args.worker, job)))


# ---- report ----------------------------------------------------------------------------------------------------

def file_sizes(folders: dict[str, str]) -> str:
    """Each route's files by role, in MB, and the totals' ratio."""
    from edgevl.manifest import read_manifest

    manifests = {name: read_manifest(Path(folder)) for name, folder in folders.items()}
    lines = []
    for name, manifest in manifests.items():
        parts = ", ".join(f"{role} {entry.bytes / 1e6:,.0f}" for role, entry in manifest.files.items()
                          if entry.bytes > 1e6)
        total = number(manifest.total_bytes() / 1e6)
        lines.append(f"{name} ({manifest.quant}, vision {manifest.vision_quant}): {total} MB = {parts}")
    onnx, gguf = (manifests[name].total_bytes() for name in ENGINES)
    lines.append(f"file size, onnx vs gguf (> 1: onnx smaller): {times(gguf / onnx)}")
    return "\n".join(lines)


def notes(runs: dict[str, list[dict]], tokens: int) -> list[str]:
    onnx, gguf = runs["onnx"][0], runs["gguf"][0]
    lines = [f"prompt tokens: onnx {onnx['prompt_tokens']}, gguf {gguf['prompt_tokens']}"
             + ("" if onnx["prompt_tokens"] == gguf["prompt_tokens"] else " - WARNING: not the same work"),
             f"generated tokens: onnx {onnx['generated_tokens']}, gguf {gguf['generated_tokens']}"]
    every_run = [run for found in runs.values() for run in found]
    lines += short_answers(every_run, tokens)
    same = same_text(every_run)
    lines.append(f"same greedy text: {'yes' if same else 'no'} (int4 and q4_k_m round differently; not expected)")
    return lines


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    load_before = load_average()
    say(f"load average at start: {load_before}")
    args.out.mkdir(parents=True, exist_ok=True)
    folders = {"onnx": str(onnx_folder(args)), "gguf": str(model_folder(args))}
    prepare_in_subprocess(__file__, ready=all(Path(folder).is_dir() for folder in folders.values()))
    width, height = (int(side) for side in args.image.lower().split("x"))
    image = args.out / f"page-{width}x{height}.png"
    page(width, height).save(image)
    job = Job(folders, str(image), args.tokens, args.threads, str(args.out / "runs"))
    Path(job.workdir).mkdir(exist_ok=True)
    runs = measure_interleaved(job, args.repeats, engines=ENGINES,
                               measure=partial(measure_in_subprocess, script=__file__, prefix="minicpmv-onnx-"))
    summaries = {name: summarize(found) for name, found in runs.items()}
    print()
    print(f"edgevl MiniCPM-V ONNX vs GGUF: {checkpoint_folder(args).name}, image {width}x{height}, {args.tokens} "
          f"tokens greedy, {args.threads} thread(s), CPU, median of {args.repeats}; load average {load_before} -> "
          f"{load_average()}")
    print()
    print(table(summaries, subject="onnx", reference="gguf"))
    print()
    print("ratios: > 1 means onnx is better (onnx/gguf for speeds, gguf/onnx for times and memory). "
          "noise: (max - min) / median over the runs.")
    print(file_sizes(folders))
    for line in notes(runs, args.tokens):
        print(line)
    output = args.out / "minicpmv-onnx.json"
    output.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "job": asdict(job),
                                  "load_average": load_before, "summary": summaries, "runs": runs}, indent=2))
    print(f"results: {output}")


if __name__ == "__main__":
    main()
