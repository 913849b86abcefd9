#!/usr/bin/env python3
"""What edgevl's llama.cpp engine costs over driving llama.cpp directly: speed and memory, in one run.

LlamaCppEngine wraps llama-cpp-python's low-level calls in Python (preprocessing, prompt formatting, stop
strings, incremental UTF-8, stats). To see what that wrapping costs, the same GGUF files run with the same
threads, context, batch, image and prompt through:

  ours    LlamaCppEngine.stream(), as an application calls it;
  direct  the shortest straightforward loop over the same bindings (DirectPath below);
  cli     optionally (--with-cli), llama.cpp's own llama-mtmd-cli built from the pinned sdist.

The model is a random Qwen2-VL with Qwen2-VL-2B's real widths, or with --family qwen25vl a random Qwen2.5-VL with
Qwen2.5-VL-3B's (fewer layers unless --full): random weights cost exactly what trained ones cost. Every request
runs in a fresh process (load the model, one request, exit), so each peak RSS is that engine's alone; ours and
direct alternate (ours, direct, direct, ours, ...), so a change of machine load hits both alike.
Usage and the meaning of the numbers: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.metadata
import json
import math
import os
import platform
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from edgevl.testing.qwen2vl import Qwen2VLSize
    from edgevl.testing.qwen25vl import Qwen25VLSize

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgevl-bench"
PROMPT = "Read all the text in this image."
QUANTS = ("q4_k_m", "q5_k_m", "q6_k", "q8_0", "f16")  # f32 would also switch the engine's KV cache to f32
#: family -> the released model whose widths the random checkpoint has (its name in the cache folders)
BENCH_MODELS = {"qwen2vl": "qwen2vl-2b", "qwen25vl": "qwen25vl-3b"}
CELL = 28  # pixels per Qwen2-VL image token side (14 px patches, merged 2x2)


# ---- settings ------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench-out", help="cache for checkpoint, GGUF, results")
    add_model_arguments(parser)
    parser.add_argument("--quant", choices=QUANTS, default="q4_k_m", help="language model quant (mmproj is f16)")
    parser.add_argument("--image-tokens", type=int, default=1000, help="image size, in image tokens")
    parser.add_argument("--tokens", type=int, default=64, help="tokens to generate (greedy)")
    parser.add_argument("--threads", type=int, default=1, help="threads for every engine")
    parser.add_argument("--context", type=int, default=4096, help="context size in tokens")
    parser.add_argument("--batch", type=int, default=512, help="batch and micro-batch size")
    parser.add_argument("--repeats", type=int, default=3, help="processes per engine; the median is reported")
    parser.add_argument("--with-cli", action="store_true", help="also time llama-mtmd-cli (built once, cached)")
    parser.add_argument("--cli-build-timeout", type=int, default=1200, help="seconds before giving up the build")
    parser.add_argument("--llama-cpp-src", type=Path, help="unpacked llama-cpp-python sdist (default: pip download)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one request of ours (cProfile, llama.cpp's own timings)")
    parser.add_argument("--onnx-vision", action="store_true",
                        help="ours with the ONNX Runtime vision encoder (LlamaCppEngine(onnx_vision=True))")
    parser.add_argument("--worker", choices=("prepare", "ours", "direct", "profile"), help=argparse.SUPPRESS)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def add_model_arguments(parser: argparse.ArgumentParser, families: tuple[str, ...] = tuple(BENCH_MODELS)) -> None:
    """Which random checkpoint a benchmark builds: family (the first by default), depth, seed."""
    parser.add_argument("--family", choices=families, default=families[0],
                        help="Qwen2-VL-2B's widths (qwen2vl) or Qwen2.5-VL-3B's (qwen25vl)")
    parser.add_argument("--layers", type=int, default=4,
                        help="language model layers (Qwen2-VL-2B has 28, Qwen2.5-VL-3B 36)")
    parser.add_argument("--vision-depth", type=int, default=8, help="vision encoder layers (the real models have 32)")
    parser.add_argument("--full", action="store_true", help="every layer (2B: needs ~5 GB RAM to build)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random checkpoint")


@dataclass(frozen=True)
class Job:
    """Everything a measuring process needs; identical for every engine, which is the point."""

    folder: str
    text_model: str
    mmproj: str
    image: str
    prompt: str
    system: str
    image_min_tokens: int
    image_max_tokens: int
    tokens: int
    threads: int
    context: int
    batch: int
    workdir: str  # logs and the worker processes' results
    onnx_vision: bool = False  # ours: the ONNX Runtime vision encoder instead of libmtmd's


# ---- the model and the image -----------------------------------------------------------------------------------

def checkpoint_size(args: argparse.Namespace) -> Qwen2VLSize | Qwen25VLSize:
    """The widths of the released model of `--family`, shortened to `--layers` / `--vision-depth` unless --full."""
    from edgevl.testing.qwen2vl import QWEN2VL_2B
    from edgevl.testing.qwen25vl import QWEN25VL_3B

    size: Qwen2VLSize | Qwen25VLSize = QWEN25VL_3B if args.family == "qwen25vl" else QWEN2VL_2B
    return size if args.full else size.shortened(args.layers, args.vision_depth)


def checkpoint_folder(args: argparse.Namespace) -> Path:
    size = checkpoint_size(args)
    return (args.out / f"{BENCH_MODELS[args.family]}-random-l{size.num_hidden_layers}-v{size.vision_depth}"
                       f"-seed{args.seed}")


def ensure_checkpoint(args: argparse.Namespace) -> Path:
    """The benchmark's random checkpoint, built once and reused by later runs (and the other benchmarks)."""
    checkpoint = checkpoint_folder(args)
    if not checkpoint.is_dir():
        say(f"building a random checkpoint in {checkpoint} (once) ...")
        build_checkpoint(checkpoint, checkpoint_size(args), args.seed)
    return checkpoint


def model_folder(args: argparse.Namespace) -> Path:
    checkpoint = checkpoint_folder(args)
    return checkpoint.with_name(f"{checkpoint.name}-{args.quant}")


def prepare_model(args: argparse.Namespace) -> None:
    """Make the converted model folder; the random checkpoint and its conversion are made once and reused."""
    checkpoint = ensure_checkpoint(args)
    folder = model_folder(args)
    if not folder.is_dir():
        from edgevl.converters import convert

        say(f"converting to {args.quant} + f16 mmproj in {folder} (once) ...")
        convert(checkpoint, folder, quant=args.quant, vision_quant="f16", threads=args.threads)


def build_checkpoint(checkpoint: Path, size, seed: int) -> None:
    """Build beside the final name and rename, so an interrupted build is never mistaken for a finished one.
    `size` is a Qwen2VLSize or a Qwen25VLSize: the family follows from it."""
    from edgevl.testing.qwen2vl import build_qwen2vl_checkpoint
    from edgevl.testing.qwen25vl import Qwen25VLSize, build_qwen25vl_checkpoint

    build = build_qwen25vl_checkpoint if isinstance(size, Qwen25VLSize) else build_qwen2vl_checkpoint
    partial = checkpoint.with_name(checkpoint.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    # bf16, as Qwen ships it; drawn a shard at a time (~2 GB shards at 7B), never the whole model in memory
    build(partial, size, dtype="bfloat16", seed=seed, shards=8, streamed=True)
    partial.rename(checkpoint)


def screenshot(image_tokens: int) -> Image.Image:
    """A deterministic screenshot-like page (title bar, text, a ruled table) whose size is exactly a Qwen2-VL grid
    of about `image_tokens` cells at 16:10, so that no engine resizes it and every engine sees the same pixels."""
    columns = max(1, round(math.sqrt(image_tokens * 1.6)))
    rows = max(1, image_tokens // columns)
    return page(columns * CELL, rows * CELL)


def page(width: int, height: int) -> Image.Image:
    """The screenshot-like page at any size; the same size always draws the same pixels."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=15)
    draw.rectangle([0, 0, width, 30], fill=(40, 60, 90))
    draw.text((12, 7), "Invoices - Quarterly report - edgevl benchmark", fill="white", font=font)
    words = "total invoice customer amount due paid net tax order shipped pending widget service account".split()
    rng = random.Random(0)
    y = 44
    while y < height * 0.45:
        draw.text((16, y), " ".join(rng.choice(words) for _ in range(rng.randint(6, 14))).capitalize() + ".",
                  fill="black", font=font)
        y += 22
    row_height, column_width = 26, max(60, (width - 32) // 5)
    for row in range(int((height - y - 16) // row_height)):
        top = y + row * row_height
        if row == 0:
            draw.rectangle([16, top, width - 16, top + row_height], fill=(225, 225, 225))
        cells = (["Number", "Customer", "Date", "Quantity", "Amount"] if row == 0 else
                 [f"INV-{2024 + row % 3}-{row:04d}", rng.choice(words).title() + " Ltd", f"2024-{row % 12 + 1:02d}-"
                  f"{row % 28 + 1:02d}", str(rng.randint(1, 99)), f"{rng.uniform(10, 9999):,.2f}"])
        for column, text in enumerate(cells):
            draw.text((22 + column * column_width, top + 5), text, fill="black", font=font)
        draw.line([(16, top + row_height), (width - 16, top + row_height)], fill="black")
    return image


@dataclass
class Run:
    """One request in one process. Prefill excludes image encoding; decode runs from the first sample to the last
    token. Request and load times are None where they cannot be told apart (the CLI)."""

    image_encode_ms: float
    prompt_tokens: int
    prefill_ms: float
    generated_tokens: int
    decode_ms: float
    request_ms: float | None
    load_ms: float | None
    text: str


# ---- our engine --------------------------------------------------------------------------------------------------

def measure_ours(job: Job) -> Run:
    """LlamaCppEngine as an application uses it: stream() the text; the engine's own stats split the time."""
    from edgevl.request import Request, Sampling
    from edgevl.engines.llamacpp import LlamaCppEngine

    image = load_image(job.image)
    started = time.perf_counter()
    engine = LlamaCppEngine(job.folder, threads=job.threads, context_size=job.context, batch_size=job.batch,
                            image_max_tokens=job.image_max_tokens, onnx_vision=job.onnx_vision)
    load_ms = ms_since(started)
    with engine:
        started = time.perf_counter()
        text = "".join(engine.stream(Request("ocr", (image,), job.prompt, sampling=Sampling(max_tokens=job.tokens))))
        request_ms = ms_since(started)
        stats = engine.last_stats
    return Run(stats.image_encode_ms, stats.prompt_tokens, stats.prefill_ms, stats.generated_tokens, stats.decode_ms,
               request_ms, load_ms, text)


def profile_ours(job: Job) -> str:
    """One request of ours under cProfile, beside the engine's own stats: what decode time is llama_decode's and
    what is Python's (sampling, detokenizing, stop strings), and where the rest of the request goes."""
    import cProfile
    import io
    import pstats

    from edgevl.engines.llamacpp import LlamaCppEngine
    from edgevl.request import Request, Sampling

    image = load_image(job.image)
    engine = LlamaCppEngine(job.folder, threads=job.threads, context_size=job.context, batch_size=job.batch,
                            image_max_tokens=job.image_max_tokens, onnx_vision=job.onnx_vision)
    with engine:
        profiler = cProfile.Profile()
        request = Request("ocr", (image,), job.prompt, sampling=Sampling(max_tokens=job.tokens))
        profiler.enable()
        "".join(engine.stream(request))
        profiler.disable()
        stats = engine.last_stats
    out = io.StringIO()
    profile = pstats.Stats(profiler, stream=out)
    # cumulative seconds of the engine's one-token llama_decode wrapper (pstats keys: file, line, function name)
    decode_s = sum(entry[3] for key, entry in profile.stats.items()  # type: ignore[attr-defined]
                   if key[2] == "_decode_one")
    tokens = max(1, stats.generated_tokens)
    lines = [
        f"engine: image encode {stats.image_encode_ms:,.0f} ms, prefill {stats.prefill_ms:,.0f} ms "
        f"({stats.prompt_tokens} tokens), decode {stats.decode_ms:,.0f} ms ({stats.generated_tokens} tokens, "
        f"{stats.decode_ms / tokens:.2f} ms/token)",
        f"decode: {1000 * decode_s / tokens:.2f} ms/token in llama_decode, "
        f"{(stats.decode_ms - 1000 * decode_s) / tokens:.2f} ms/token outside it (sampling, detokenizing, "
        "stop strings, Python)",
        "",
    ]
    profile.sort_stats("tottime").print_stats(20)
    return "\n".join(lines) + out.getvalue()


# ---- the direct path -----------------------------------------------------------------------------------------

class DirectPath:
    """The shortest straightforward use of llama-cpp-python's low-level bindings, as mtmd-cli.cpp does it in C++:
    the yardstick the engine is held to. Settings mirror LlamaCppEngine's, or the comparison would be unfair."""

    def __init__(self, job: Job) -> None:
        import llama_cpp as llama
        from llama_cpp import mtmd_cpp as mtmd

        self.llama, self.mtmd = llama, mtmd
        llama.llama_backend_init()
        gpu = llama.llama_supports_gpu_offload()
        model_params = llama.llama_model_default_params()
        model_params.n_gpu_layers = 999 if gpu else 0
        self.model = llama.llama_model_load_from_file(job.text_model.encode(), model_params)
        context_params = llama.llama_context_default_params()
        context_params.n_ctx = job.context
        context_params.n_batch = context_params.n_ubatch = job.batch
        context_params.n_threads = context_params.n_threads_batch = job.threads
        self.ctx = llama.llama_init_from_model(self.model, context_params)
        mtmd_params = mtmd.mtmd_context_params_default()
        mtmd_params.use_gpu = gpu
        mtmd_params.n_threads = job.threads
        mtmd_params.print_timings = False
        mtmd_params.warmup = False
        mtmd_params.image_min_tokens = job.image_min_tokens
        mtmd_params.image_max_tokens = 16384  # take the pre-resized image as it is
        self.mctx = mtmd.mtmd_init_from_file(job.mmproj.encode(), self.model, mtmd_params)
        if not (self.model and self.ctx and self.mctx):
            raise RuntimeError("llama.cpp could not load the model")
        self.vocab = llama.llama_model_get_vocab(self.model)
        self.marker = mtmd.mtmd_default_marker().decode()
        self.batch = llama.llama_batch_init(1, 0, 1)
        self.batch_size = job.batch

    def close(self) -> None:
        self.llama.llama_batch_free(self.batch)
        self.mtmd.mtmd_free(self.mctx)
        self.llama.llama_free(self.ctx)
        self.llama.llama_model_free(self.model)

    def run(self, image: Image.Image, prompt: str, max_tokens: int) -> Run:
        llama, mtmd = self.llama, self.mtmd
        llama.llama_memory_clear(llama.llama_get_memory(self.ctx), True)
        rgb = image.convert("RGB").tobytes()
        bitmap = mtmd.mtmd_bitmap_init(image.width, image.height, (ctypes.c_uint8 * len(rgb)).from_buffer_copy(rgb))
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            text = mtmd.mtmd_input_text(prompt.encode(), len(prompt.encode()), True, True)
            bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
            if mtmd.mtmd_tokenize(self.mctx, chunks, ctypes.byref(text), bitmaps, 1) != 0:
                raise RuntimeError("mtmd_tokenize failed")
            encode_ms, prefill_ms, n_past = self.prefill(chunks)
            prompt_tokens = mtmd.mtmd_helper_get_n_tokens(chunks)
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
            mtmd.mtmd_bitmap_free(bitmap)
        started = time.perf_counter()
        answer, generated = self.generate(n_past, max_tokens)
        return Run(encode_ms, prompt_tokens, prefill_ms, generated, ms_since(started), None, None, answer)

    def prefill(self, chunks) -> tuple[float, float, int]:
        """Encode images and decode the prompt chunk by chunk; returns (encode ms, prefill ms, next position)."""
        mtmd = self.mtmd
        n_past = self.llama.llama_pos(0)
        n_chunks = mtmd.mtmd_input_chunks_size(chunks)
        encode_ms = 0.0
        started = time.perf_counter()
        for index in range(n_chunks):
            chunk = mtmd.mtmd_input_chunks_get(chunks, index)
            if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                encode_started = time.perf_counter()
                status = mtmd.mtmd_encode_chunk(self.mctx, chunk)
                encode_ms += ms_since(encode_started)
                status = status or mtmd.mtmd_helper_decode_image_chunk(
                    self.mctx, self.ctx, chunk, mtmd.mtmd_get_output_embd(self.mctx), n_past, 0, self.batch_size,
                    ctypes.byref(n_past), mtmd.mtmd_helper_post_decode_callback(), None)
            else:
                status = mtmd.mtmd_helper_eval_chunk_single(self.mctx, self.ctx, chunk, n_past, 0, self.batch_size,
                                                            index == n_chunks - 1, ctypes.byref(n_past))
            if status != 0:
                raise RuntimeError(f"evaluating chunk {index} failed ({status})")
        return encode_ms, ms_since(started) - encode_ms, n_past.value

    def generate(self, n_past: int, max_tokens: int) -> tuple[str, int]:
        """Greedy: sample, stop at end-of-generation, keep the piece, decode the token. Returns (text, tokens)."""
        llama, batch = self.llama, self.batch
        sampler = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        llama.llama_sampler_chain_add(sampler, llama.llama_sampler_init_greedy())
        piece = ctypes.create_string_buffer(256)
        answer = bytearray()
        batch.n_tokens, batch.n_seq_id[0], batch.seq_id[0][0], batch.logits[0] = 1, 1, 0, True
        generated = 0
        for _ in range(max_tokens):
            token = llama.llama_sampler_sample(sampler, self.ctx, -1)
            if llama.llama_vocab_is_eog(self.vocab, token):
                break
            length = llama.llama_token_to_piece(self.vocab, token, piece, len(piece), 0, False)
            answer += piece.raw[:max(0, length)]
            generated += 1
            batch.token[0], batch.pos[0] = token, n_past
            if llama.llama_decode(self.ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
            n_past += 1
        llama.llama_sampler_free(sampler)
        return answer.decode("utf-8", errors="replace"), generated


def measure_direct(job: Job) -> Run:
    from edgevl.families.qwen2vl import resize_for_qwen2vl

    image = load_image(job.image)
    started = time.perf_counter()
    direct = DirectPath(job)
    load_ms = ms_since(started)
    prompt = (f"<|im_start|>system\n{job.system}<|im_end|>\n<|im_start|>user\n"
              f"{direct.marker}{job.prompt}<|im_end|>\n<|im_start|>assistant\n")
    try:
        started = time.perf_counter()
        resized = resize_for_qwen2vl(image, job.image_min_tokens, job.image_max_tokens)  # as the engine does
        run = direct.run(resized, prompt, job.tokens)
        run.request_ms, run.load_ms = ms_since(started), load_ms
    finally:
        direct.close()
    return run


# ---- llama-mtmd-cli ------------------------------------------------------------------------------------------

def cli_command(args: argparse.Namespace, job: Job) -> list[str] | None:
    """llama.cpp's own CLI on the job, with its defaults for everything the job does not set (built first if need
    be, before any clock starts); None where it cannot be had."""
    binary = cli_binary(args)
    if binary is None:
        return None
    return [str(binary), "-m", job.text_model, "--mmproj", job.mmproj, "--image", job.image, "-p", job.prompt,
               "-sys", job.system, "--chat-template", "chatml", "-n", str(job.tokens),
               "--samplers", "top_k", "--top-k", "1",  # greedy
               "-t", str(job.threads), "-tb", str(job.threads), "-c", str(job.context),
               "-b", str(job.batch), "-ub", str(job.batch), "--no-warmup", "--perf", "-lv", "4",
               "--image-min-tokens", str(job.image_min_tokens), "--image-max-tokens", str(job.image_max_tokens)]


def measure_cli(command: list[str], job: Job) -> dict:
    """One CLI process, timed from the timings it prints."""
    log = Path(job.workdir) / "cli.log"
    code, rss = run_measured(command, log)
    run = parse_cli_timings(log.read_text(errors="replace"))
    if code != 0 or run is None:
        sys.exit(f"llama-mtmd-cli failed (exit {code}): {shlex.join(command)}\n"
                 f"{log.read_text(errors='replace')[-3000:]}")
    return {**asdict(run), "peak_rss_mb": rss / 2**20}


def parse_cli_timings(output: str) -> Run | None:
    """From the CLI's log (`-lv 4` lets llama_perf's lines through): the mtmd batch encode time and llama_perf's
    prompt-eval and eval lines. llama_perf's prompt-eval clock starts at a decode call and stops only at the next
    synchronisation, so it also runs while the CLI encodes the image: the encode time is taken out of it.
    llama_perf counts compute only (no sampling) and never sees the last token's decode."""
    encode = re.search(r"batch encoding done in (\d+) ms", output)
    prompt = re.search(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens", output)
    decode = re.search(r"\seval time =\s*([\d.]+) ms /\s*(\d+) runs", output)
    if not (encode and prompt and decode):
        return None
    encode_ms = float(encode[1])
    # a CLI process also loads the model, so its wall time is no request time
    return Run(encode_ms, int(prompt[2]), float(prompt[1]) - encode_ms, int(decode[2]), float(decode[1]), None, None,
               "")


def cli_binary(args: argparse.Namespace) -> Path | None:
    """llama-mtmd-cli built from the llama.cpp inside the installed llama-cpp-python's sdist, cached outside the
    repo; None (with the reason said) when it cannot be had in time."""
    version = importlib.metadata.version("llama_cpp_python")
    build = CACHE / f"llama.cpp-{version}-build"
    binary = build / "bin" / "llama-mtmd-cli"
    if binary.is_file():
        return binary
    source = llama_cpp_source(args.llama_cpp_src, version)
    if source is None:
        return None
    if not build_cli(source, build, args.cli_build_timeout):
        return None
    return binary if binary.is_file() else None


def llama_cpp_source(given: Path | None, version: str) -> Path | None:
    """The llama.cpp tree vendored in the sdist: the one given, or the sdist fetched once with pip."""
    root = given or CACHE / f"llama_cpp_python-{version}"
    if given is None and not root.is_dir():
        say(f"fetching the llama-cpp-python {version} sdist with pip into {CACHE} ...")
        CACHE.mkdir(parents=True, exist_ok=True)
        fetched = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
                                  ":all:", f"llama-cpp-python=={version}", "-d", str(CACHE)])
        archive = CACHE / f"llama_cpp_python-{version}.tar.gz"
        if fetched.returncode != 0 or not archive.is_file():
            say("skipping llama-mtmd-cli: pip could not fetch the sdist")
            return None
        with tarfile.open(archive) as tar:
            tar.extractall(CACHE, filter="data")
    source = root / "vendor" / "llama.cpp" if (root / "vendor" / "llama.cpp").is_dir() else root
    if not (source / "tools" / "mtmd" / "mtmd-cli.cpp").is_file():
        say(f"skipping llama-mtmd-cli: no llama.cpp source in {root}")
        return None
    return source


def build_cli(source: Path, build: Path, timeout_s: int) -> bool:
    """Configure and build only the llama-mtmd-cli target, in the background, for at most `timeout_s`. A build
    that runs out of time is stopped; make resumes where it stopped on the next run."""
    log = build.with_name(build.name + ".log")
    if shutil.which("cmake") is None:
        say("skipping llama-mtmd-cli: cmake is not installed")
        return False
    # LLAMA_OPENSSL replaces LLAMA_CURL (deprecated and ignored at this llama.cpp): no network code in the CLI
    configure = ["cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_OPENSSL=OFF",
                 "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF",
                 *shlex.split(os.environ.get("CMAKE_ARGS", ""))]
    make = ["cmake", "--build", str(build), "--target", "llama-mtmd-cli", "-j", "2"]
    script = f"{shlex.join(configure)} && {shlex.join(make)}"
    say(f"building llama-mtmd-cli (several minutes; log: {log}) ...")
    build.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        process = subprocess.Popen(["sh", "-c", script], stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while process.poll() is None:
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()
            say(f"skipping llama-mtmd-cli: not built within {timeout_s} s (stopped; the next --with-cli run resumes)")
            return False
        time.sleep(5)
    if process.returncode != 0:
        say(f"skipping llama-mtmd-cli: the build failed (exit {process.returncode}); see {log}")
        return False
    return True


# ---- running and reporting -----------------------------------------------------------------------------------

def prepare_in_subprocess(script: str, ready: bool) -> None:
    """Build and convert the benchmark's model (`--worker prepare`) unless it is `ready`, in a process of its own
    so that this one stays small (see run_measured)."""
    if not ready:
        subprocess.run([sys.executable, script, *sys.argv[1:], "--worker", "prepare"], check=True)


def run_measured(command: list[str], log: Path) -> tuple[int, int]:
    """Run a command with its output in `log`; returns (exit code, its own peak RSS in bytes).

    The parent must stay small: Linux starts a child's peak RSS at its parent's."""
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)  # Linux reports KiB, macOS bytes
    return process.returncode, rss


def measure_interleaved(job, repeats: int, engines=("ours", "direct"), measure=None) -> dict[str, list[dict]]:
    """`repeats` runs of `measure(engine, job)` per engine, the order reversed every other round (ours, direct, cli,
    cli, direct, ours, ...): a drift in machine load then weighs on every engine alike."""
    measure = measure or measure_in_subprocess
    engines = tuple(engines)
    runs: dict[str, list[dict]] = {engine: [] for engine in engines}
    for index in range(repeats):
        for engine in engines if index % 2 == 0 else engines[::-1]:
            say(f"measuring {engine} ({len(runs[engine]) + 1}/{repeats}) ...")
            runs[engine].append(measure(engine, job))
    return runs


def measure_in_subprocess(engine: str, job, script: str = __file__, prefix: str = "") -> dict:
    """One request in a fresh process, `script --worker ENGINE --job FILE`, which writes its run to
    workdir/{prefix}{engine}.json; adds the process's peak RSS."""
    job_file = Path(job.workdir) / f"job-{prefix}{engine}.json"
    job_file.write_text(json.dumps(asdict(job)))
    log = Path(job.workdir) / f"{prefix}{engine}.log"
    code, rss = run_measured([sys.executable, script, "--worker", engine, "--job", str(job_file)], log)
    if code != 0:
        sys.exit(f"the {engine} measurement failed (exit {code}):\n{log.read_text(errors='replace')[-3000:]}")
    run = json.loads((Path(job.workdir) / f"{prefix}{engine}.json").read_text())
    return {**run, "peak_rss_mb": rss / 2**20}


def profile_in_subprocess(job: Job) -> Path:
    """One profiled request of ours in a fresh process (`--worker profile`), after the measured ones; returns the
    report's path."""
    say("profiling one request of ours ...")
    job_file = Path(job.workdir) / "job-profile.json"
    job_file.write_text(json.dumps(asdict(job)))
    log = Path(job.workdir) / "profile.log"
    code, _ = run_measured([sys.executable, __file__, "--worker", "profile", "--job", str(job_file)], log)
    if code != 0:
        sys.exit(f"the profiled run failed (exit {code}):\n{log.read_text(errors='replace')[-3000:]}")
    return Path(job.workdir) / "profile-ours.txt"


def worker(args: argparse.Namespace) -> None:
    if args.worker == "prepare":
        prepare_model(args)
        return
    job = Job(**json.loads(args.job.read_text()))
    import llama_cpp.mtmd_cpp  # noqa: F401 - imported before any clock starts: the same import for both engines

    if args.worker == "profile":
        (Path(job.workdir) / "profile-ours.txt").write_text(profile_ours(job))
        return
    run = measure_ours(job) if args.worker == "ours" else measure_direct(job)
    (Path(job.workdir) / f"{args.worker}.json").write_text(json.dumps(asdict(run)))


#: (key, label, higher is better)
METRICS = (
    ("image_encode_ms", "image encode (ms)", False),
    ("prefill_tps", "prefill (tok/s)", True),
    ("decode_tps", "decode (tok/s)", True),
    ("request_ms", "whole request (ms)", False),
    ("load_ms", "model load (ms)", False),
    ("peak_rss_mb", "peak RSS (MB)", False),
)


def metrics(run: dict) -> dict[str, float | None]:
    return {
        "image_encode_ms": run["image_encode_ms"],
        "prefill_tps": 1000 * run["prompt_tokens"] / run["prefill_ms"],
        "decode_tps": 1000 * run["generated_tokens"] / run["decode_ms"],
        "request_ms": run["request_ms"],
        "load_ms": run["load_ms"],
        "peak_rss_mb": run["peak_rss_mb"],
    }


def summarize(runs: list[dict], metrics_of=None, metrics_shown=METRICS) -> dict:
    """Median of each metric over the runs, and its spread (max - min) / median: the noise to read ratios against."""
    metrics_of = metrics_of or metrics
    summary: dict = {"spread": {}}
    for key, _, _ in metrics_shown:
        values = [value for value in (metrics_of(run)[key] for run in runs) if value is not None]
        summary[key] = statistics.median(values) if values else None
        summary["spread"][key] = (max(values) - min(values)) / summary[key] if values else None
    return summary


def ratio(ours: float | None, other: float | None, higher_is_better: bool) -> float | None:
    """> 1 means ours is better (faster or smaller), whichever way the metric points."""
    if not ours or not other:
        return None
    return ours / other if higher_is_better else other / ours


def table(summaries: dict[str, dict], reference: str = "direct", metrics_shown=METRICS, subject: str = "ours") -> str:
    """Median of each metric for the subject (ours) and the reference (and the CLI when measured), with ratios
    and noise."""
    has_cli = "cli" in summaries
    header = ["metric", subject, reference, f"{subject} vs {reference}", "noise"]
    header += ["cli", f"{subject} vs cli"] if has_cli else []
    rows = [header]
    ours, direct = summaries[subject], summaries[reference]
    for key, label, higher in metrics_shown:
        noise = max(ours["spread"][key], direct["spread"][key])
        row = [label, number(ours[key]), number(direct[key]), times(ratio(ours[key], direct[key], higher)),
               f"{100 * noise:.0f}%"]
        if has_cli:
            cli = summaries["cli"].get(key)
            row += [number(cli), times(ratio(ours[key], cli, higher))]
        rows.append(row)
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) if column == 0 else cell.rjust(width)
                       for column, (cell, width) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def short_answers(runs: list[dict], tokens: int) -> list[str]:
    """A warning when a run generated fewer than `tokens`: its decode figures then cover less work."""
    if any(run["generated_tokens"] < tokens for run in runs):
        return [f"WARNING: fewer than {tokens} tokens (the random model ended its answer): try another --seed"]
    return []


def same_text(runs: list[dict]) -> bool:
    return len({run["text"] for run in runs}) == 1


def consistency(results: dict[str, list[dict]], tokens: int) -> list[str]:
    """Ours and direct must have done the same work: same prompt, all the tokens, the same greedy text each time."""
    ours, direct = results["ours"], results["direct"]
    notes = [f"prompt tokens: ours {ours[0]['prompt_tokens']}, direct {direct[0]['prompt_tokens']}"
             + (f", cli {results['cli'][0]['prompt_tokens']} (llama_perf's count, its own chat template code)"
                if "cli" in results else "")]
    notes.append(f"generated tokens: ours {ours[0]['generated_tokens']}, direct {direct[0]['generated_tokens']}")
    notes += short_answers(ours + direct, tokens)
    if not same_text(ours + direct):
        notes.append("WARNING: ours and direct did not generate the same text")
    return notes


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    from edgevl import model_cards
    from edgevl.manifest import read_manifest

    say(f"load average at start: {load_average()}")
    args.out.mkdir(parents=True, exist_ok=True)
    folder = model_folder(args)
    prepare_in_subprocess(__file__, ready=folder.is_dir())
    manifest = read_manifest(folder)
    image_path = args.out / f"screenshot-{args.image_tokens}.png"
    screenshot(args.image_tokens).save(image_path)
    family = model_cards.family_card(args.family).settings
    job = Job(
        folder=str(folder), text_model=str(manifest.path(folder, "text")), mmproj=str(manifest.path(folder, "mmproj")),
        image=str(image_path), prompt=PROMPT, system=family["system_prompt"],
        image_min_tokens=min(int(family["image_min_tokens"]), args.image_tokens), image_max_tokens=args.image_tokens,
        tokens=args.tokens, threads=args.threads, context=args.context, batch=args.batch,
        workdir=str(args.out / "runs"), onnx_vision=args.onnx_vision,
    )
    Path(job.workdir).mkdir(exist_ok=True)
    cli = cli_command(args, job) if args.with_cli else None
    engines = ("ours", "direct", "cli") if cli else ("ours", "direct")
    if cli:
        say(f"llama-mtmd-cli command: {shlex.join(cli)}")
    load_before = load_average()  # again: building the CLI may have taken minutes

    def measure(engine: str, job: Job) -> dict:
        return measure_cli(cli, job) if cli and engine == "cli" else measure_in_subprocess(engine, job)

    results = measure_interleaved(job, args.repeats, engines, measure)
    load_after = load_average()
    summaries = {name: summarize(runs) for name, runs in results.items()}
    profile = profile_in_subprocess(job) if args.profile else None
    report(args, job, folder, results, summaries, (load_before, load_after), profile)


#: a ratio is trusted only where every engine's spread of a speed metric stays under this
NOISE_LIMIT = 0.10


def quiet_machine_warnings(load: tuple[str, str], threads: int) -> list[str]:
    """Warnings when the machine was not quiet: others' load at the start, or a change of it during the run. The
    1-minute load average after the run also counts our own `threads` busy threads, which are taken out."""
    start, after = float(load[0].split()[0]), float(load[1].split()[0])
    others_after = max(0.0, after - threads)
    warnings = []
    if start > 0.5:
        warnings.append(f"WARNING: the machine was busy at the start (1-minute load {start:.2f}): absolute numbers are "
                        "slower than a quiet machine gives; the interleaved ratios are what to read")
    if abs(others_after - start) > 0.5:
        warnings.append(f"WARNING: the load moved during the run ({start:.2f} at the start, about {others_after:.2f} "
                        "from others at the end): compare only the ratios, and rerun if they matter")
    return warnings


def noise_warnings(summaries: dict[str, dict]) -> list[str]:
    noisy = sorted({label for summary in summaries.values() for key, label, _ in METRICS[:3]
                    if (summary["spread"].get(key) or 0) > NOISE_LIMIT})
    return [f"WARNING: noise above {100 * NOISE_LIMIT:.0f}% in {', '.join(noisy)}: rerun on a quieter machine or with "
            "more --repeats before reading those ratios"] if noisy else []


def report(args, job: Job, folder: Path, results: dict, summaries: dict, load: tuple[str, str],
           profile: Path | None = None) -> None:
    with Image.open(job.image) as image:
        width, height = image.size
    print()
    print(f"edgevl llama.cpp benchmark: {folder.name} (+ f16 mmproj), image {width}x{height} "
          f"({args.image_tokens} tokens budget), {args.tokens} tokens greedy, {args.threads} thread(s), "
          f"median of {args.repeats}")
    print(f"llama-cpp-python {importlib.metadata.version('llama_cpp_python')}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs; load average (1/5/15 min) at start {load[0]}, at end {load[1]}")
    print()
    print(table(summaries))
    print()
    print("ratios: > 1 means ours is better (ours/direct for speeds, direct/ours for times and memory); "
          "target >= 0.95. noise: (max - min) / median over the runs.")
    warnings = quiet_machine_warnings(load, args.threads) + noise_warnings(summaries)
    for note in consistency(results, args.tokens) + warnings:
        print(note)
    if profile is not None:
        print(f"\nprofile of one request of ours ({profile}):")
        print("\n".join(profile.read_text().splitlines()[:40]))
    output = args.out / results_name("llamacpp", args.family)
    output.write_text(json.dumps({
        "settings": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "job": asdict(job), "load_average": {"start": load[0], "end": load[1]}, "warnings": warnings,
        "summary": summaries, "results": results,
    }, indent=2))
    print(f"results: {output}")


def results_name(benchmark: str, family: str) -> str:
    """The results file of a benchmark (Qwen2-VL's keep their first names)."""
    return f"{benchmark}.json" if family == "qwen2vl" else f"{benchmark}-{family}.json"


def load_image(path: str) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def ms_since(started: float) -> float:
    return 1000 * (time.perf_counter() - started)


def say(message: str) -> None:
    print(message, flush=True)


if __name__ == "__main__":
    main()
