#!/usr/bin/env python3
"""What edgevl's MiniCPM-V path costs against llama.cpp's own mtmd path on the same GGUF folder, in one run.

  ours  MiniCPMVLlamaCppEngine: the release's slicing, each piece encoded by ONNX Runtime from the mmproj's
        weights, the embeddings fed to llama.cpp's language model;
  mtmd  LlamaCppEngine on the same folder: llama.cpp's own preprocessing and clip encoder on the mmproj, what
        llama.cpp and Ollama users get.

The model is a random MiniCPM-V 2.6 with the real widths (Qwen2-7B LLM, SigLIP-400M vision, resampler), with
fewer layers unless --full: random weights cost exactly what trained ones cost. Both engines run the same image,
prompt, threads, context, batch and greedy token count, each request in a fresh process, alternating. At
448x448 both do the same work (one piece, 64 queries); any other size is sliced differently by the two, so the
piece counts are printed. Usage and the meaning of the numbers: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

from bench_llamacpp import (
    QUANTS, REPO, Run, load_average, load_image, measure_in_subprocess, measure_interleaved, ms_since, page,
    prepare_in_subprocess, same_text, say, short_answers, summarize, table,
)

PROMPT = "Read all the text in this image."
REAL_LAYERS, REAL_VISION_LAYERS = 28, 27  # MiniCPM-V 2.6: Qwen2-7B and SigLIP-400M


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench-out", help="cache for checkpoint, GGUF, results")
    parser.add_argument("--layers", type=int, default=2, help=f"LLM layers (the real model has {REAL_LAYERS})")
    parser.add_argument("--vision-layers", type=int, default=4,
                        help=f"vision layers (the real model has {REAL_VISION_LAYERS})")
    parser.add_argument("--full", action="store_true", help="all layers (8B: ~20 GB RAM, ~36 GB disk to build)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random checkpoint")
    parser.add_argument("--quant", choices=QUANTS, default="q4_k_m", help="LLM quant (mmproj is f16)")
    parser.add_argument("--image", default="448x448", help="WxH; anything but 448x448 is sliced, differently")
    parser.add_argument("--tokens", type=int, default=32, help="tokens to generate (greedy)")
    parser.add_argument("--threads", type=int, default=1, help="threads for both engines")
    parser.add_argument("--context", type=int, default=4096, help="context size in tokens")
    parser.add_argument("--batch", type=int, default=512, help="batch and micro-batch size")
    parser.add_argument("--repeats", type=int, default=3, help="processes per engine; the median is reported")
    parser.add_argument("--worker", choices=("prepare", "ours", "mtmd"), help=argparse.SUPPRESS)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


@dataclass(frozen=True)
class Job:
    folder: str
    image: str
    tokens: int
    threads: int
    context: int
    batch: int
    workdir: str


# ---- the model ---------------------------------------------------------------------------------------------------

def checkpoint_folder(args: argparse.Namespace) -> Path:
    layers, vision = (REAL_LAYERS, REAL_VISION_LAYERS) if args.full else (args.layers, args.vision_layers)
    return args.out / f"minicpmv26-random-l{layers}-v{vision}-seed{args.seed}"


def model_folder(args: argparse.Namespace) -> Path:
    checkpoint = checkpoint_folder(args)
    return checkpoint.with_name(f"{checkpoint.name}-{args.quant}")


def prepare(args: argparse.Namespace) -> None:
    """The random checkpoint (bf16) and its conversion, each made once and reused."""
    import torch

    from edgevl.converters import convert
    from edgevl.testing.minicpmv import MiniCPMVSize, build_minicpmv_checkpoint

    checkpoint, folder = checkpoint_folder(args), model_folder(args)
    if not checkpoint.is_dir():
        size = MiniCPMVSize(hidden_size=3584, intermediate_size=18944, num_attention_heads=28, num_key_value_heads=4,
                            num_hidden_layers=REAL_LAYERS, vision_hidden_size=1152, vision_intermediate_size=4304,
                            vision_heads=16, vision_layers=REAL_VISION_LAYERS)
        if not args.full:
            size = replace(size, num_hidden_layers=args.layers, vision_layers=args.vision_layers)
        say(f"building a random checkpoint in {checkpoint} (once) ...")
        # built in bf16 from the start: in fp32 the 151,666 x 3584 embedding and lm_head alone take 4.3 GB
        torch.set_default_dtype(torch.bfloat16)
        partial_folder = checkpoint.with_name(checkpoint.name + ".partial")
        build_minicpmv_checkpoint(partial_folder, "2.6", size, dtype="bfloat16", seed=args.seed, shards=8)
        partial_folder.rename(checkpoint)
    if not folder.is_dir():
        say(f"converting to {args.quant} + f16 mmproj in {folder} (once) ...")
        convert(checkpoint, folder, quant=args.quant, vision_quant="f16", threads=args.threads)


# ---- measuring -------------------------------------------------------------------------------------------------

def engine_class(name: str):
    """The engine, counting the image pieces it encodes (one mtmd image chunk, or one embedding run, per piece)."""
    from edgevl.engines.llamacpp import LlamaCppEngine
    from edgevl.engines.llamacpp_minicpmv import MiniCPMVLlamaCppEngine

    class Ours(MiniCPMVLlamaCppEngine):
        pieces = 0

        def _decode_embeddings(self, embeddings, position):
            self.pieces += 1
            return super()._decode_embeddings(embeddings, position)

    class Mtmd(LlamaCppEngine):
        pieces = 0

        def _eval_chunks(self, chunks, stats):
            mtmd = self._mtmd
            types = (mtmd.mtmd_input_chunk_get_type(mtmd.mtmd_input_chunks_get(chunks, index))
                     for index in range(mtmd.mtmd_input_chunks_size(chunks)))
            self.pieces = sum(kind == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE for kind in types)
            return super()._eval_chunks(chunks, stats)

    return {"ours": Ours, "mtmd": Mtmd}[name]


def measure(name: str, job: Job) -> dict:
    """One request as an application makes it: load the folder, stream() the answer; timings from last_stats."""
    from edgevl.request import Request, Sampling

    image = load_image(job.image)
    engine_type = engine_class(name)
    started = time.perf_counter()
    engine = engine_type(job.folder, threads=job.threads, context_size=job.context, batch_size=job.batch)
    load_ms = ms_since(started)
    with engine:
        started = time.perf_counter()
        text = "".join(engine.stream(Request("ocr", (image,), PROMPT, sampling=Sampling(max_tokens=job.tokens))))
        request_ms = ms_since(started)
        stats = engine.last_stats
        run = Run(stats.image_encode_ms, stats.prompt_tokens, stats.prefill_ms, stats.generated_tokens,
                  stats.decode_ms, request_ms, load_ms, text)
        return {**asdict(run), "pieces": engine.pieces}


def worker(args: argparse.Namespace) -> None:
    if args.worker == "prepare":
        prepare(args)
        return
    job = Job(**json.loads(args.job.read_text()))
    import llama_cpp.mtmd_cpp  # noqa: F401 - imported before any clock starts, for both
    import onnxruntime  # noqa: F401

    (Path(job.workdir) / f"minicpmv-{args.worker}.json").write_text(json.dumps(measure(args.worker, job)))


# ---- report ----------------------------------------------------------------------------------------------------

def notes(runs: dict[str, list[dict]], tokens: int, size: tuple[int, int]) -> list[str]:
    ours, mtmd = runs["ours"][0], runs["mtmd"][0]
    lines = [f"image pieces: ours {ours['pieces']}, mtmd {mtmd['pieces']}" + (
             "" if size == (448, 448) else f" - DIFFERENT WORK: at {size[0]}x{size[1]} the paths cut and resize "
             "the image differently (piece counts and sizes), compare whole requests with that in mind"),
             f"prompt tokens: ours {ours['prompt_tokens']}, mtmd {mtmd['prompt_tokens']} (ours adds 2.6's "
             "<image_id>; mtmd leaves it out)",
             f"generated tokens: ours {ours['generated_tokens']}, mtmd {mtmd['generated_tokens']}"]
    every_run = [run for found in runs.values() for run in found]
    lines += short_answers(every_run, tokens)
    same = same_text(every_run)
    lines.append(f"same greedy text: {'yes' if same else 'no'} (not expected: different pixels and prompts)")
    return lines


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    load_before = load_average()
    say(f"load average at start: {load_before}")
    args.out.mkdir(parents=True, exist_ok=True)
    folder = model_folder(args)
    prepare_in_subprocess(__file__, ready=folder.is_dir())
    width, height = (int(side) for side in args.image.lower().split("x"))
    image = args.out / f"page-{width}x{height}.png"
    page(width, height).save(image)
    job = Job(str(folder), str(image), args.tokens, args.threads, args.context, args.batch, str(args.out / "runs"))
    Path(job.workdir).mkdir(exist_ok=True)
    runs = measure_interleaved(job, args.repeats, engines=("ours", "mtmd"),
                               measure=partial(measure_in_subprocess, script=__file__, prefix="minicpmv-"))
    summaries = {name: summarize(found) for name, found in runs.items()}
    print()
    print(f"edgevl MiniCPM-V benchmark: {folder.name} (+ f16 mmproj), image {width}x{height}, {args.tokens} tokens "
          f"greedy, {args.threads} thread(s), median of {args.repeats}; load average {load_before} -> "
          f"{load_average()}")
    print()
    print(table(summaries, reference="mtmd"))
    print()
    print("ratios: > 1 means ours is better (ours/mtmd for speeds, mtmd/ours for times and memory). "
          "noise: (max - min) / median over the runs.")
    for line in notes(runs, args.tokens, (width, height)):
        print(line)
    output = args.out / "minicpmv.json"
    output.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "job": asdict(job),
                                  "load_average": load_before, "summary": summaries, "runs": runs}, indent=2))
    print(f"results: {output}")


if __name__ == "__main__":
    main()
