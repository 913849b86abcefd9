#!/usr/bin/env python3
"""How fast can this CPU run Qwen2-VL's vision encoder at all? Its FLOP count against the machine's measured peak.

Issue 19 asks for an image encode 1.5x faster than llama-mtmd-cli's on the same GGUF, threads and image. The encoder
is matrix arithmetic, so its time is bounded below by FLOP / (the CPU's arithmetic peak). This script measures, in
one run and on 1 and 2 threads:
- the clock (a chain of dependent integer adds, one per cycle) and the fp32 FMA peak (independent AVX2 FMAs in
  registers, no memory), from a tiny C kernel compiled here with `cc`;
- a large fp32 matrix product at the encoder's own shapes through numpy (OpenBLAS) and ONNX Runtime (MLAS), and an
  int8 one through ONNX Runtime (MatMulInteger, the arithmetic of a quantized vision tower);
- the GFLOP/s the encoders reached: libmtmd (llama-mtmd-cli's defaults) and edgevl's ONNX Runtime encoder, from
  bench_vision.py's results (`--vision-json`) and from the full-size measurement of issue 19 (`--cli-seconds`),
and prints each against the peaks: the speedup over the CLI that faster fp32 code could give at most, and what
1.5x would need. Usage: benchmarks/README.md ("bench_cpu_peak.py"). Run it under /work/wt/quiet.sh.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_llamacpp import REPO, load_average, say  # noqa: E402

from edgevl.families.qwen2vl import vision_flops  # noqa: E402

#: 12 independent accumulators: more than an FMA's latency (4 cycles on Zen 3, 5 on Zen 2) times its 2 pipes, so
#: the FMA units never wait; 20 dependent adds per loop turn: the loop's own counter runs beside them.
KERNEL = r"""
#include <immintrin.h>
#define FMA12(m, c) a0 = _mm256_fmadd_ps(a0, m, c); a1 = _mm256_fmadd_ps(a1, m, c); a2 = _mm256_fmadd_ps(a2, m, c); \
    a3 = _mm256_fmadd_ps(a3, m, c); a4 = _mm256_fmadd_ps(a4, m, c); a5 = _mm256_fmadd_ps(a5, m, c); \
    a6 = _mm256_fmadd_ps(a6, m, c); a7 = _mm256_fmadd_ps(a7, m, c); a8 = _mm256_fmadd_ps(a8, m, c); \
    a9 = _mm256_fmadd_ps(a9, m, c); a10 = _mm256_fmadd_ps(a10, m, c); a11 = _mm256_fmadd_ps(a11, m, c);
float fma_loop(long turns) {  /* 12 x 8 lanes x 2 FLOP = 192 FLOP per turn */
    __m256 m = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(0.001f);
    /* distinct starting values, or the compiler merges the 12 chains into one */
    __m256 a0 = _mm256_set1_ps(turns + 0.0f), a1 = _mm256_set1_ps(turns + 1.0f), a2 = _mm256_set1_ps(turns + 2.0f),
           a3 = _mm256_set1_ps(turns + 3.0f), a4 = _mm256_set1_ps(turns + 4.0f), a5 = _mm256_set1_ps(turns + 5.0f),
           a6 = _mm256_set1_ps(turns + 6.0f), a7 = _mm256_set1_ps(turns + 7.0f), a8 = _mm256_set1_ps(turns + 8.0f),
           a9 = _mm256_set1_ps(turns + 9.0f), a10 = _mm256_set1_ps(turns + 10.0f), a11 = _mm256_set1_ps(turns + 11.0f);
    for (long i = 0; i < turns; i++) { FMA12(m, c) }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    float out[8]; _mm256_storeu_ps(out, s); return out[0];
}
long add_chain(long turns) {  /* 20 dependent adds per turn: 20 cycles */
    long x = 0;
    for (long i = 0; i < turns; i++)
        __asm__ volatile("add $1,%0\n add $1,%0\n add $1,%0\n add $1,%0\n add $1,%0\n"
                         "add $1,%0\n add $1,%0\n add $1,%0\n add $1,%0\n add $1,%0\n"
                         "add $1,%0\n add $1,%0\n add $1,%0\n add $1,%0\n add $1,%0\n"
                         "add $1,%0\n add $1,%0\n add $1,%0\n add $1,%0\n add $1,%0\n" : "+r"(x));
    return x;
}
"""
FLOP_PER_FMA_TURN, ADDS_PER_TURN = 192, 20
#: fp32 FLOP per cycle and core of an AVX2 CPU with two 256-bit FMA pipes (Zen 2/3/4, Haswell and later Intel
#: client cores): 2 pipes x 8 lanes x 2 (multiply + add)
AVX2_FLOP_PER_CYCLE = 32
#: the encoder's matrix products at 1024 image tokens: patches x width times width x MLP width (fc1)
GEMM_SHAPE = (4096, 1280, 5120)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2", help="thread counts to measure")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each product (best is kept)")
    parser.add_argument("--vision-json", type=Path, nargs="*", default=[],
                        help="bench_vision.py's results (OUT/vision.json): the encoders' measured seconds")
    parser.add_argument("--cli-seconds", type=float, default=63.0,
                        help="llama-mtmd-cli's full-size encode (32 layers) at --cli-image-tokens (issue 19)")
    parser.add_argument("--cli-image-tokens", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=REPO / "bench-out" / "cpu-peak.json")
    parser.add_argument("--worker", choices=("numpy",), help=argparse.SUPPRESS)
    return parser.parse_args()


def cpu_facts() -> dict:
    """Model, nominal clock and the instruction sets that decide the arithmetic peak, from /proc/cpuinfo."""
    info: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    flags = set(info.get("flags", "").split())
    wanted = ("avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile")
    return {"model": info.get("model name"), "family": info.get("cpu family"), "cpu_model": info.get("model"),
            "nominal_mhz": float(info.get("cpu MHz", 0)), "cpus": os.cpu_count(),
            "flags": {flag: flag in flags for flag in wanted}}


def compiled_kernel(folder: Path):
    source, library = folder / "peak.c", folder / "peak.so"
    source.write_text(KERNEL)
    subprocess.run(["cc", "-O2", "-mavx2", "-mfma", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    kernel = ctypes.CDLL(str(library))
    kernel.fma_loop.argtypes, kernel.fma_loop.restype = [ctypes.c_long], ctypes.c_float
    kernel.add_chain.argtypes, kernel.add_chain.restype = [ctypes.c_long], ctypes.c_long
    return kernel


def in_threads(function, turns: int, threads: int, repeats: int) -> tuple[float, float]:
    """`threads` simultaneous calls of function(turns) (ctypes lets go of the GIL meanwhile), `repeats` times: the
    best wall time, and the best CPU time of one call - which other processes' load does not stretch."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        cpu = [0.0] * threads

        def call(index: int, cpu: list[float] = cpu) -> None:
            started = time.thread_time()
            function(turns)
            cpu[index] = time.thread_time() - started

        workers = [threading.Thread(target=call, args=(index,)) for index in range(threads)]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        best_wall, best_cpu = min(best_wall, time.perf_counter() - started), min([best_cpu, *cpu])
    return best_wall, best_cpu


def best_seconds(run, repeats: int) -> tuple[float, float]:
    """Best wall and best process CPU time of `repeats` runs, after one untimed (first touch, packing, threads)."""
    run()
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        run()
        best_wall = min(best_wall, time.perf_counter() - started)
        best_cpu = min(best_cpu, time.process_time() - cpu_started)
    return best_wall, best_cpu


def gflops(seconds: tuple[float, float], threads: int, flop: float) -> dict[str, float]:
    """Per wall second, and per CPU second times the threads: what the threads reach when they have their cores."""
    wall, cpu = seconds
    return {"wall": flop / wall / 1e9, "busy": flop / cpu * threads / 1e9}


def gemm_flop() -> float:
    rows, inner, columns = GEMM_SHAPE
    return 2.0 * rows * inner * columns


def numpy_worker(repeats: int) -> None:
    """Runs in a process whose OPENBLAS_NUM_THREADS is set: OpenBLAS reads it once, at load."""
    rng = np.random.default_rng(0)
    rows, inner, columns = GEMM_SHAPE
    a = rng.standard_normal((rows, inner), dtype=np.float32)
    b = rng.standard_normal((inner, columns), dtype=np.float32)
    print(json.dumps(best_seconds(lambda: a @ b, repeats)))


def numpy_gflops(threads: int, repeats: int) -> dict[str, float]:
    environment = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    output = subprocess.run([sys.executable, __file__, "--worker", "numpy", "--repeats", str(repeats)],
                            env=environment, capture_output=True, text=True, check=True).stdout
    return gflops(json.loads(output.splitlines()[-1]), threads, gemm_flop())


def onnx_session(graph, threads: int):
    """A CPU session of one-node `graph` on `threads` threads that wait without spinning, so CPU time is work."""
    import onnxruntime as ort
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def onnxruntime_gflops(threads: int, repeats: int, integer: bool) -> dict[str, float]:
    """One MatMul (fp32) or MatMulInteger (uint8 activations x int8 weights, int32 sums) with the weight as an
    initializer, as in an exported graph."""
    from onnx import TensorProto, helper, numpy_helper

    rows, inner, columns = GEMM_SHAPE
    rng = np.random.default_rng(0)
    weight: np.ndarray
    activations: np.ndarray
    if integer:
        weight = rng.integers(-127, 128, (inner, columns), dtype=np.int8)
        activations = rng.integers(0, 256, (rows, inner), dtype=np.uint8)
        node = helper.make_node("MatMulInteger", ["x", "w"], ["y"])
        x_type, y_type = TensorProto.UINT8, TensorProto.INT32
    else:
        weight = rng.standard_normal((inner, columns), dtype=np.float32)
        activations = rng.standard_normal((rows, inner), dtype=np.float32)
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        x_type = y_type = TensorProto.FLOAT
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("x", x_type, [rows, inner])],
                              [helper.make_tensor_value_info("y", y_type, [rows, columns])],
                              [numpy_helper.from_array(weight, "w")])
    session = onnx_session(graph, threads)
    return gflops(best_seconds(lambda: session.run(None, {"x": activations}), repeats), threads, gemm_flop())


def onnxruntime_attention_gflops(threads: int, repeats: int) -> dict[str, float]:
    """ONNX Runtime's fused MultiHeadAttention (the ONNX encoder's) over one image's 4096 patches, 16 heads of 80:
    the attention part of the encoder alone."""
    from onnx import TensorProto, helper

    patches, width = GEMM_SHAPE[0], GEMM_SHAPE[1]
    node = helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["y"], domain="com.microsoft", num_heads=16)
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, patches, width]) for name in "qkv"]
    graph = helper.make_graph([node], "attention", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, patches, width])])
    session = onnx_session(graph, threads)
    rng = np.random.default_rng(0)
    feed = {name: rng.standard_normal((1, patches, width), dtype=np.float32) for name in "qkv"}
    return gflops(best_seconds(lambda: session.run(None, feed), repeats), threads, 4.0 * width * patches ** 2)


def encoder_rows(args: argparse.Namespace) -> list[dict]:
    """The encoders' measured seconds as GFLOP/s: issue 19's full-size CLI figure, and bench_vision.py's runs."""
    full = sum(vision_flops(args.cli_image_tokens).values())
    rows = [{"encoder": "llama-mtmd-cli defaults, 32 layers (issue 19, quiet machine)", "name": "mtmd", "threads": 2,
             "image_tokens": args.cli_image_tokens, "layers": 32, "seconds": args.cli_seconds, "cpu_seconds": None,
             "gflops": {"wall": full / args.cli_seconds / 1e9}}]
    labels = {"mtmd": "libmtmd, CLI defaults", "onnx": "edgevl ONNX Runtime fp32"}
    for path in args.vision_json:
        measured = json.loads(path.read_text())
        settings = measured["settings"]
        depth, threads = 32 if settings["full"] == "True" else int(settings["vision_depth"]), int(settings["threads"])
        for result in measured["results"]:
            # a few layers stand for 32: the patch embedding and the merger are there once, as in the real tower
            flop = sum(vision_flops(result["image_tokens"], layers=depth).values())
            for name, row in result["encoders"].items():
                rows.append({"encoder": f"{labels.get(name, name)}, {depth} layers ({path.name})", "name": name,
                             "threads": threads, "image_tokens": result["image_tokens"], "layers": depth,
                             "seconds": row["encode_s"],
                             "cpu_seconds": row.get("cpu_s"),
                             "gflops": gflops((row["encode_s"], row.get("cpu_s") or float("nan")), threads, flop)})
    return rows


def measure_peaks(thread_counts: list[int], repeats: int) -> dict[int, dict]:
    turns = 20_000_000  # about 0.2 s of adds: short runs, many of them, so some find the core free
    peaks = {}
    with tempfile.TemporaryDirectory() as folder:
        kernel = compiled_kernel(Path(folder))
        for threads in thread_counts:
            add_cpu = in_threads(kernel.add_chain, turns, threads, 4 * repeats)[1]
            fma_wall, fma_cpu = in_threads(kernel.fma_loop, turns, threads, 4 * repeats)
            clock_ghz = turns * ADDS_PER_TURN / add_cpu / 1e9
            peaks[threads] = {
                "clock_ghz": clock_ghz,
                "theoretical_gflops": AVX2_FLOP_PER_CYCLE * clock_ghz * threads,
                "fma_kernel": {"wall": threads * turns * FLOP_PER_FMA_TURN / fma_wall / 1e9,
                               "busy": threads * turns * FLOP_PER_FMA_TURN / fma_cpu / 1e9},
                "numpy_sgemm": numpy_gflops(threads, repeats),
                "onnxruntime_matmul": onnxruntime_gflops(threads, repeats, integer=False),
                "onnxruntime_int8": onnxruntime_gflops(threads, repeats, integer=True),
                "onnxruntime_attention": onnxruntime_attention_gflops(threads, repeats),
            }
    return peaks


def report_ceiling(encoders: list[dict], peaks: dict[int, dict]) -> dict:
    """llama-mtmd-cli's encoder against the fastest fp32 product on the same threads, per wall second (2 threads,
    issue 19's quiet-machine figure) and per CPU second (1 thread, immune to the load of other processes). The best
    product on several threads is also taken as the one-thread product times the threads (perfect scaling)."""
    ceilings = {}
    for threads, clock in ((2, "wall"), (1, "busy")):
        cli = next((row for row in encoders if row["name"] == "mtmd" and row["threads"] == threads
                    and row["gflops"].get(clock, float("nan")) == row["gflops"].get(clock)), None)
        if cli is None or threads not in peaks or 1 not in peaks:
            continue
        peak, achieved = peaks[threads], cli["gflops"][clock]
        best = max(peak["numpy_sgemm"]["busy"], peak["onnxruntime_matmul"]["busy"],
                   threads * max(peaks[1]["numpy_sgemm"]["busy"], peaks[1]["onnxruntime_matmul"]["busy"]))
        best_attention = max(peak["onnxruntime_attention"]["busy"], threads * peaks[1]["onnxruntime_attention"]["busy"])
        parts = vision_flops(cli["image_tokens"], layers=cli["layers"])
        attention = parts.pop("layers: attention")
        by_parts = sum(parts.values()) / best + attention / best_attention  # seconds x 1e9
        by_parts_ceiling = (sum(parts.values()) + attention) / by_parts / achieved
        ceilings[threads] = {"cli_gflops": achieved, "best_fp32_product_gflops": best,
                             "ceiling_best_product": best / achieved,
                             "ceiling_theoretical": peak["theoretical_gflops"] / achieved,
                             "needed_for_1_5x_of_theoretical": 1.5 * achieved / peak["theoretical_gflops"],
                             "ceiling_by_parts": by_parts_ceiling,
                             "int8_over_fp32": peak["onnxruntime_int8"]["busy"] / best}
        say(f"\n{threads} thread(s): llama-mtmd-cli's encoder at {achieved:.0f} GFLOP/s "
            f"({100 * achieved / peak['theoretical_gflops']:.0f} % of the theoretical peak; {cli['encoder']}).")
        say(f"  The same FLOPs all at the best fp32 matrix product ({best:.0f} GFLOP/s): {best / achieved:.2f}x "
            f"faster at most; all at the theoretical peak ({peak['theoretical_gflops']:.0f}): "
            f"{peak['theoretical_gflops'] / achieved:.2f}x.")
        say(f"  Its matrix products at the best fp32 product and its attention at the best attention measured "
            f"({best_attention:.0f} GFLOP/s): {by_parts_ceiling:.2f}x.")
        say(f"  1.5x needs {1.5 * achieved:.0f} GFLOP/s over the whole encoder, attention included: "
            f"{100 * 1.5 * achieved / best:.0f} % of the best product, "
            f"{100 * 1.5 * achieved / peak['theoretical_gflops']:.0f} % of the theoretical peak. "
            f"int8 products ran {peak['onnxruntime_int8']['busy'] / best:.2f}x the best fp32 one.")
    return ceilings


def main() -> None:
    args = parse_args()
    if args.worker == "numpy":
        numpy_worker(args.repeats)
        return
    load_before = load_average()
    facts = cpu_facts()
    say(f"load average at start: {load_before}")
    say(f"CPU: {facts['model']} (family {facts['family']}, model {facts['cpu_model']}), {facts['cpus']} CPUs, "
        f"nominal {facts['nominal_mhz']:.0f} MHz; " + ", ".join(f"{k} {'yes' if v else 'no'}"
                                                              for k, v in facts["flags"].items()))
    flop = vision_flops(1024)
    say("\nQwen2-VL-2B vision encoder at 1024 image tokens (4096 patches), GFLOP (multiply-add = 2 FLOP):")
    for part, value in flop.items():
        say(f"  {part:28s} {value / 1e9:8.1f}  ({100 * value / sum(flop.values()):4.1f} %)")
    say(f"  {'total':28s} {sum(flop.values()) / 1e9:8.1f}")

    peaks = measure_peaks([int(value) for value in args.threads.split(",")], args.repeats)
    rows, inner, columns = GEMM_SHAPE
    say(f"\nPeaks, GFLOP/s per wall second / per CPU second x threads (best of {args.repeats}, products "
        f"{rows}x{inner} @ {inner}x{columns}, the encoder's MLP shape):")
    say("| threads | clock (add chain) | theoretical fp32 (32 FLOP/cycle/core) | FMA kernel | numpy sgemm (OpenBLAS) "
        "| ONNX Runtime MatMul fp32 | ONNX Runtime MatMulInteger int8 (GOP/s) "
        "| ONNX Runtime MultiHeadAttention fp32 |")
    say("|---|---|---|---|---|---|---|---|")
    for threads, peak in peaks.items():
        cells = [f"{peak[key]['wall']:.0f} / {peak[key]['busy']:.0f}"
                 for key in ("fma_kernel", "numpy_sgemm", "onnxruntime_matmul", "onnxruntime_int8",
                             "onnxruntime_attention")]
        say(f"| {threads} | {peak['clock_ghz']:.2f} GHz | {peak['theoretical_gflops']:.0f} | {' | '.join(cells)} |")

    encoders = encoder_rows(args)
    say("\nEncoders (FLOP of edgevl.families.qwen2vl.vision_flops / measured seconds), GFLOP/s per wall second / "
        "per CPU second x threads:")
    say("| encoder | threads | image tokens | seconds | GFLOP/s | of the best fp32 product |")
    say("|---|---|---|---|---|---|")
    for row in encoders:
        measured = peaks.get(row["threads"])
        best = max(measured["numpy_sgemm"]["busy"], measured["onnxruntime_matmul"]["busy"]) if measured else None
        achieved = max(value for value in row["gflops"].values() if value == value)
        rates = " / ".join(f"{value:.0f}" for value in row["gflops"].values())
        say(f"| {row['encoder']} | {row['threads']} | {row['image_tokens']} | {row['seconds']:.1f} | {rates} | "
            + (f"{100 * achieved / best:.0f} % |" if best else "- |"))
    ceilings = report_ceiling(encoders, peaks)
    load_after = load_average()
    say(f"\nload average at start {load_before}, at end {load_after}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cpu": facts, "load_average": {"start": load_before, "end": load_after},
                                    "vision_flops_1024": flop, "peaks": peaks, "encoders": encoders,
                                    "ceilings": ceilings}, indent=2))
    say(f"results: {args.out}")


if __name__ == "__main__":
    main()
