#!/usr/bin/env python3
"""Qwen2-VL's vision encoder alone: edgevl's ONNX Runtime encoder against libmtmd's clip, in one process.

The GGUF engine's optional CPU encoder (edgevl.engines.qwen2vl_vision, `onnx_vision=True`) and libmtmd's own (what
llama-mtmd-cli runs: its defaults, flash attention "auto", the f16 mmproj) encode the same screenshot, alternating,
in the same process - so a change of machine load weighs on both - and their output embeddings are compared.
Variants of libmtmd's settings (`--variants`: flash attention off, the mmproj widened to f32 or narrowed to bf16)
are measured the same way. `--sweep` repeats the comparison over image-token budgets (encode time against image
tokens, the README's curve). The model is bench_llamacpp.py's random Qwen2-VL with the real widths
(`--vision-depth` layers, default 3: the time per layer is what counts; `--full` for all 32). Usage:
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_llamacpp import REPO, load_average, model_folder, say, screenshot  # noqa: E402

VARIANTS = {  # name -> (flash attention type, mmproj precision); -1 auto, 0 off, 1 on
    "mtmd": (-1, "f16"),
    "mtmd-fa-off": (0, "f16"),
    "mtmd-f32": (-1, "f32"),
    "mtmd-bf16": (-1, "bf16"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench-out", help="cache for checkpoint, GGUF, results")
    parser.add_argument("--layers", type=int, default=1, help="language model layers (not timed here)")
    parser.add_argument("--vision-depth", type=int, default=3, help="vision encoder layers (the real model has 32)")
    parser.add_argument("--full", action="store_true", help="all 28 / 32 layers (needs ~14 GB RAM to build)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quant", default="q4_k_m", help="language model quant of the cached folder")
    parser.add_argument("--image-tokens", type=int, default=1000, help="image size, in image tokens")
    parser.add_argument("--sweep", help="comma-separated image-token budgets, e.g. 256,576,1024,2304,4096")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="encodes per encoder (after one untimed)")
    parser.add_argument("--variants", default="", help=f"extra libmtmd settings: {','.join(list(VARIANTS)[1:])}")
    parser.add_argument("--plot", action="store_true", help="with --sweep: also draw OUT/vision-sweep.png")
    return parser.parse_args(argv)


class MtmdEncoder:
    """libmtmd's clip encoder on one image, with the given flash-attention setting and mmproj file."""

    def __init__(self, model, mmproj: Path, threads: int, flash_attn: int) -> None:
        from llama_cpp import mtmd_cpp as mtmd

        self.mtmd = mtmd
        params = mtmd.mtmd_context_params_default()
        params.use_gpu, params.n_threads, params.print_timings, params.warmup = False, threads, False, False
        params.flash_attn_type, params.image_min_tokens, params.image_max_tokens = flash_attn, 1, 16384
        self.ctx = mtmd.mtmd_init_from_file(str(mmproj).encode(), model, params)
        if not self.ctx:
            raise RuntimeError(f"libmtmd could not load {mmproj}")
        self.chunks = None

    def prepare(self, image) -> None:
        mtmd = self.mtmd
        rgb = image.convert("RGB").tobytes()
        bitmap = mtmd.mtmd_bitmap_init(image.width, image.height, (ctypes.c_uint8 * len(rgb)).from_buffer_copy(rgb))
        if self.chunks is not None:
            mtmd.mtmd_input_chunks_free(self.chunks)
        self.chunks = mtmd.mtmd_input_chunks_init()
        prompt = mtmd.mtmd_default_marker()
        text = mtmd.mtmd_input_text(prompt, len(prompt), True, True)
        if mtmd.mtmd_tokenize(self.ctx, self.chunks, ctypes.byref(text), (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap), 1):
            raise RuntimeError("mtmd_tokenize failed")
        mtmd.mtmd_bitmap_free(bitmap)
        self.chunk = next(chunk for chunk in (mtmd.mtmd_input_chunks_get(self.chunks, index)
                                              for index in range(mtmd.mtmd_input_chunks_size(self.chunks)))
                          if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE)
        self.tokens = mtmd.mtmd_input_chunk_get_n_tokens(self.chunk)

    def encode(self, width: int) -> np.ndarray:
        if self.mtmd.mtmd_encode_chunk(self.ctx, self.chunk) != 0:
            raise RuntimeError("mtmd_encode_chunk failed")
        return np.ctypeslib.as_array(self.mtmd.mtmd_get_output_embd(self.ctx), shape=(self.tokens, width)).copy()


def retyped_mmproj(mmproj: Path, precision: str) -> Path:
    """The mmproj with its f16 matrices widened to f32 or narrowed to bf16 (same values up to bf16 rounding)."""
    import gguf

    target = mmproj.with_name(f"{mmproj.stem}-{precision}.gguf")
    if target.is_file() or precision == "f16":
        return mmproj if precision == "f16" else target
    reader = gguf.GGUFReader(mmproj)
    writer = gguf.GGUFWriter(target, reader.fields["general.architecture"].contents())
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), field.types[0], sub_type=sub_type)
    for tensor in reader.tensors:
        data = np.array(tensor.data)
        if tensor.tensor_type != gguf.GGMLQuantizationType.F16:
            writer.add_tensor(tensor.name, data, raw_dtype=tensor.tensor_type)
        elif precision == "f32":
            writer.add_tensor(tensor.name, data.astype(np.float32))
        else:
            narrowed = gguf.quants.quantize(data.astype(np.float32), gguf.GGMLQuantizationType.BF16)
            writer.add_tensor(tensor.name, narrowed, raw_shape=narrowed.shape,
                              raw_dtype=gguf.GGMLQuantizationType.BF16)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def compare(encoders: dict, image, repeats: int, width: int) -> dict:
    """One untimed encode each (allocation, first-touch), then `repeats` rounds alternating the order."""
    outputs = {}
    seconds: dict[str, list[float]] = {name: [] for name in encoders}
    cpu_seconds: dict[str, list[float]] = {name: [] for name in encoders}  # unaffected by other processes' load
    for name, encode in encoders.items():
        outputs[name] = encode(image)
    names = list(encoders)
    for index in range(repeats):
        for name in names if index % 2 == 0 else names[::-1]:
            started, cpu_started = time.perf_counter(), time.process_time()
            encoders[name](image)
            seconds[name].append(time.perf_counter() - started)
            cpu_seconds[name].append(time.process_time() - cpu_started)
    reference = outputs["mtmd"]
    rows = {}
    for name in names:
        median = statistics.median(seconds[name])
        difference = outputs[name] - reference
        rows[name] = {
            "encode_s": median, "runs_s": seconds[name], "cpu_s": statistics.median(cpu_seconds[name]),
            "noise": (max(seconds[name]) - min(seconds[name])) / median,
            "speedup_vs_mtmd": statistics.median(seconds["mtmd"]) / median,
            "max_abs_diff_vs_mtmd": float(np.abs(difference).max()),
            "rel_l2_vs_mtmd": float(np.linalg.norm(difference) / np.linalg.norm(reference)),
        }
    return rows


def main() -> None:
    args = parse_args()
    import llama_cpp as llama

    from edgevl.engines.qwen2vl_vision import Qwen2VLVision
    from edgevl.llamacpp_lib import load_llama_cpp
    from edgevl.manifest import read_manifest

    load_llama_cpp("the benchmark")  # llama.cpp's log to Python logging, where only errors are shown
    logging.getLogger("edgevl.llama_cpp").setLevel(logging.ERROR)
    bench_args = argparse.Namespace(family="qwen2vl", out=args.out, layers=args.layers, vision_depth=args.vision_depth,
                                    full=args.full, seed=args.seed, quant=args.quant, threads=args.threads)
    folder = model_folder(bench_args)
    if not folder.is_dir():
        sys.exit(f"{folder} is missing: run bench_llamacpp.py --layers {args.layers} --vision-depth "
                 f"{args.vision_depth} once first (it builds and converts the model)")
    manifest = read_manifest(folder)
    mmproj = manifest.path(folder, "mmproj")
    load_before = load_average()
    say(f"load average at start: {load_before}")

    llama.llama_backend_init()
    model_params = llama.llama_model_default_params()
    model_params.n_gpu_layers = 0
    model = llama.llama_model_load_from_file(str(manifest.path(folder, "text")).encode(), model_params)
    width = llama.llama_model_n_embd(model)
    started = time.perf_counter()
    onnx = Qwen2VLVision(mmproj, args.threads)
    onnx_load_s = time.perf_counter() - started
    mtmd_encoders = {name: MtmdEncoder(model, retyped_mmproj(mmproj, precision), args.threads, flash_attn)
                     for name, (flash_attn, precision) in VARIANTS.items()
                     if name == "mtmd" or name in args.variants.split(",")}

    budgets = [int(value) for value in args.sweep.split(",")] if args.sweep else [args.image_tokens]
    results = []
    for budget in budgets:
        image = screenshot(budget)

        def mtmd_encode(name):
            return lambda _image: mtmd_encoders[name].encode(width)

        for encoder in mtmd_encoders.values():
            encoder.prepare(image)
        encoders = {name: mtmd_encode(name) for name in mtmd_encoders} | {"onnx": onnx.encode}
        rows = compare(encoders, image, args.repeats, width)
        tokens = mtmd_encoders["mtmd"].tokens
        results.append({"image": list(image.size), "image_tokens": tokens, "encoders": rows})
        say(f"\n{image.width}x{image.height}, {tokens} image tokens ({4 * tokens} patches), "
            f"{args.vision_depth if not args.full else 32} vision layers, {args.threads} threads, "
            f"median of {args.repeats}:")
        for name, row in rows.items():
            say(f"  {name:12s} {row['encode_s']:7.2f} s (CPU {row['cpu_s']:.2f} s)  noise {100 * row['noise']:3.0f}%  "
                f"vs mtmd {row['speedup_vs_mtmd']:.2f}x  max|d| {row['max_abs_diff_vs_mtmd']:.1e}  "
                f"rel L2 {row['rel_l2_vs_mtmd']:.1e}")
    load_after = load_average()
    say(f"\nload average at start {load_before}, at end {load_after}; ONNX Runtime encoder load {onnx_load_s:.1f} s")
    output = args.out / ("vision-sweep.json" if args.sweep else "vision.json")
    output.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()},
                                  "load_average": {"start": load_before, "end": load_after},
                                  "onnx_load_s": onnx_load_s, "results": results}, indent=2))
    say(f"results: {output}")
    if args.sweep and args.plot:
        plot(results, args.out / "vision-sweep.png", args.vision_depth if not args.full else 32)


def plot(results: list[dict], path: Path, depth: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens = [result["image_tokens"] for result in results]
    figure, axes = plt.subplots(figsize=(6, 4))
    for name in results[0]["encoders"]:
        axes.plot(tokens, [result["encoders"][name]["encode_s"] for result in results], marker="o", label=name)
    axes.set_xlabel("image tokens")
    axes.set_ylabel(f"encode time (s), {depth} vision layers")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    say(f"chart: {path}")


if __name__ == "__main__":
    main()
